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
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise UserError('TF_CONFIG must be {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                        '"index": i}}; unset it to train in one process')
    n = sum(len(v) for v in cluster.values())
    return cfg if n > 1 else None


def _local_devices() -> list[str]:
    """The devices this process trains on: its GPUs, else its CPU split into SG2ADA_CPU_DEVICES
    logical devices (default 1), which lets a CPU-only machine run the multi-replica code path."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    n = int(os.environ.get("SG2ADA_CPU_DEVICES", "1") or 1)
    cpus = tf.config.list_logical_devices("CPU")
    if n > 1 and len(cpus) < n:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * n)
            cpus = tf.config.list_logical_devices("CPU")
        except RuntimeError:  # TensorFlow's devices are fixed once initialised
            raise UserError("SG2ADA_CPU_DEVICES must be set before TensorFlow starts") from None
    return [d.name for d in cpus[:max(n, 1)]]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """`auto`: MultiWorkerMirrored when TF_CONFIG names a cluster, else Mirrored over the local
    devices; `default`: no distribution (TensorFlow's default strategy)."""
    if name == "auto":
        name = "multiworker" if tf_config_cluster() else "mirrored"
    if name == "multiworker":
        if tf_config_cluster() is None:
            raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        # Also for one device: MirroredStrategy keeps one code path for 1 and N replicas.
        return tf.distribute.MirroredStrategy(_local_devices())
    if name == "default":
        return tf.distribute.get_strategy()
    raise UserError(f"unknown --strategy {name!r}; choose auto, mirrored, multiworker or default")


def count_replicas(name: str = "auto") -> int:
    """The replica count `make_strategy(name)` would give, without joining a cluster (dry runs)."""
    cluster = tf_config_cluster() if name in ("auto", "multiworker") else None
    if name == "multiworker" and cluster is None:
        raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
    local = len(_local_devices())
    if cluster is not None:
        return local * _training_tasks(cluster["cluster"])
    return 1 if name == "default" else local


def num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return max(_training_tasks(resolver.cluster_spec().as_dict() if resolver is not None else {}), 1)


def _training_tasks(cluster: dict) -> int:
    """The processes of a cluster spec that train (chief and workers; not evaluators or ps)."""
    return sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))


def is_chief(strategy) -> bool:
    """True on the process that writes files: the `chief` task, else worker 0, else the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or num_workers(strategy) == 1:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def broadcast_from_chief(strategy, value: int) -> int:
    """The chief's `value` on every worker (a collective: every worker must call it)."""
    chief = is_chief(strategy)

    def fn():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(tf.logical_and(first, chief), tf.constant(value, tf.int64), tf.constant(0, tf.int64))

    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(fn), axis=None))


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
