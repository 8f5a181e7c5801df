"""What the metric runner (metric_main.py) and PPL (ppl.py) share: the options of one metric
computation, progress reports, batches split over a tf.distribute strategy's replicas, and labels
for generated images drawn like NVIDIA's (the label of a random dataset image).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from sg2ada.errors import UserError

__all__ = ["MetricOptions", "fake_labels", "report_progress", "run_replicated"]


@dataclasses.dataclass
class MetricOptions:
    G: object = None
    dataset: object = None  # a metric_main.DatasetSource
    G_kwargs: dict = dataclasses.field(default_factory=lambda: dict(truncation_psi=1, noise_mode="random"))
    feature_net: list | None = None  # user paths (files or folders) for the feature networks
    download: bool | None = None  # None: unless SG2ADA_OFFLINE=1
    strategy: object = None  # tf.distribute strategy: batches are split over its replicas
    cache: bool = True
    batch_size: int = 32  # images per feature-network call (over all replicas)
    mirror: bool = False  # training's --mirror, used by the legacy (non-_full) metrics only
    seed: int | None = 0
    verbose: bool = False
    progress: object = None  # callable(done, total, what)
    run_dir: str | None = None  # where metrics that draw a picture (copy) write it

    @property
    def num_replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1


def report_progress(opts: MetricOptions, done: int, total: int, what: str, state: dict) -> None:
    if opts.progress is not None:
        opts.progress(done, total, what)
    if opts.verbose and (done >= total or time.time() - state.setdefault("t", 0) > 10):
        state["t"] = time.time()
        print(f"{what:<20s} {done}/{total}", file=sys.stderr, flush=True)


def run_replicated(opts: MetricOptions, fn, *arrays):
    """fn(*arrays) with the batch split over the strategy's replicas (padded to equal shares)."""
    import tensorflow as tf

    r = opts.num_replicas
    if r == 1:
        return fn(*[tf.convert_to_tensor(a) for a in arrays])
    n = int(arrays[0].shape[0])
    per = -(-n // r)
    padded = []
    for a in arrays:
        a = np.asarray(a)
        if per * r > n:
            a = np.concatenate([a, np.repeat(a[-1:], per * r - n, axis=0)])
        padded.append(a)

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        return tuple(tf.constant(a[i * per : (i + 1) * per]) for a in padded)

    values = opts.strategy.experimental_distribute_values_from_function(value_fn)
    out = opts.strategy.run(lambda args: fn(*args), args=(values,))
    parts = opts.strategy.experimental_local_results(out)
    if isinstance(parts[0], (tuple, list)):
        return tuple(tf.concat([p[j] for p in parts], 0)[:n] for j in range(len(parts[0])))
    return tf.concat(list(parts), 0)[:n]


def fake_labels(opts: MetricOptions, seed):
    """A function n -> float32 [n, c_dim] labels for generated images, each the label of a random
    dataset image (NVIDIA's rule), drawn from their own stream seeded with `seed`."""
    c_dim = int(opts.G.c_dim)
    if c_dim == 0:
        return lambda n: np.zeros([n, 0], np.float32)
    if opts.dataset is None:
        raise UserError("a conditional generator needs --data to draw labels from")
    sampler = opts.dataset.label_sampler()
    if sampler is None or sampler.label_dim != c_dim:
        raise UserError(f"--data {opts.dataset.path}: its labels do not match the generator's c_dim {c_dim}")
    rng = np.random.default_rng(seed)
    return lambda n: sampler.sample_numpy(n, rng)
