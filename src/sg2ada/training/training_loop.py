"""The training loop (stylegan2-ada-pytorch `training/training_loop.py`): one session of a run
directory, read top to bottom: set up, restore, then iterations of `Trainer.step` with a tick of
reporting, checkpointing, snapshots and metrics every `kimg_per_tick`.

Time is counted in images shown to D: `cur_nimg` (kimg = cur_nimg / 1000). The first tick ends after
one iteration, as NVIDIA's does, so a broken setup shows up at once. At every tick the chief prints
one console line, writes a `stats.jsonl` line and TensorBoard scalars, and every worker takes part
in saving a checkpoint; every `snap` ticks (and at the end) the chief also writes
`fakes<kimg:06d>.png`, a network snapshot `network-snapshot-<kimg:06d>/` and evaluates the metrics.

Unlike NVIDIA's loop, resuming a run directory continues the same run: the checkpoint restores
cur_nimg, the tick counter, the ADA state, the optimizers and pl_mean, and the input restarts at
position cur_nimg of its stream (see `sg2ada.data.training_iterator`); since every batch and every
random draw depends only on the seed and the position, a resumed run matches an uninterrupted one,
on any cluster shape.

Exit status (also that of `sg2ada train`):
    0  finished (`--kimg` reached, or `--time-limit` ended this session)
    3  stopped by SIGTERM or SIGINT (or a multi-worker preemption notice) after saving a checkpoint:
       run `sg2ada train --resume RUN_DIR` to continue
    4  stopped because a loss or a weight became NaN/inf; the last checkpoint (from before) is intact
(2 is a UserError, as for every sg2ada command.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from sg2ada.data import label_sampler, make_dataset, open_dataset, training_iterator
from sg2ada.console import format_time
from sg2ada.errors import UserError
from sg2ada.images import image_grid, save_png, to_uint8
from sg2ada.metrics import run_metrics
from sg2ada.networks.generator import generate_images
from sg2ada.networks.snapshot import clean_interrupted_writes, save_snapshot
from sg2ada.training import distribute
from sg2ada.training import monitor as mon
from sg2ada.training.checkpoint import Backup, CheckpointKeeper, preemption_handler
from sg2ada.training.health import HealthMonitor
from sg2ada.training.options import TrainingOptions
from sg2ada.training.run_dir import (
    CHECKPOINT_SUBDIR,
    LOG_FILE,
    run_lock,
    tee_console,
    write_options,
)
from sg2ada.training.trainer import Trainer
from sg2ada.training.transfer import load_transfer_weights

EXIT_DONE = 0
EXIT_PREEMPTED = 3
EXIT_NONFINITE = 4
HEALTH_BATCH = 64  # fixed reals and fakes whose feature spread tells mode collapse
BACKUP_STOP_WAIT_SEC = 20  # after SIGTERM, within a scheduler's usual grace period


class NonFiniteLossError(UserError):
    """A loss or a weight became NaN or infinite; the run stops without overwriting its last good checkpoint."""

    exit_code = EXIT_NONFINITE


def training_loop(opts: TrainingOptions, run_dir: str, strategy: tf.distribute.Strategy, *,
                  transfer_from: str | None = None, progress: bool | None = None) -> int:
    """Train the run in `run_dir` toward `opts.total_kimg`; returns the exit status (see above).

    `transfer_from`: a network snapshot or NVIDIA pickle whose weights initialise a fresh run.
    `progress`: a progress bar between ticks (None: when stderr is a terminal outside CI).
    """
    chief = distribute.is_chief(strategy)
    with run_lock(run_dir) if chief else contextlib.nullcontext(), \
            tee_console(os.path.join(run_dir, LOG_FILE) if chief else None) as console_err:
        start_time = time.time()

        # ---- Set up: networks, optimizers and the rest of the training state -----------------
        print("Building the trainer...")
        keras.utils.set_random_seed(opts.seed)  # initial weights from --seed, as NVIDIA seeds torch
        trainer = Trainer(opts, strategy)
        if opts.c_dim:
            trainer.set_labels(label_sampler(opts.data, subset=opts.subset, seed=opts.seed, val=opts.val))
        loop_state = tf.train.Checkpoint(tick=tf.Variable(0, dtype=tf.int64, trainable=False),
                                         tick_start_nimg=tf.Variable(0, dtype=tf.int64, trainable=False),
                                         elapsed_sec=tf.Variable(0.0, dtype=tf.float64, trainable=False))
        backup = Backup(f"{opts.backup_uri.rstrip('/')}/{os.path.basename(os.path.normpath(run_dir))}") \
            if opts.backup_uri and chief else None
        keeper = CheckpointKeeper(dict(trainer.checkpoint_items(), loop=loop_state),
                                  os.path.join(run_dir, CHECKPOINT_SUBDIR), keep=opts.keep, chief=chief,
                                  backup=backup)
        if chief:
            clean_interrupted_writes(run_dir)  # of a snapshot write killed midway
        dataset_info = open_dataset(opts.data).to_dict()  # for snapshot.json
        monitor = None
        stopped = False
        try:
            # ---- Restore: the run's newest checkpoint, or transfer weights for a new run -----
            restored = keeper.restore()
            if restored is None and transfer_from is not None:
                load_transfer_weights(trainer, transfer_from)
            if chief:  # only now: a resume that fails changes nothing in the run directory
                write_options(run_dir, opts)
            cur_nimg = int(trainer.cur_nimg.numpy())
            monitor = mon.Monitor(run_dir, chief=chief, cur_nimg=cur_nimg)
            tick = int(loop_state.tick.numpy())
            elapsed_before = float(loop_state.elapsed_sec.numpy())
            if restored:
                print(f"Resumed from {restored}: kimg {cur_nimg / 1000:.3f}, tick {tick}, "
                      f"augment p {float(trainer.augment_p.numpy()):.3f}")
            total_nimg = round(opts.total_kimg * 1000)
            if cur_nimg >= total_nimg:
                print(f"Already trained for {cur_nimg / 1000:.1f} kimg (--kimg {opts.total_kimg:g}); nothing to do.")
                return EXIT_DONE

            # ---- Input: the global batch stream from position cur_nimg, a share per worker ---
            data_iter = training_iterator(strategy, opts.data, batch_size=opts.batch_size,
                                          batch_gpu=trainer.batch_gpu, mirror=opts.mirror, subset=opts.subset,
                                          seed=opts.seed, skip_images=cur_nimg, val=opts.val)

            # ---- Export sample images (chief) ----------------------------------------------
            grid = health = None
            if chief:
                print("Exporting sample images...")
                grid = _SampleGrid(opts, trainer.G_ema)
                health = HealthMonitor(aug=opts.aug, ada_target=opts.ada_target, ada_kimg=opts.ada_kimg,
                                       p_max=opts.ada_p_max, r1_gamma=opts.r1_gamma)
                health.set_reals(grid.real_images[:HEALTH_BATCH])
                held_out = _held_out_reals(opts) if opts.val else None
                health.replay(monitor.history)
                if restored is None:
                    save_png(grid.reals, os.path.join(run_dir, "reals.png"))
                    save_png(grid.fakes(), os.path.join(run_dir, "fakes_init.png"))
                    monitor.write_image("Images/reals", grid.reals, cur_nimg)
                    monitor.write_hparams(opts.to_dict())

            # ---- Train ---------------------------------------------------------------------
            print(f"Training for {opts.total_kimg:g} kimg{f' (from {cur_nimg / 1000:.1f})' if restored else ''}...\n")
            handler = preemption_handler(strategy, keeper, EXIT_PREEMPTED)
            collector = mon.StatsCollector()
            bar = _ProgressBar(console_err, progress)
            tick_nimg = round(opts.kimg_per_tick * 1000)
            # a run stopped mid-tick keeps its tick boundaries: its stats lines stay those of an uninterrupted run
            tick_start_nimg = int(loop_state.tick_start_nimg.numpy()) if restored else cur_nimg
            tick_start_time = time.time()
            maintenance_sec = tick_start_time - start_time
            bar.start(tick, tick_nimg)
            # Under multi-worker training SIGTERM belongs to TensorFlow's preemption handler, which
            # makes all workers save at the same step; a lone worker saving on its own would hang.
            with _StopRequest((signal.SIGINT,) if handler else (signal.SIGTERM, signal.SIGINT)) as stop:
                while True:
                    stats = {k: np.asarray(v, np.float64) for k, v in trainer.step(data_iter).items()}
                    prev_nimg, cur_nimg = cur_nimg, int(trainer.cur_nimg.numpy())
                    bar.update(cur_nimg - prev_nimg)
                    bad = [k for k, v in stats.items() if k.startswith("Loss/") and not np.all(np.isfinite(v))]
                    if bad:
                        bar.close()
                        _stop_non_finite(f"{bad[0]} became {float(np.ravel(stats[bad[0]])[0])}", cur_nimg, keeper,
                                         run_dir)
                    collector.update(stats)
                    if handler is not None:
                        handler.save_checkpoint_if_preempted()
                    done = cur_nimg >= total_nimg
                    if opts.time_limit_min is not None and time.time() - start_time >= opts.time_limit_min * 60:
                        if not done:
                            print(f"\nTime limit of {format_time(opts.time_limit_min * 60)} reached; finishing "
                                  f"this session (continue with --resume {run_dir})")
                        done = True
                    tick_due = done or tick == 0 or cur_nimg >= tick_start_nimg + tick_nimg
                    if not tick_due and stop.signum is None:
                        continue
                    bar.close()
                    # Nothing non-finite may reach a snapshot or checkpoint: the losses lag the weights by a step.
                    bad = trainer.non_finite_networks()
                    if bad:
                        _stop_non_finite(f"the weights of {bad[0]} became NaN or infinite", cur_nimg, keeper, run_dir)

                    # ---- Tick: report, checkpoint, snapshot, metrics --------------------------
                    if tick_due:
                        now = time.time()
                        total_sec = elapsed_before + now - start_time
                        sec_per_tick = now - tick_start_time
                        sec_per_kimg = sec_per_tick / max(cur_nimg - tick_start_nimg, 1) * 1000
                        p = float(trainer.augment_p.numpy())
                        cpu_gb, gpu_gb = mon.cpu_mem_gb(), mon.peak_gpu_mem_gb()
                        for name, value in [("Progress/tick", tick), ("Progress/kimg", cur_nimg / 1000),
                                            ("Progress/augment", p), ("Timing/total_sec", total_sec),
                                            ("Timing/sec_per_tick", sec_per_tick), ("Timing/sec_per_kimg", sec_per_kimg),
                                            ("Timing/maintenance_sec", maintenance_sec),
                                            ("Timing/total_hours", total_sec / 3600),
                                            ("Timing/total_days", total_sec / 86400),
                                            ("Resources/cpu_mem_gb", cpu_gb), ("Resources/peak_gpu_mem_gb", gpu_gb)]:
                            collector.report(name, value)
                        fields = [f"tick {tick:<5d}", f"kimg {cur_nimg / 1000:<8.1f}",
                                  f"time {format_time(total_sec):<12s}", f"sec/tick {sec_per_tick:<7.1f}",
                                  f"sec/kimg {sec_per_kimg:<7.2f}", f"maintenance {maintenance_sec:<6.1f}",
                                  f"cpumem {cpu_gb:<6.2f}"]
                        if gpu_gb is not None:
                            fields.append(f"gpumem {gpu_gb:<6.2f}")
                        fields.append(f"augment {p:.3f}")
                        if health is not None:  # the chief's diagnosis: one line per problem, with its fix
                            d_train = d_val = None
                            if held_out is not None:  # D on images it trains on and on images it never saw
                                d_train = _d_logits(trainer.D, *grid.real_batch(len(held_out[0])))
                                d_val = _d_logits(trainer.D, *held_out)
                            checkup = health.update(collector.as_dict(), kimg=cur_nimg / 1000, d_train=d_train,
                                                    d_val=d_val, fakes=grid.fake_images(HEALTH_BATCH))
                            for name, value in checkup.numbers.items():
                                collector.report(name, value)
                            for line in checkup.warnings:
                                print(line)
                        for label, name in [("G", "Loss/G/loss"), ("D", "Loss/D/loss")]:
                            if collector.mean(name) is not None:
                                fields.append(f"loss/{label} {collector.mean(name):<7.3f}")
                        print(" ".join(fields))
                    tick_end_time = time.time()
                    metrics = {}
                    if chief and tick_due and stop.signum is None and (done or tick % opts.snap == 0):
                        kimg_tag = f"{cur_nimg // 1000:06d}"
                        fakes = grid.fakes()
                        save_png(fakes, os.path.join(run_dir, f"fakes{kimg_tag}.png"))
                        monitor.write_image("Images/fakes", fakes, cur_nimg)
                        monitor.write_image("Images/interpolation", grid.interpolation(), cur_nimg)
                        # overwrite: ticks shorter than 1 kimg can share a kimg number; the newer wins
                        snap_path = save_snapshot(os.path.join(run_dir, f"network-snapshot-{kimg_tag}"),
                                                  G=trainer.G, D=trainer.D, G_ema=trainer.G_ema,
                                                  dataset=dataset_info, kimg=cur_nimg / 1000,
                                                  source="sg2ada train", overwrite=True)
                        if backup is not None:
                            backup.copy_tree(snap_path, os.path.basename(snap_path))
                        if opts.metrics:
                            print("Evaluating metrics...")
                            metrics = run_metrics(list(opts.metrics), G=trainer.G_ema, snapshot=snap_path,
                                                  dataset_path=opts.data, mirror=opts.mirror, run_dir=run_dir)
                    if tick_due:
                        monitor.write_tick(collector.as_dict(), cur_nimg, metrics=metrics)
                        collector.reset()
                        tick += 1
                    # The checkpoint comes last: a kill before it repeats this tick on resume, and the
                    # resumed Monitor drops the stats lines written after the checkpoint it restored.
                    loop_state.tick.assign(tick)
                    loop_state.tick_start_nimg.assign(cur_nimg if tick_due else tick_start_nimg)
                    loop_state.elapsed_sec.assign(elapsed_before + time.time() - start_time)
                    ckpt_path = keeper.save()
                    if backup is not None:
                        backup.copy_run_files(run_dir)
                    if stop.signum is not None:
                        stopped = True
                        print(f"\nStopped by {stop.name} at kimg {cur_nimg / 1000:.3f}; checkpoint saved to "
                              f"{ckpt_path}. Continue with: sg2ada train --resume {run_dir}")
                        sys.stdout.flush()
                        return EXIT_PREEMPTED
                    if done:
                        break
                    maintenance_sec = time.time() - tick_end_time
                    tick_start_nimg, tick_start_time = cur_nimg, time.time()
                    bar.start(tick, tick_nimg)
            print("\nExiting...")
            return EXIT_DONE
        except BaseException:
            stopped = True  # an error or a second ^C: do not hold the user up for the uploads
            raise
        finally:
            if monitor is not None:
                monitor.close()
            if backup is not None:
                backup.copy_run_files(run_dir)  # the log's last lines
            # A stopped run has seconds before the machine goes: a bounded wait for the uploads.
            keeper.close(backup_timeout_sec=BACKUP_STOP_WAIT_SEC if stopped else None)


def _stop_non_finite(what: str, cur_nimg: int, keeper: CheckpointKeeper, run_dir: str):
    fix = "a lower --glr/--dlr, a higher --gamma, or --fp32"
    raise NonFiniteLossError(
        f"{what} at kimg {cur_nimg / 1000:.3f}; "
        + (f"training stopped and the last checkpoint ({keeper.latest}) is intact: resume it "
           f"with `--resume {run_dir}` and {fix}" if keeper.latest else
           f"training stopped before its first checkpoint: start again with {fix}"))


def _held_out_reals(opts: TrainingOptions) -> tuple[np.ndarray, np.ndarray]:
    """Up to HEALTH_BATCH of the `--val` images held out of training, and their labels."""
    ds = make_dataset(opts.data, min(opts.val, HEALTH_BATCH), shuffle=False, repeat=False, subset=opts.subset,
                      seed=opts.seed, val=opts.val, held_out=True)
    images, labels = next(iter(ds))
    return np.asarray(images), np.asarray(labels, np.float32)[:, : opts.c_dim]


def _d_logits(D, images, c) -> np.ndarray:
    return np.asarray(D(tf.convert_to_tensor(images), tf.convert_to_tensor(c)), np.float64).ravel()


class _SampleGrid:
    """NVIDIA's snapshot grid: a fixed choice of reals, and G_ema's images of fixed latents."""

    def __init__(self, opts: TrainingOptions, G):
        self.G = G
        self.size = mon.grid_shape(opts.resolution)
        n = self.size[0] * self.size[1]
        images, labels = next(iter(make_dataset(opts.data, n, shuffle=True, seed=opts.seed, subset=opts.subset,
                                                val=opts.val)))
        self.real_float = np.asarray(images)
        self.real_images = np.asarray(to_uint8(images))
        self.reals = image_grid(self.real_images, *self.size)
        self.c = np.zeros([n, opts.c_dim], np.float32)  # an unconditional run on a labelled dataset: no labels
        if opts.c_dim:
            self.c[: len(labels)] = np.asarray(labels, np.float32)[:, : opts.c_dim]
        self.z = np.random.RandomState(opts.seed).standard_normal([n, G.config.z_dim]).astype(np.float32)

    def real_batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n reals of the grid (training images) as D takes them, with their labels."""
        return self.real_float[:n], self.c[:n]

    def fake_images(self, n: int | None = None) -> np.ndarray:
        return np.asarray(to_uint8(generate_images(self.G, self.z[:n], self.c[:n])))

    def fakes(self) -> np.ndarray:
        return image_grid(self.fake_images(), *self.size)

    def interpolation(self) -> np.ndarray:
        """Two rows between the same two latents: through Z, then through W."""
        imgs = np.concatenate([mon.interpolation_strip(self.G, self.z[0], self.z[1], self.c[0], steps=8, space=s)
                               for s in ("z", "w")])
        return image_grid(np.asarray(to_uint8(imgs)), len(imgs) // 2, 2)


class _StopRequest:
    """SIGTERM/SIGINT set a flag that the loop checks between iterations (a save mid-step would be
    inconsistent). A second SIGINT interrupts at once, for a user who really means it."""

    def __init__(self, signals):
        self.signum = None
        self._signals = signals
        self._old = {}

    def __enter__(self):
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


class _ProgressBar:
    """tqdm bar between ticks on the terminal's stderr (None: when it is a TTY outside CI)."""

    def __init__(self, stream, enabled: bool | None):
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")
        self._stream = stream if enabled else None
        self._bar = None

    def start(self, tick: int, total_nimg: int):
        if self._stream is not None:
            from tqdm.auto import tqdm  # a widget in a notebook, text on a terminal

            self._bar = tqdm(total=max(total_nimg, 1), desc=f"tick {tick}", unit="img", leave=False,
                             file=self._stream, dynamic_ncols=True, unit_scale=True)

    def update(self, n: int):
        if self._bar is not None:
            self._bar.update(n)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
