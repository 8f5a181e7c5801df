"""sg2ada.ops.random: the stateless samplers agree eagerly, in tf.function and under XLA, and the
per-sample draws are rows of one global draw whatever the split; `fold_in_many` is TF's fold_in."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.ops.random import fold_in_many, per_sample_normal, per_sample_uniform, stateless_normal, stateless_uniform

SEED = tf.constant([-7, 2**30 + 5], tf.int32)  # a negative word: the key packing must be ours


def test_samplers_are_uniform_and_standard_normal():
    u = stateless_uniform([100000], SEED).numpy()
    z = stateless_normal([100000], SEED).numpy()
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.std() - np.sqrt(1 / 12)) < 0.005
    assert np.isfinite(z).all() and abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z > 1.96) - 0.025) < 0.003
    assert not np.array_equal(u, stateless_uniform([100000], SEED + [0, 1]).numpy())


@pytest.mark.parametrize("fn", [stateless_uniform, stateless_normal])
def test_samplers_are_identical_under_xla(fn):
    shape = tf.constant([3, 17, 5])
    x = fn(shape, SEED).numpy()
    np.testing.assert_array_equal(tf.function(fn)(shape, SEED), x)
    # XLA's transcendental functions may differ in the last ulp; the uniform bits are exact.
    tol = 0 if fn is stateless_uniform else 1e-5
    np.testing.assert_allclose(tf.function(fn, jit_compile=True)(shape, SEED), x, rtol=tol, atol=tol)


@pytest.mark.parametrize("per_sample,full", [(per_sample_uniform, stateless_uniform),
                                             (per_sample_normal, stateless_normal)])
@pytest.mark.parametrize("shape", [(), (3,), (2, 5), (5, 13)])  # rows of 65 are drawn by stream position,
# from mid Philox block (65 % 4 == 1); smaller ones are gathered
def test_per_sample_rows_of_the_global_draw_for_every_split(per_sample, full, shape):
    total = 12
    ref = full([total, *shape], SEED).numpy()
    # 1 x 12, 2 x 6, 3 x 4 (contiguous runs, drawn by stream position), then scattered indices (gathered).
    for parts in (1, 2, 3):
        got = np.concatenate([per_sample(SEED, tf.range(k * total // parts, (k + 1) * total // parts), total, shape)
                              for k in range(parts)])
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    idx = tf.constant([11, 0, 5, 6, 2])
    np.testing.assert_allclose(per_sample(SEED, idx, total, shape), ref[idx.numpy()], rtol=1e-6, atol=1e-6)
    assert per_sample(SEED, tf.zeros([0], tf.int32), total, shape).shape == (0, *shape)


def test_per_sample_is_identical_in_graph_and_xla():
    idx = tf.range(4, 8)

    def draw(i):  # a row drawn by stream position, a gathered one
        return per_sample_normal(SEED, i, 16, [96]), per_sample_uniform(SEED, i, 16, [2])

    eager = [t.numpy() for t in draw(idx)]
    for jit in (False, True):
        out = tf.function(draw, jit_compile=jit)(idx)
        assert out[0].shape == (4, 96)
        np.testing.assert_allclose(out[0], eager[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out[1], eager[1])


@pytest.mark.parametrize("jit", [False, True])
def test_fold_in_many_is_tfs_fold_in(jit):
    def both(seed):
        fold_in = fold_in_many(seed)
        return [(fold_in(k), tf.random.experimental.stateless_fold_in(seed, k, alg="philox")) for k in (0, 5, 38)]

    for seed in (SEED, tf.constant([0, 0], tf.int32), tf.constant([2**31 - 1, -(2**31)], tf.int32)):
        for ours, tfs in tf.function(both, jit_compile=jit)(seed):
            np.testing.assert_array_equal(ours, tfs)
