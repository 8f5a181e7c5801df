"""tf.distribute set-up for training, and the stateless random streams of each replica.

NVIDIA trains with one process per GPU under torch DistributedDataParallel (stylegan2-ada-pytorch
`train.py: subprocess_fn`, `training_loop.py`): every rank draws its own latents and augmentations
from a rank-specific seed, and gradients are averaged. Here the same is done with a
`tf.distribute.MirroredStrategy` (one process, all local devices) or a
`MultiWorkerMirroredStrategy` (several processes, described by `TF_CONFIG`), and randomness is
made reproducible and replica-independent by deriving stateless seeds from
(seed, iteration, purpose, global sample index) rather than from per-process generator state.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from sg2ada.errors import UserError


def tf_config_cluster() -> dict | None:
    """The cluster spec of `TF_CONFIG` when it names more than one task, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = cfg.get("cluster") or {}
    n = sum(len(v) for v in cluster.values())
    return cfg if n > 1 else None


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """`auto`: MultiWorkerMirrored when TF_CONFIG names a cluster, else Mirrored over the local
    GPUs (or the CPU when there is none); `default`: no distribution (the default strategy)."""
    if name == "auto":
        name = "multiworker" if tf_config_cluster() else "mirrored"
    if name == "multiworker":
        if tf_config_cluster() is None:
            raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # One replica on the first CPU: MirroredStrategy keeps one code path for 1 and N replicas.
        return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])
    if name == "default":
        return tf.distribute.get_strategy()
    raise UserError(f"unknown --strategy {name!r}; choose auto, mirrored, multiworker or default")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the process that writes files (worker 0 / the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                            and "chief" not in (resolver.cluster_spec().as_dict() or {}))


# Purposes of random draws; values are part of the seed derivation, so never renumber them.
PURPOSE_Z = 1
PURPOSE_MIX_Z = 2
PURPOSE_MIX_CUTOFF = 3
PURPOSE_GEN_C = 4
PURPOSE_PL_NOISE = 5
PURPOSE_SYNTH_NOISE = 6
PURPOSE_AUGMENT = 7


def base_seed(seed, iteration) -> tf.Tensor:
    """int32 [2] stateless seed for one training iteration (iterations stay far below 2**31)."""
    root = tf.stack([tf.constant(0x5EED, tf.int32), tf.cast(seed, tf.int32)])
    return tf.random.experimental.stateless_fold_in(root, tf.cast(iteration, tf.int32))


def derive(seed: tf.Tensor, *data) -> tf.Tensor:
    """Fold integers (Python or scalar tensors) into a stateless seed."""
    for d in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int32))
    return seed


def per_sample_normal(seed, sample_index, shape, dtype=tf.float32) -> tf.Tensor:
    """N(0,1) draws of `shape` for each global sample index: [len(sample_index), *shape].

    Each sample has its own stream, so a sample gets the same draw whichever replica or
    accumulation round it lands in (1 replica x 2 rounds == 2 replicas x 1 round).
    """
    n = sample_index.shape[0]
    return tf.stack([tf.random.stateless_normal(shape, derive(seed, sample_index[i]), dtype=dtype)
                     for i in range(n)])


def per_sample_uniform_int(seed, sample_index, maxval) -> tf.Tensor:
    n = sample_index.shape[0]
    return tf.stack([tf.random.stateless_uniform([], derive(seed, sample_index[i]), minval=0, maxval=maxval,
                                                 dtype=tf.int32) for i in range(n)])
