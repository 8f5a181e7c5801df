"""Benchmark of the ADA augmentation pipe (ADA paper Sec. 2-3, App. B; the paper's goal is that
augmenting every image D sees stays cheap relative to a training iteration).

Measures
  1. pipe throughput (images/s) at the given resolutions, p=0.5, bgc, in eager mode, tf.function
     and tf.function(jit_compile=True) (XLA);
  2. the overhead the pipe adds to one training-like iteration: G forward, D on augmented fakes and
     augmented reals, G and D gradients (non-saturating loss), timed with and without the pipe at a
     small network config (sg2ada.networks), in tf.function;
  3. (--trainer CONFIG ...) the overhead on the REAL training iteration: two sg2ada Trainers on the
     same config, --aug noaug and --aug fixed --p 0.5 (bgc), timed over whole lazy-regularisation
     cycles (16 iterations: Gmain, Greg every 4, Dmain, Dreg every 16) in alternation, so that load
     from other processes hits both alike; the median cycle of each is compared. Configs as in
     bench_training.py: tiny (ours, 16px), small32 (overhead-bound), auto32 (NVIDIA's auto at 32px,
     512 channels), paper256 (NVIDIA's paper256 at 256px, batch 8).

Usage: .venv/bin/python bench/bench_augment.py [--res 32 256] [--iters 10] [--skip-train] [--json FILE]
       .venv/bin/python bench/bench_augment.py --skip-pipe --skip-train --trainer small32 --cycles 3
The numbers depend heavily on the machine (and on other processes sharing the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from sg2ada.augment import AugmentPipe


def _time(fn, iters, warmup=2):
    for _ in range(warmup):
        out = fn()
    if warmup:
        _ = [o.numpy() for o in tf.nest.flatten(out)]
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn()
    _ = [o.numpy() for o in tf.nest.flatten(out)]
    return (time.perf_counter() - t0) / iters


def bench_pipe(res, batch, iters, preset="bgc", p=0.5):
    pipe = AugmentPipe(preset)
    x = tf.random.uniform([batch, res, res, 3], -1, 1)
    results = {}
    modes = {
        "eager": lambda x, p, s: pipe(x, p, s),
        "tf.function": tf.function(lambda x, p, s: pipe(x, p, s)),
        "xla": tf.function(lambda x, p, s: pipe(x, p, s), jit_compile=True),
    }
    p_t = tf.constant(p)
    for name, fn in modes.items():
        counter = [0]

        def run(fn=fn, counter=counter):
            counter[0] += 1
            return fn(x, p_t, tf.constant([counter[0], 1], tf.int32))

        t0 = time.perf_counter()
        run()  # includes tracing / compilation
        first = time.perf_counter() - t0
        sec = _time(run, iters if name != "eager" else max(2, iters // 2))
        results[name] = {"sec_per_batch": sec, "images_per_sec": batch / sec, "first_call_sec": first}
    return results


def bench_train_overhead(res, batch, iters, jit, preset="bgc", p=0.5):
    from sg2ada.networks import DiscriminatorConfig, GeneratorConfig, MappingConfig
    from sg2ada.networks.discriminator import Discriminator
    from sg2ada.networks.generator import Generator

    cb = 2048 if res <= 32 else 4096
    G = Generator(GeneratorConfig(z_dim=64, w_dim=64, img_resolution=res, channel_base=cb, channel_max=128,
                                  mapping=MappingConfig(num_layers=2)))
    D = Discriminator(DiscriminatorConfig(img_resolution=res, channel_base=cb, channel_max=128))
    pipe = AugmentPipe(preset)
    reals = tf.random.uniform([batch, res, res, 3], -1, 1)
    p_t = tf.constant(p)

    def make_step(use_pipe):
        def aug(x, s):
            return pipe(x, p_t, s) if use_pipe else x

        def step(seed):
            z = tf.random.stateless_normal([batch, 64], seed)
            with tf.GradientTape(persistent=True) as tape:
                fake = G(z, None)
                fake_logits = D(aug(fake, seed), None)
                real_logits = D(aug(reals, seed + 1), None)
                loss_g = tf.reduce_mean(tf.nn.softplus(-fake_logits))
                loss_d = tf.reduce_mean(tf.nn.softplus(fake_logits)) + tf.reduce_mean(tf.nn.softplus(-real_logits))
            gg = tape.gradient(loss_g, G.trainable_variables)
            gd = tape.gradient(loss_d, D.trainable_variables)
            return [loss_g, loss_d] + [tf.add_n([tf.reduce_sum(g) for g in gg + gd if g is not None])]

        return tf.function(step, jit_compile=jit)

    # Interleave the two variants and take medians, so that load from other processes affects both.
    fns = {name: make_step(use) for name, use in (("without_pipe", False), ("with_pipe", True))}
    counter = [0]

    def run(fn):
        counter[0] += 1
        return fn(tf.constant([counter[0], 7], tf.int32))

    for fn in fns.values():
        run(fn)  # trace / compile
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            times[name].append(_time(lambda fn=fn: run(fn), 1, warmup=0))
    out = {name: float(np.median(v)) for name, v in times.items()}
    out["overhead_percent"] = 100 * (out["with_pipe"] / out["without_pipe"] - 1)
    return out


def bench_trainer_overhead(config, cycles, cycle_iters, mode, batch):
    """Median seconds per iteration of the real Trainer without and with the pipe (p = 0.5, bgc)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_training import _opts

    from sg2ada.training.trainer import Trainer

    trainers, iters = {}, {}
    for name, aug in (("without_pipe", "noaug"), ("with_pipe", "p0.5")):
        opts = _opts(config, "fp32", mode, 1, batch, aug)
        t = Trainer(opts, tf.distribute.get_strategy())
        res, ch = opts.G.img_resolution, opts.G.img_channels
        img = np.random.RandomState(0).uniform(-1, 1, [opts.batch_gpu, res, res, ch]).astype(np.float32)
        ds = tf.data.Dataset.from_tensors((img, np.zeros([opts.batch_gpu, 0], np.float32))).repeat()
        trainers[name], iters[name] = t, iter(ds)
        t0 = time.perf_counter()
        for _ in range(cycle_iters):  # the first iteration traces every phase; finish the cycle
            _ = [float(v) for v in t.step(iters[name]).values()]
        print(f"  {config} {name}: first cycle (tracing) {time.perf_counter() - t0:.1f} s", flush=True)
    times = {name: [] for name in trainers}
    for _ in range(cycles):
        for name, t in trainers.items():
            t0 = time.perf_counter()
            for _ in range(cycle_iters):
                stats = t.step(iters[name])
            _ = [float(v) for v in stats.values()]
            times[name].append((time.perf_counter() - t0) / cycle_iters)
    out = {name: float(np.median(v)) for name, v in times.items()}
    out["all_sec_per_iter"] = times
    out["load_avg"] = round(os.getloadavg()[0], 2)
    out["overhead_percent"] = 100 * (out["with_pipe"] / out["without_pipe"] - 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="batch per resolution (default 32 / 8)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--skip-train", action="store_true", help="only time the pipe")
    ap.add_argument("--train-res", type=int, nargs="+", default=[32])
    ap.add_argument("--train-xla", action="store_true", help="also time the training step under XLA")
    ap.add_argument("--skip-pipe", action="store_true", help="skip the pipe throughput figures")
    ap.add_argument("--trainer", nargs="+", default=[], choices=["tiny", "small32", "auto32", "paper256"],
                    help="also measure the overhead on the real training iteration of these configs")
    ap.add_argument("--trainer-mode", choices=["function", "xla"], default="function")
    ap.add_argument("--cycles", type=int, default=3, help="timed lazy-regularisation cycles per variant")
    ap.add_argument("--cycle-iters", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    batches = args.batch or [32 if r <= 64 else 8 for r in args.res]
    report = {"cpu_count": os.cpu_count(), "tf": tf.__version__, "pipe": {}, "train": {}, "trainer": {}}
    for res, batch in zip([] if args.skip_pipe else args.res, batches):
        r = bench_pipe(res, batch, args.iters)
        report["pipe"][f"{res}x{res} batch {batch}"] = r
        for mode, v in r.items():
            print(f"pipe bgc p=0.5 {res:4d}px batch {batch:3d} {mode:12s} {v['images_per_sec']:9.1f} img/s "
                  f"({v['sec_per_batch'] * 1e3:8.1f} ms/batch, first call {v['first_call_sec']:.1f} s)", flush=True)
    if not args.skip_train:
        for res in args.train_res:
            for jit in ([False, True] if args.train_xla else [False]):
                try:
                    r = bench_train_overhead(res, 8 if res > 64 else 16, max(3, args.iters // 2), jit)
                except ImportError as e:
                    print(f"networks not available ({e}); pipe time only")
                    break
                key = f"{res}x{res}{' xla' if jit else ''}"
                report["train"][key] = r
                print(f"train step {key}: without pipe {r['without_pipe'] * 1e3:.1f} ms, with pipe "
                      f"{r['with_pipe'] * 1e3:.1f} ms -> overhead {r['overhead_percent']:+.1f}%", flush=True)
    for config in args.trainer:
        batch = 8 if config == "paper256" else 32
        r = bench_trainer_overhead(config, args.cycles, args.cycle_iters, args.trainer_mode, batch)
        key = f"{config} batch {batch} {args.trainer_mode}"
        report["trainer"][key] = r
        print(f"trainer {key}: without pipe {r['without_pipe']:.3f} s/iter, with pipe (p=0.5 bgc) "
              f"{r['with_pipe']:.3f} s/iter -> overhead {r['overhead_percent']:+.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
