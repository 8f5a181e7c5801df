"""The training loop: ticks, console lines, stats, image grids, network snapshots and checkpoints
around `Trainer.step` (one training iteration).

Time is counted in images shown to D: `cur_nimg` (kimg = cur_nimg / 1000). A *tick* ends once
`kimg_per_tick` kimg have passed since the previous one (the first tick ends after one iteration,
as NVIDIA's does, so a broken setup shows up at once). At every tick the loop prints one console line,
writes a `stats.jsonl` line and TensorBoard scalars, and saves a checkpoint; every `snap` ticks (and
at the end) it also writes `fakes<kimg:06d>.png`, a network snapshot `network-snapshot-<kimg:06d>/`
and evaluates the metrics.

Unlike NVIDIA's loop, resuming a run directory continues the same run: the checkpoint restores
cur_nimg, the tick counter, the ADA probability and statistics, the optimizers and the RNG state,
and the input pipeline skips the batches already seen, so a resumed run matches an uninterrupted one.

Exit status of `run()` (and of `sg2ada train`):
    0  finished (`--kimg` reached)
    3  stopped by SIGTERM or SIGINT (or a multi-worker preemption notice) after saving a checkpoint:
       run `sg2ada train --resume RUN_DIR` to continue
    4  stopped because a loss became NaN/inf; the last checkpoint (from before) is intact
(2 is a UserError, as for every sg2ada command.)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from sg2ada.errors import UserError
from sg2ada.training import monitor as mon
from sg2ada.training.run_dir import (
    CHECKPOINT_SUBDIR,
    LOG_FILE,
    format_time,
    tee_console,
)

EXIT_DONE = 0
EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite; the run stops without overwriting its last good checkpoint."""

    exit_code = EXIT_NONFINITE


@dataclass
class LoopSettings:
    """What the loop needs to know, taken from TrainingOptions (see `settings_from_options`)."""

    total_kimg: float
    kimg_per_tick: float = 4
    snap: int | None = 50  # ticks between image grids + network snapshots (None: only at the end)
    metrics: list = field(default_factory=list)
    seed: int = 0
    keep: int | None = 5  # checkpoints to keep
    backup_uri: str | None = None
    checkpoint_data: bool = True  # save a caller-given (trackable) input iterator in checkpoints
    grid_max_images: int | None = None  # cap on the snapshot grid (NVIDIA: up to 32x32)
    grid_batch: int = 32
    progress: bool | None = None  # progress bar between ticks; None: when stderr is a terminal
    time_limit_sec: float | None = None  # end this session (as if done) after this much training time
    options: dict = field(default_factory=dict)  # the resolved configuration, for HParams / snapshots
    dataset: dict | None = None  # dataset description for snapshots


def _opt(opts, *names, default=None):
    """First attribute (or dict key) of opts among `names` that is present and not None."""
    for name in names:
        value = opts.get(name) if isinstance(opts, dict) else getattr(opts, name, None)
        if value is not None:
            return value
    return default


def options_dict(opts) -> dict:
    if isinstance(opts, dict):
        return dict(opts)
    for meth in ("to_dict", "as_dict"):
        if hasattr(opts, meth):
            return dict(getattr(opts, meth)())
    import dataclasses

    if dataclasses.is_dataclass(opts):
        return dataclasses.asdict(opts)
    return dict(vars(opts))


def settings_from_options(opts, **overrides) -> LoopSettings:
    """LoopSettings from a TrainingOptions (or a dict with the same field names)."""
    metrics = _opt(opts, "metrics", default=[])
    if isinstance(metrics, str):
        metrics = [] if metrics.lower() in ("", "none") else metrics.split(",")
    s = LoopSettings(
        total_kimg=float(_opt(opts, "total_kimg", "kimg", default=25000)),
        kimg_per_tick=float(_opt(opts, "kimg_per_tick", "tick", default=4)),
        snap=_opt(opts, "snap", "network_snapshot_ticks", default=50),
        metrics=list(metrics),
        seed=int(_opt(opts, "seed", "random_seed", default=0)),
        keep=_opt(opts, "keep", default=5),
        backup_uri=_opt(opts, "backup_uri"),
        checkpoint_data=bool(_opt(opts, "checkpoint_data", default=True)),
        options=options_dict(opts),
    )
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


def _scalar(x) -> float:
    return float(np.asarray(x))


