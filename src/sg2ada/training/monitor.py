"""Training statistics: per-tick aggregation, `stats.jsonl`, TensorBoard scalars, images and HParams.

Statistics use NVIDIA's names and NVIDIA's `stats.jsonl` layout: one JSON object per tick mapping each
name to `{"num": n, "mean": m, "std": s}` over every value reported during the tick, plus a
`"timestamp"` (seconds since the epoch). TensorBoard gets the same names as scalars (the tick means).

TensorBoard step axis: the step of every summary is `cur_nimg`, the number of real images shown so far,
i.e. kimg * 1000 as an integer (NVIDIA uses whole kimg, which collapses ticks shorter than 1 kimg onto
one step; cur_nimg keeps them apart and still reads as kimg with a factor of 1000).

Only the chief writes (task 0 under multi-worker training); the other workers get a Monitor with
`chief=False`, whose writing methods do nothing, so the loop does not need to ask. All summaries
are written eagerly from Python, outside any compiled (XLA) function.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from sg2ada.training.run_dir import atomic_write_text

STATS_FILE = "stats.jsonl"


class StatsCollector:
    """Accumulates reported values per name over a tick: count, mean and standard deviation.

    A value may be a Python/NumPy/TensorFlow scalar or array; arrays count each element, as NVIDIA's
    collector counts per-sample reports. Non-finite values are kept: a NaN loss must show in the logs.
    """

    def __init__(self):
        self._acc: dict[str, list[float]] = {}  # name -> [num, sum, sum of squares]

    def report(self, name: str, value) -> None:
        if value is None:
            return
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            return
        acc = self._acc.setdefault(name, [0, 0.0, 0.0])
        acc[0] += arr.size
        acc[1] += float(arr.sum())
        acc[2] += float(np.square(arr).sum())

    def update(self, stats: dict) -> None:
        for name, value in stats.items():
            self.report(name, value)

    def as_dict(self) -> dict:
        out = {}
        for name, (num, s, s2) in sorted(self._acc.items()):
            mean = s / num
            var = max(s2 / num - mean * mean, 0.0) if math.isfinite(mean) else float("nan")
            out[name] = {"num": int(num), "mean": mean, "std": math.sqrt(var) if math.isfinite(var) else var}
        return out

    def mean(self, name: str, default=None):
        acc = self._acc.get(name)
        return default if acc is None else acc[1] / acc[0]

    def reset(self) -> None:
        self._acc = {}


def cpu_mem_gb() -> float:
    """Resident memory of this process in GiB (what NVIDIA's `cpumem` shows)."""
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        import resource  # peak rather than current, but the best portable answer

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_gpu_mem_gb(reset: bool = True) -> float | None:
    """Peak GPU memory since the last call, in GiB, over all GPUs; None without GPUs."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    peak = 0
    for dev in gpus:
        name = dev.name.split("device:")[-1]
        try:
            peak = max(peak, tf.config.experimental.get_memory_info(name)["peak"])
            if reset:
                tf.config.experimental.reset_memory_stats(name)
        except (ValueError, RuntimeError):
            return None
    return peak / 2**30


# ---------------------------------------------------------------------------------------------
# Image grids


def grid_shape(resolution: int) -> tuple[int, int]:
    """(columns, rows) of the snapshot grid: NVIDIA fills about a 7680x4320 canvas, 7-32 by 4-32 cells."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    return gw, gh


def interpolation_strip(G, z0, z1, c, steps: int = 8, space: str = "w") -> np.ndarray:
    """Images along a straight line between two latents, in W (where StyleGAN interpolates well: the
    StyleGAN paper's perceptual path length is lower there) or in Z (the input a user samples).

    A generator without a separate mapping network interpolates in Z.
    """
    import tensorflow as tf

    if space not in ("w", "z"):
        raise ValueError(f"space must be 'w' or 'z', not {space!r}")
    t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    c = np.repeat(np.asarray(c, np.float32)[None], steps, axis=0) if np.ndim(c) == 1 else np.asarray(c, np.float32)
    mapping, synthesis = getattr(G, "mapping", None), getattr(G, "synthesis", None)
    if space == "w" and mapping is not None and synthesis is not None:
        zz = tf.convert_to_tensor(np.stack([z0, z1]), tf.float32)
        ws = np.asarray(mapping(zz, tf.convert_to_tensor(c[:2], tf.float32)), np.float32)
        w = ws[0][None] * (1 - t[:, :, None]) + ws[1][None] * t[:, :, None]
        img = synthesis(tf.convert_to_tensor(w), noise_mode="const")
    else:
        z = np.asarray(z0)[None] * (1 - t) + np.asarray(z1)[None] * t
        img = G(tf.convert_to_tensor(z, tf.float32), tf.convert_to_tensor(c, tf.float32), noise_mode="const")
    return np.asarray(img, np.float32)


# ---------------------------------------------------------------------------------------------
# The writer


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        elif v is None:
            out[key] = "none"
        else:
            out[key] = json.dumps(v, default=str)
    return out


def _line_nimg(line: str) -> float:
    """cur_nimg of a stats.jsonl line (a damaged line counts as past everything, so it is dropped)."""
    try:
        return round(json.loads(line)["Progress/kimg"]["mean"] * 1000)
    except (ValueError, KeyError, TypeError):
        return float("inf")


class Monitor:
    """Writes `stats.jsonl` and TensorBoard summaries into the run directory (chief only)."""

    def __init__(self, run_dir: str, *, chief: bool = True, cur_nimg: int = 0):
        self.run_dir = run_dir
        self.chief = chief
        self.history: list[dict] = []  # the run's earlier ticks, as kept in stats.jsonl (chief only)
        self._jsonl = None
        self._writer = None
        if not chief:
            return
        import tensorflow as tf

        # Appending keeps one continuous history across resumes of the same run; lines written after
        # the checkpoint being resumed (by a run killed before its next checkpoint) are dropped, as
        # those ticks are trained again. TensorBoard drops such orphaned steps by itself.
        path = os.path.join(run_dir, STATS_FILE)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines(keepends=True)
            kept = [line for line in lines if _line_nimg(line) <= cur_nimg]
            if len(kept) != len(lines):
                atomic_write_text(path, "".join(kept))
            self.history = [json.loads(line) for line in kept if line.strip()]
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._writer = tf.summary.create_file_writer(run_dir)

    def write_hparams(self, options: dict, metrics: dict | None = None) -> None:
        """The resolved configuration in TensorBoard's HParams dashboard (flattened `a.b` keys)."""
        if self._writer is None:
            return
        from tensorboard.plugins.hparams import api as hp

        with self._writer.as_default():
            hp.hparams(_flatten(options), trial_id=os.path.basename(os.path.normpath(self.run_dir)))
        self._writer.flush()

    def write_tick(self, stats: dict, cur_nimg: int, timestamp: float | None = None,
                   metrics: dict | None = None) -> None:
        """One tick: a `stats.jsonl` line and a scalar per statistic (tick mean), step = cur_nimg."""
        if not self.chief:
            return
        import tensorflow as tf

        timestamp = time.time() if timestamp is None else timestamp
        self._jsonl.write(json.dumps(dict(stats, timestamp=timestamp)) + "\n")
        self._jsonl.flush()
        with self._writer.as_default(step=int(cur_nimg)):
            for name, value in stats.items():
                tf.summary.scalar(name, float(value["mean"]))
            for name, value in (metrics or {}).items():
                tf.summary.scalar(f"Metrics/{name}", float(value))
        self._writer.flush()

    def write_image(self, name: str, grid: np.ndarray, cur_nimg: int) -> None:
        """A uint8 HWC image (a grid or a strip) as a TensorBoard image summary."""
        if not self.chief:
            return
        import tensorflow as tf

        with self._writer.as_default(step=int(cur_nimg)):
            tf.summary.image(name, np.asarray(grid, np.uint8)[None], max_outputs=1)
        self._writer.flush()

    def write_text(self, name: str, text: str, cur_nimg: int) -> None:
        if not self.chief:
            return
        import tensorflow as tf

        with self._writer.as_default(step=int(cur_nimg)):
            tf.summary.text(name, text)
        self._writer.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
