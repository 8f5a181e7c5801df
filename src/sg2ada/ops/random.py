"""Stateless random numbers that are identical in eager mode, in tf.function and under XLA, and
per-sample draws that do not depend on how a batch is split over replicas and accumulation rounds.

TensorFlow's stateless float samplers give different numbers under XLA than on CPU (the Philox bits
agree, the float conversion and the seed scrambling do not), so the same seed would augment or add
noise differently in an XLA-compiled training step than in eager code. Here the raw Philox-4x32-10
bits come from TF's stateless op with our own key packing, and the conversion to floats is ours.

The stream of a seed is addressable: element k of a draw is word k % 4 of the Philox block at counter
k // 4, for every shape. `per_sample_uniform` / `per_sample_normal` use that to give each sample of a
global batch its rows of one [num_samples, ...] draw, so a sample gets the same numbers on whichever
replica and in whichever round it is processed (the trainer's data-parallel invariant).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf


def _philox_key(seed) -> tf.Tensor:
    # The two int32 seed words are the 64-bit Philox key. TF's own seed-to-key op treats negative
    # seed words differently under XLA, so the bit packing is done here.
    words = tf.cast(tf.bitcast(tf.convert_to_tensor(seed, tf.int32), tf.uint32), tf.uint64)
    key = tf.bitwise.bitwise_or(tf.bitwise.left_shift(words[0], tf.constant(32, tf.uint64)), words[1])
    return tf.reshape(key, [1])


def _random_bits(shape, seed) -> tf.Tensor:
    """uint32 Philox bits of `shape`: the seed's stream from its first element."""
    counter = tf.zeros([2], tf.uint64)
    return tf.raw_ops.StatelessRandomUniformFullIntV2(shape=shape, key=_philox_key(seed), counter=counter, alg=1,
                                                       dtype=tf.uint32)


def _stream_bits(seed, first, count) -> tf.Tensor:
    """uint32 [count]: elements [first, first + count) of the seed's flat stream (first: int64)."""
    first = tf.cast(first, tf.int64)
    counter = tf.stack([tf.cast(first // 4, tf.uint64), tf.constant(0, tf.uint64)])
    skip = tf.cast(first % 4, tf.int32)
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=tf.reshape(count + 4, [1]), key=_philox_key(seed),
                                                      counter=counter, alg=1, dtype=tf.uint32)
    return bits[skip: skip + count]


def _bits_to_unit(bits, open_at_zero=False) -> tf.Tensor:
    # The top 24 bits give every float32 multiple of 2^-24 in [0, 1) (or (0, 1]) exactly.
    top = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32)
    return (top + (1.0 if open_at_zero else 0.0)) * (2.0**-24)


def _box_muller(bits1, bits2) -> tf.Tensor:
    return tf.sqrt(-2.0 * tf.math.log(_bits_to_unit(bits1, open_at_zero=True))) * tf.cos(
        (2 * math.pi) * _bits_to_unit(bits2))


def stateless_uniform(shape, seed) -> tf.Tensor:
    """Uniform [0, 1) float32 of `shape` from an int32 [2] seed, identical with and without XLA."""
    return _bits_to_unit(_random_bits(shape, seed))


def stateless_normal(shape, seed) -> tf.Tensor:
    """Standard normal float32 of `shape` from an int32 [2] seed (Box-Muller on the bits of a
    [2, *shape] draw), identical with and without XLA."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    bits = _random_bits(tf.concat([[2], shape], 0), seed)
    return _box_muller(bits[0], bits[1])


def fold_in_many(seed, alg: str = "philox"):
    """`data -> tf.random.experimental.stateless_fold_in(seed, data, alg=alg)` for many `data` of one
    seed. TF's fold_in is [a draw from the seed, data]; the draw (about 50 graph ops with philox)
    does not depend on `data`, so it is made once."""
    first = tf.random.stateless_uniform([], tf.convert_to_tensor(seed, tf.int32), minval=None, maxval=None,
                                        dtype=tf.int32, alg=alg)
    return lambda data: tf.stack([first, tf.cast(data, tf.int32)])


_RUN_MIN_ROW = 64  # numbers per sample from which a contiguous run is drawn by stream position


def _per_sample(seed, sample_index, num_samples, shape, rows_fn, full_fn) -> tf.Tensor:
    """Rows `sample_index` of `full_fn([num_samples, *shape])`. Small rows are gathered from the
    whole draw. Large rows (latents, noise images), when the indices are a contiguous run (what
    each replica of a training round holds), are drawn directly by stream position, O(n) numbers
    instead of O(num_samples); the choice is a tf.cond, whose cost under XLA exceeds small draws."""
    idx = tf.cast(tf.convert_to_tensor(sample_index), tf.int64)
    n = tf.size(idx)
    shape = [int(d) for d in shape]
    row = math.prod(shape)
    out_shape = tf.concat([[n], tf.constant(shape, tf.int32)], 0)

    def by_rows():
        start = tf.reduce_sum(idx[:1])  # 0 for an empty batch
        return tf.reshape(rows_fn(start * row, n * row), out_shape)

    def by_gather():
        return tf.gather(full_fn(tf.concat([[tf.cast(num_samples, tf.int32)], tf.constant(shape, tf.int32)], 0)),
                         idx)

    if row < _RUN_MIN_ROW:
        out = by_gather()
    else:
        out = tf.cond(tf.reduce_all(tf.equal(idx - idx[:1], tf.range(n, dtype=tf.int64))), by_rows, by_gather)
    out.set_shape(tf.TensorShape([idx.shape[0]] + shape))
    return out


def per_sample_uniform(seed, sample_index, num_samples, shape=()) -> tf.Tensor:
    """Uniform [0, 1) float32 [len(sample_index), *shape]: rows `sample_index` of
    `stateless_uniform([num_samples, *shape], seed)`, so sample k gets the same numbers however the
    batch of `num_samples` is split. sample_index: int [n] global positions; shape: static."""

    def rows(first, count):
        return _bits_to_unit(_stream_bits(seed, first, count))

    return _per_sample(seed, sample_index, num_samples, shape, rows, lambda s: stateless_uniform(s, seed))


def per_sample_normal(seed, sample_index, num_samples, shape=()) -> tf.Tensor:
    """Standard normal float32 [len(sample_index), *shape]: rows `sample_index` of
    `stateless_normal([num_samples, *shape], seed)` (see `per_sample_uniform`)."""
    row = math.prod(int(d) for d in shape)
    total = tf.cast(num_samples, tf.int64) * row  # offset of the second half of the [2, ...] draw

    def rows(first, count):
        return _box_muller(_stream_bits(seed, first, count), _stream_bits(seed, total + first, count))

    return _per_sample(seed, sample_index, num_samples, shape, rows, lambda s: stateless_normal(s, seed))


class SampleSeed(NamedTuple):
    """The seed of samples at global positions `index` of a batch of `count`: each sample draws its
    rows of one draw for the whole batch (`per_sample_normal`), so a network or pipe given a
    SampleSeed instead of a plain seed adds the same noise to a sample however the batch is split."""

    seed: tf.Tensor  # int32 [2]
    index: tf.Tensor  # int [n]
    count: tf.Tensor  # int32 scalar

    def fold_in(self, data) -> "SampleSeed":
        """The same samples with a seed for another purpose."""
        return self._replace(seed=tf.random.experimental.stateless_fold_in(
            tf.cast(self.seed, tf.int32), tf.cast(data, tf.int32), alg="philox"))