def is_chief(strategy) -> bool:
    """Task 0 writes logs, images and snapshots; with no cluster (one process) that is us."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "cluster_spec", None) or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and not has_chief and (task_id or 0) == 0


class _StopRequest:
    """SIGTERM/SIGINT set a flag that the loop checks between iterations (a save mid-step would be
    inconsistent). A second SIGINT interrupts at once, for a user who really means it."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signum = None
        self._signals = signals
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None


class _Progress:
    """tqdm bar between ticks on the terminal's stderr; nothing when not a TTY, in CI or without tqdm."""

    def __init__(self, stream, enabled: bool | None):
        self._stream = stream
        self._bar = None
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")
        self._tqdm = None
        if enabled:
            try:
                from tqdm import tqdm

                self._tqdm = tqdm
            except ImportError:
                pass

    def start(self, tick: int, total_nimg: int):
        if self._tqdm is not None:
            self._bar = self._tqdm(total=max(total_nimg, 1), desc=f"tick {tick}", unit="img", leave=False,
                                   file=self._stream, dynamic_ncols=True, unit_scale=True)

    def update(self, n: int):
        if self._bar is not None:
            self._bar.update(n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _make_data_iter(opts, trainer, strategy, skip_images: int = 0):
    """The iterator `trainer.step` pulls batches from, positioned after `skip_images` images.

    The input position is not saved in checkpoints: a tf.data iterator over an in-memory cache
    cannot be restored in another process, distributed iterators cannot be saved at all, and a
    saved shuffle buffer can weigh a gigabyte. The pipeline is deterministic for a given seed
    instead, so a resumed run skips the batches it has already consumed (cur_nimg / images per
    batch) and then sees exactly the batches an uninterrupted run would.
    """
    from sg2ada.data import make_dataset

    replicas = int(getattr(trainer, "num_replicas", None) or
                   (strategy.num_replicas_in_sync if strategy is not None else 1))
    per_batch = int(_opt(opts, "batch_gpu", default=4)) * replicas
    if _opt(opts, "c_dim", default=0) and hasattr(trainer, "make_dataset_iterator"):
        trainer.make_dataset_iterator()  # hands a conditional run its pool of labels; iterator unused
    ds = make_dataset(_opt(opts, "data"), per_batch, mirror=bool(_opt(opts, "mirror", default=False)),
                      subset=_opt(opts, "subset"), seed=int(_opt(opts, "seed", default=0)))
    skip = int(skip_images) // per_batch
    if skip:
        print(f"Skipping the {skip} batches already trained on, to continue the input order...")
        ds = ds.skip(skip)
    if hasattr(trainer, "distribute_dataset"):
        return trainer.distribute_dataset(ds)
    if strategy is not None and replicas > 1:
        return iter(strategy.experimental_distribute_dataset(ds))
    return iter(ds)


def _reals_for_grid(opts, n: int, seed: int):
    """n training images (uint8 NHWC) and their labels, a fixed random choice, for `reals.png`."""
    from sg2ada.data import make_dataset

    ds = make_dataset(_opt(opts, "data"), n, shuffle=True, seed=seed, repeat=True,
                      subset=_opt(opts, "subset"))
    images, labels = next(iter(ds))
    return mon.to_uint8(np.asarray(images)), np.asarray(labels, np.float32)


def _save_snapshot(path: str, trainer, settings: LoopSettings, cur_nimg: int) -> str | None:
    from sg2ada.networks.snapshot import save_snapshot

    # overwrite: ticks shorter than 1 kimg can share a kimg number; the newer snapshot wins
    return save_snapshot(path, G=trainer.G, D=trainer.D, G_ema=trainer.G_ema, dataset=settings.dataset,
                         kimg=cur_nimg / 1000, source="sg2ada train", overwrite=True)


class TrainingLoop:
    """One training session of a run directory: fresh start or continuation of its checkpoints.

    `trainer` must offer build(), step(data_iter) -> stats, cur_nimg, augment_p, checkpoint_items(),
    G, D and G_ema (the contract in docs/design.md). `data_iter` defaults to the trainer's own
    `make_dataset_iterator()` or to `sg2ada.data.make_dataset`; `reals` (uint8 NHWC images, labels)
    defaults to images from the dataset. Tests pass fakes for all three.
    """

    def __init__(self, run_dir: str, trainer, settings: LoopSettings, *, strategy=None, opts=None,
                 data_iter=None, reals=None, snapshot_fn=None, metrics_fn=None, init_fn=None, log=True):
        self.run_dir = run_dir
        self.trainer = trainer
        self.s = settings
        self.strategy = strategy
        self.opts = opts if opts is not None else settings.options
        self.data_iter = data_iter
        self.reals = reals
        self.snapshot_fn = snapshot_fn or _save_snapshot
        self.metrics_fn = metrics_fn
        self.init_fn = init_fn  # called on a fresh start only (transfer learning loads weights here)
        self.chief = is_chief(strategy)
        self.log = log

    # -- set-up ----------------------------------------------------------------------------------
    def _checkpoint_items(self):
        import tensorflow as tf

        items = dict(self.trainer.checkpoint_items())
        self._tick = tf.Variable(0, dtype=tf.int64, trainable=False, name="loop_tick")
        self._elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loop_elapsed_sec")
        items["loop"] = tf.train.Checkpoint(tick=self._tick, elapsed_sec=self._elapsed)
        # An iterator given by the caller is saved when it can be (tests, custom pipelines); the
        # loop's own pipeline is repositioned by skipping instead (see _make_data_iter).
        if self.s.checkpoint_data and isinstance(self.data_iter, tf.__internal__.tracking.Trackable):
            items["data_iter"] = self.data_iter
        return items

    def _grid_setup(self):
        G = self.trainer.G_ema
        res = int(getattr(G, "img_resolution", None) or G.config.img_resolution)
        self.grid_size = mon.grid_shape(res, self.s.grid_max_images)
        n = self.grid_size[0] * self.grid_size[1]
        if self.reals is None:
            self.reals = _reals_for_grid(self.opts, n, self.s.seed)
        images, labels = self.reals
        images, labels = np.asarray(images)[:n], np.asarray(labels, np.float32).reshape([len(images), -1])[:n]
        c_dim = int(getattr(G, "c_dim", labels.shape[1]))
        if labels.shape[1] != c_dim:  # an unconditional run on a labelled dataset: G takes no labels
            labels = np.zeros([len(labels), c_dim], np.float32)
        if len(labels) < n:
            labels = np.concatenate([labels, np.zeros([n - len(labels), c_dim], np.float32)])
        z_dim = int(getattr(G, "z_dim", None) or G.config.z_dim)
        rnd = np.random.RandomState(self.s.seed)
        self.grid_z = rnd.standard_normal([n, z_dim]).astype(np.float32)
        self.grid_c = labels
        self.reals_grid = mon.image_grid(images, self.grid_size)

    def _fakes(self) -> np.ndarray:
        imgs = mon.generate_images(self.trainer.G_ema, self.grid_z, self.grid_c, self.s.grid_batch)
        return mon.image_grid(imgs, self.grid_size)

    def _strip(self) -> np.ndarray:
        imgs = mon.interpolation_strip(self.trainer.G_ema, self.grid_z[0], self.grid_z[1], self.grid_c[0], steps=8)
        return mon.image_grid(imgs, (len(imgs), 1))

    # -- one session ----------------------------------------------------------------------------
    def run(self, *, resume_from: str | None = None) -> int:
        """Train to `total_kimg`; returns the exit status (see the module docstring)."""
        log_path = os.path.join(self.run_dir, LOG_FILE) if (self.chief and self.log) else None
        try:
            with tee_console(log_path) as console_err:
                return self._run(console_err, resume_from)
        except BaseException as e:
            # The CLI prints the error after the console tee is gone: keep it in log.txt as well.
            if log_path is not None and not isinstance(e, SystemExit):
                import traceback

                with open(log_path, "a", encoding="utf-8") as f:
                    if isinstance(e, UserError):
                        f.write(f"error: {e}\n")
                    else:
                        f.write("".join(traceback.format_exception(e)))
            raise

    def _run(self, console_err, resume_from) -> int:
        from sg2ada.training.checkpoint import (
            Backup,
            CheckpointKeeper,
            preemption_handler,
        )

        start_time = time.time()
        s, trainer = self.s, self.trainer
        if self.metrics_fn is None and s.metrics:
            self.metrics_fn = _metrics_runner(s.metrics)
        print("Building the trainer...")
        trainer.build()  # optimizers get their slots here, before any restore
        backup = Backup(s.backup_uri.rstrip("/") + "/" + os.path.basename(os.path.normpath(self.run_dir))) \
            if (s.backup_uri and self.chief) else None
        ckpt_dir = os.path.join(self.run_dir, CHECKPOINT_SUBDIR)
        keeper = CheckpointKeeper(self._checkpoint_items(), ckpt_dir, keep=s.keep, chief=self.chief, backup=backup)
        restored = keeper.restore(resume_from or ckpt_dir, require=resume_from is not None)
        fresh = restored is None
        if fresh and self.init_fn is not None:
            self.init_fn(trainer)
        cur_nimg = int(_scalar(trainer.cur_nimg))
        if self.data_iter is None:
            self.data_iter = _make_data_iter(self.opts, trainer, self.strategy, skip_images=cur_nimg)
        tick = int(self._tick.numpy())
        elapsed_before = float(self._elapsed.numpy())
        if restored:
            print(f"Resumed from {restored}: kimg {cur_nimg / 1000:.1f}, tick {tick}, "
                  f"augment p {_scalar(trainer.augment_p):.3f}")
        monitor = mon.Monitor(self.run_dir, chief=self.chief)
        handler = preemption_handler(self.strategy, keeper, EXIT_PREEMPTED)
        try:
            if self.chief:
                print("Exporting sample images...")
                self._grid_setup()
                if fresh:
                    mon.save_png(self.reals_grid, os.path.join(self.run_dir, "reals.png"))
                    mon.save_png(self._fakes(), os.path.join(self.run_dir, "fakes_init.png"))
                    monitor.write_image("Images/reals", self.reals_grid, cur_nimg)
                    monitor.write_hparams(s.options)
            total_nimg = round(s.total_kimg * 1000)
            print(f"Training for {s.total_kimg:g} kimg{f' (from {cur_nimg / 1000:.1f})' if restored else ''}...\n")
            return self._train(keeper, monitor, handler, console_err, start_time, elapsed_before,
                               cur_nimg, tick, total_nimg)
        finally:
            monitor.close()
            keeper.close()

    def _train(self, keeper, monitor, handler, console_err, start_time, elapsed_before, cur_nimg, tick,
               total_nimg) -> int:
        s, trainer = self.s, self.trainer
        collector = mon.StatsCollector()
        progress = _Progress(console_err, s.progress)
        tick_nimg = round(s.kimg_per_tick * 1000)
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_sec = tick_start_time - start_time
        if cur_nimg >= total_nimg:
            print(f"Already trained for {cur_nimg / 1000:.1f} kimg (--kimg {s.total_kimg:g}); nothing to do.")
            return EXIT_DONE
        progress.start(tick, tick_nimg)
        done = False
        # Under multi-worker training SIGTERM belongs to TensorFlow's preemption handler, which
        # makes all workers save together; a lone worker saving on its own would deadlock.
        signals = (signal.SIGINT,) if handler is not None else (signal.SIGTERM, signal.SIGINT)
        with _StopRequest(signals) as stop:
            while True:
                stats = trainer.step(self.data_iter)
                stats = {k: np.asarray(v, np.float64) for k, v in (stats or {}).items()}
                prev_nimg, cur_nimg = cur_nimg, int(_scalar(trainer.cur_nimg))
                progress.update(cur_nimg - prev_nimg)
                bad = [k for k, v in stats.items() if k.startswith("Loss/") and not np.all(np.isfinite(v))]
                if bad:
                    progress.close()
                    raise NonFiniteLossError(
                        f"{bad[0]} became {float(np.ravel(stats[bad[0]])[0])} at kimg {cur_nimg / 1000:.1f}; "
                        f"training stopped and the last checkpoint ({keeper.latest or 'none'}) is intact: "
                        f"resume it with `--resume {self.run_dir}` and a lower --glr/--dlr, "
                        "a higher --gamma, or --fp32")
                collector.update(stats)
                if handler is not None:
                    handler.save_checkpoint_if_preempted()
                if stop.signum is not None:
                    return self._preempted(keeper, stop, progress, tick, start_time, elapsed_before, cur_nimg)
                done = cur_nimg >= total_nimg
                if s.time_limit_sec is not None and time.time() - start_time >= s.time_limit_sec:
                    if not done:
                        print(f"\nTime limit of {format_time(s.time_limit_sec)} reached; finishing this session "
                              f"(continue with --resume {self.run_dir})")
                    done = True
                # Tick 0 ends after the first iteration, so a broken set-up is reported at once.
                if not done and tick != 0 and cur_nimg < tick_start_nimg + tick_nimg:
                    continue
                progress.close()
                self._tick_report(collector, monitor, keeper, tick, cur_nimg, start_time, elapsed_before,
                                  tick_start_time, tick_start_nimg, maintenance_sec, done)
                tick_end_time = time.time()
                tick += 1
                self._tick.assign(tick)
                self._elapsed.assign(elapsed_before + time.time() - start_time)
                keeper.save()
                tick_start_nimg = cur_nimg
                tick_start_time = time.time()
                maintenance_sec = tick_start_time - tick_end_time
                if done:
                    break
                if stop.signum is not None:  # arrived during the tick's maintenance: just saved
                    print(f"\nStopped by {stop.name} at kimg {cur_nimg / 1000:.1f}; checkpoint saved to "
                          f"{keeper.latest}. Continue with: sg2ada train --resume {self.run_dir}")
                    return EXIT_PREEMPTED
                progress.start(tick, tick_nimg)
        print("\nExiting...")
        return EXIT_DONE

    def _tick_report(self, collector, monitor, keeper, tick, cur_nimg, start_time, elapsed_before,
                     tick_start_time, tick_start_nimg, maintenance_sec, done):
        s, trainer = self.s, self.trainer
        now = time.time()
        total_sec = elapsed_before + now - start_time
        sec_per_tick = now - tick_start_time
        sec_per_kimg = sec_per_tick / max(cur_nimg - tick_start_nimg, 1) * 1000
        p = _scalar(trainer.augment_p)
        cpu_gb = mon.cpu_mem_gb()
        gpu_gb = mon.peak_gpu_mem_gb()
        for name, value in [("Progress/tick", tick), ("Progress/kimg", cur_nimg / 1000),
                            ("Timing/total_sec", total_sec), ("Timing/sec_per_tick", sec_per_tick),
                            ("Timing/sec_per_kimg", sec_per_kimg), ("Timing/maintenance_sec", maintenance_sec),
                            ("Resources/cpu_mem_gb", cpu_gb), ("Resources/peak_gpu_mem_gb", gpu_gb),
                            ("Progress/augment", p), ("Timing/total_hours", total_sec / 3600),
                            ("Timing/total_days", total_sec / 86400)]:
            collector.report(name, value)
        fields = [f"tick {tick:<5d}", f"kimg {cur_nimg / 1000:<8.1f}", f"time {format_time(total_sec):<12s}",
                  f"sec/tick {sec_per_tick:<7.1f}", f"sec/kimg {sec_per_kimg:<7.2f}",
                  f"maintenance {maintenance_sec:<6.1f}", f"cpumem {cpu_gb:<6.2f}"]
        if gpu_gb is not None:
            fields.append(f"gpumem {gpu_gb:<6.2f}")
        fields.append(f"augment {p:.3f}")
        for label, name in [("G", "Loss/G/loss"), ("D", "Loss/D/loss")]:
            value = collector.mean(name)
            if value is not None:
                fields.append(f"loss/{label} {value:<7.3f}")
        print(" ".join(fields))
        metrics = {}
        snap_due = done or (s.snap is not None and tick % max(int(s.snap), 1) == 0)
        if self.chief and snap_due:
            kimg_tag = f"{cur_nimg // 1000:06d}"
            fakes = self._fakes()
            mon.save_png(fakes, os.path.join(self.run_dir, f"fakes{kimg_tag}.png"))
            monitor.write_image("Images/fakes", fakes, cur_nimg)
            monitor.write_image("Images/interpolation", self._strip(), cur_nimg)
            snap_path = os.path.join(self.run_dir, f"network-snapshot-{kimg_tag}")
            try:
                self.snapshot_fn(snap_path, trainer, s, cur_nimg)
            except ImportError as e:  # the snapshot module is optional until it lands
                print(f"Skipping network snapshot: {e}")
                snap_path = None
            if snap_path and keeper.backup is not None and os.path.isdir(snap_path):
                keeper.backup.copy_tree(snap_path, os.path.basename(snap_path))
            if self.metrics_fn is not None and snap_path:
                print("Evaluating metrics...")
                metrics = self.metrics_fn(snap_path, trainer, s) or {}
        monitor.write_tick(collector.as_dict(), cur_nimg, metrics=metrics)
        collector.reset()
        if keeper.backup is not None:
            for name in ("stats.jsonl", LOG_FILE, "training_options.json"):
                path = os.path.join(self.run_dir, name)
                if os.path.exists(path):
                    keeper.backup.copy_file(path, name)

    def _preempted(self, keeper, stop, progress, tick, start_time, elapsed_before, cur_nimg) -> int:
        progress.close()
        self._tick.assign(tick)
        self._elapsed.assign(elapsed_before + time.time() - start_time)
        path = keeper.save()
        print(f"\nStopped by {stop.name} at kimg {cur_nimg / 1000:.1f}; checkpoint saved to {path}. "
              f"Continue with: sg2ada train --resume {self.run_dir}")
        sys.stdout.flush()
        return EXIT_PREEMPTED


def _metrics_runner(names):
    """A function (snapshot_path, trainer, settings) -> {name: value} from sg2ada.metrics."""
    try:
        from sg2ada.metrics import parse_metric_list, run_metrics
    except ImportError as e:
        raise UserError(f"--metrics {','.join(names)}: metrics are not available in this build ({e}); "
                        "use --metrics none") from e
    names = parse_metric_list(list(names))  # unknown names fail now, not at the first snapshot

    def fn(snapshot_path, trainer, settings):
        return run_metrics(names, G=trainer.G_ema, snapshot=snapshot_path, options=settings.options)

    return fn


def training_loop(opts, run_dir: str, *, trainer=None, strategy=None, resume_from: str | None = None,
                  transfer_from: str | None = None, **settings_overrides) -> int:
    """Build the real Trainer from resolved TrainingOptions and run one session; returns the exit status.

    `resume_from`: a checkpoint directory to continue (its run's state). `transfer_from`: a network
    snapshot or NVIDIA pickle whose weights initialise a fresh run (names and shapes that match).
    """
    if trainer is None:
        import keras

        from sg2ada.training.trainer import Trainer

        # As NVIDIA seeds torch and NumPy from --seed: the initial weights come from the global
        # seed, so two runs with the same options start (and, all else being stateless, stay) equal.
        keras.utils.set_random_seed(int(_opt(opts, "seed", default=0)))
        if strategy is None:
            strategy = _make_strategy(opts)
        trainer = Trainer(opts, strategy)
    settings = settings_from_options(opts, **settings_overrides)
    settings.options = dict(settings.options, **{k: v for k, v in settings_overrides.items()
                                                 if isinstance(v, (int, float, str, list, type(None)))})
    if settings.dataset is None and _opt(opts, "data"):
        try:
            from sg2ada.data import open_dataset

            settings.dataset = open_dataset(_opt(opts, "data")).to_dict()
        except Exception:  # noqa: BLE001  (a description is nice to have, not a reason to stop)
            settings.dataset = {"path": _opt(opts, "data")}
    init_fn = (lambda t: load_transfer_weights(t, transfer_from)) if transfer_from else None
    loop = TrainingLoop(run_dir, trainer, settings, strategy=strategy, opts=opts, init_fn=init_fn)
    return loop.run(resume_from=resume_from)


def load_transfer_weights(trainer, path: str) -> None:
    """Copy G, D and G_ema weights from a snapshot or NVIDIA pickle into the trainer's networks.

    As NVIDIA's `copy_params_and_buffers(require_all=False)`: every variable whose name and shape
    match is copied, the rest keep their fresh initialisation (a different resolution or label count
    changes a few layers); nothing matching at all is an error.
    """
    from sg2ada import load_network

    print(f"Loading networks for transfer learning from {path}...")
    src = load_network(path)
    copied = total = 0
    for key in ("G", "D", "G_ema"):
        s_net, d_net = getattr(src, key), getattr(trainer, key)
        if s_net is None:
            continue
        s_vars = s_net.named_variables()
        for name, var in d_net.named_variables().items():
            total += 1
            if name in s_vars and tuple(s_vars[name].shape) == tuple(var.shape):
                var.assign(s_vars[name])
                copied += 1
    if copied == 0:
        raise UserError(f"--resume {path}: no weight matches this run's networks (names/shapes); "
                        "check --cfg and the dataset resolution")
    print(f"Copied {copied} of {total} variables; the others keep their initial values.")


def _make_strategy(opts):
    try:
        from sg2ada.training.distribute import make_strategy
    except ImportError:
        return None
    return make_strategy(_opt(opts, "strategy", default="auto"))
