"""Training-iteration benchmark of sg2ada.training.Trainer (the StyleGAN2-ADA iteration of
stylegan2-ada-pytorch `training_loop.py`: Gmain, Greg/4, Dmain, Dreg/16, ADA pipe).

Measures iterations/s and images/s for configurations crossing
  config:     tiny@16 (ours) | auto@32 (NVIDIA's auto preset at 32x32: 512 channels) |
              small@32 (auto@32 with z=w=128, channel_base 1024, channel_max 128: overhead-bound)
  execution:  eager (tf.config.run_functions_eagerly) | tf.function | XLA (jit_compile)
  precision:  fp32 | mixed (NVIDIA: fp16 in the top 4 resolutions, conv_clamp 256)
  replicas:   1 | 2 (MirroredStrategy over logical CPUs, or GPUs when present)
and reports forward FLOPs per image of G and D (TF profiler), an estimate of training FLOPs per
image (main phases: Gmain = 3(G+D), Dmain = G + 2*3D, i.e. 4G + 9D), and the fraction of a
measured 3x3 convolution throughput the iteration achieves.

    python bench/bench_training.py                      # quick: tiny, tf.function, fp32, 1 replica
    python bench/bench_training.py --all --iters 8      # tiny: every mode x precision x replicas
    python bench/bench_training.py --config small32 auto32   # the two configs compared with NVIDIA
    python bench/bench_training.py --config auto32 --mode xla --precision mixed --replicas 2

Timings exclude the first iterations (tracing/compilation), which are reported separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def _setup_devices(replicas):
    import tensorflow as tf

    if replicas > 1 and not tf.config.list_physical_devices("GPU"):
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)


def _strategy(replicas):
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devs = gpus if gpus else tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devs[:replicas]])


def _opts(config, precision, mode, replicas, batch, aug="noaug"):
    from sg2ada.training.options import resolve_options

    if config == "tiny":
        kw = dict(resolution=16, cfg="tiny")
    elif config == "small32":
        kw = dict(resolution=32, cfg="auto", cbase=1024, cmax=128)
    elif config == "paper256":
        kw = dict(resolution=256, cfg="paper256")
    else:
        kw = dict(resolution=32, cfg="auto")
    aug_kw = dict(aug="fixed", p=0.5) if aug == "p0.5" else dict(aug=aug)
    o = resolve_options(img_channels=3, label_dim=0, num_replicas=replicas, batch=batch,
                        batch_gpu=batch // replicas, precision="fp32" if precision == "fp32" else "fp16",
                        xla=(mode == "xla"), **aug_kw, **kw)
    if config == "small32":  # z_dim/w_dim are not CLI options; NVIDIA's benchmark set them to 128
        o = o.replace(G=dataclasses.replace(o.G, z_dim=128, w_dim=128))
    return o


def forward_flops(opts):
    """Forward FLOPs per image of G (mapping + synthesis) and D, from the TF profiler."""
    import tensorflow as tf

    from sg2ada.networks import Discriminator, Generator

    G = Generator(dataclasses.replace(opts.G, num_fp16_res=0, conv_clamp=None))
    D = Discriminator(dataclasses.replace(opts.D, num_fp16_res=0, conv_clamp=None))
    res, ch = opts.G.img_resolution, opts.G.img_channels

    def count(fn, *specs):
        cf = tf.function(fn).get_concrete_function(*specs)
        prof = tf.compat.v1.profiler.profile(
            cf.graph, options=tf.compat.v1.profiler.ProfileOptionBuilder(
                tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
        return prof.total_float_ops

    g = count(lambda z: G.synthesis(G.mapping(z, None), noise_mode="const", training=True),
              tf.TensorSpec([1, opts.G.z_dim]))
    d = count(lambda x: D(x, None), tf.TensorSpec([1, res, res, ch]))
    return g, d


def conv_throughput(seconds=3.0, channels=512):
    """GFLOP/s of a 3x3 convolution, channels -> channels, on a [8, 32, 32, channels] batch (NHWC):
    the dominant layer shape of auto@32."""
    import tensorflow as tf

    x = tf.random.normal([8, 32, 32, channels])
    w = tf.random.normal([3, 3, channels, channels])
    f = tf.function(lambda: tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME")))
    f()
    flops = 2 * 8 * 32 * 32 * 3 * 3 * channels * channels
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f().numpy()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def run_one(config, mode, precision, replicas, batch, iters, warmup, aug="noaug"):
    import numpy as np
    import tensorflow as tf

    from sg2ada.training.trainer import Trainer

    tf.config.run_functions_eagerly(mode == "eager")
    opts = _opts(config, precision, mode, replicas, batch, aug)
    strategy = _strategy(replicas)
    t = Trainer(opts, strategy)
    res = opts.G.img_resolution
    img = np.random.RandomState(0).uniform(-1, 1, [batch, res, res, 3]).astype(np.float32)
    ds = tf.data.Dataset.from_tensors((img, np.zeros([batch, 0], np.float32))).repeat()
    it = iter(strategy.experimental_distribute_dataset(ds))
    t0 = time.perf_counter()
    for _ in range(warmup):
        {k: float(v) for k, v in t.step(it).items()}
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        stats = {k: float(v) for k, v in t.step(it).items()}
    dt = (time.perf_counter() - t0) / iters
    tf.config.run_functions_eagerly(False)
    # The 1-minute load average after the timed iterations: above ~2 on a 2-core machine means other
    # processes shared the CPU and the figure is pessimistic.
    return dict(config=config, mode=mode, precision=precision, replicas=replicas, batch=batch, aug=aug,
                load_avg=round(os.getloadavg()[0], 2),
                warmup_s=round(first, 1), sec_per_iter=round(dt, 4), iters_per_s=round(1 / dt, 3),
                images_per_s=round(batch / dt, 2), finite=bool(all(np.isfinite(v) for v in stats.values())))


def _run_in_subprocess(config, mode, precision, replicas, aug, a):
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--one", "--config", config, "--mode", mode, "--precision",
           precision, "--replicas", str(replicas), "--aug", aug, "--batch", str(a.batch), "--iters", str(a.iters),
           "--warmup", str(a.warmup)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    print(json.dumps(dict(config=config, mode=mode, precision=precision, replicas=replicas, aug=aug,
                          failed=f"exit {proc.returncode}: {tail}")))
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["tiny", "small32", "auto32", "paper256"], nargs="+", default=["tiny"])
    ap.add_argument("--mode", choices=["eager", "function", "xla"], nargs="+", default=["function"])
    ap.add_argument("--precision", choices=["fp32", "mixed"], nargs="+", default=["fp32"])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1])
    ap.add_argument("--all", action="store_true", help="every mode, precision and replica count")
    ap.add_argument("--aug", choices=["noaug", "p0.5"], nargs="+", default=["noaug"],
                    help="noaug (NVIDIA's comparison figures) or the bgc pipe at a fixed p = 0.5")
    ap.add_argument("--batch", type=int, default=32, help="global batch (NVIDIA's figures: 32)")
    ap.add_argument("--iters", type=int, default=16, help="timed iterations (16 = one Dreg cycle)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations (tracing + Greg/Dreg first calls)")
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single run, JSON out
    a = ap.parse_args(argv)
    if a.one:
        # One measurement in this process (the parent starts a fresh process for each): splitting the
        # CPU into logical devices for 2 replicas and several MirroredStrategy objects in one process
        # change the other runs' figures, and after an eager 2-replica run a new strategy's
        # collectives collided with the old ones ("Shape mismatch in the collective instance").
        _setup_devices(a.replicas[0])
        print("RESULT " + json.dumps(run_one(a.config[0], a.mode[0], a.precision[0], a.replicas[0], a.batch,
                                             a.iters, a.warmup, a.aug[0])))
        return 0
    if a.all:
        # Every execution mode, precision and replica count for the configs given (default tiny).
        a.mode, a.precision, a.replicas = ["eager", "function", "xla"], ["fp32", "mixed"], [1, 2]

    results = {"runs": []}
    if not a.no_flops:
        results["conv_gflops"] = round(conv_throughput(), 2)
        print(f"3x3 conv throughput: {results['conv_gflops']} GFLOP/s")
    flops = {}
    for config, mode, precision, replicas, aug in itertools.product(a.config, a.mode, a.precision, a.replicas,
                                                                     a.aug):
        if config not in flops and not a.no_flops:
            g, d = forward_flops(_opts(config, "fp32", "function", 1, a.batch))
            flops[config] = dict(G_fwd=g, D_fwd=d, train_est=4 * g + 9 * d)
            print(f"{config}: forward FLOPs/img G {g / 1e6:.1f}M, D {d / 1e6:.1f}M; "
                  f"training estimate {flops[config]['train_est'] / 1e6:.1f}M/img")
        r = _run_in_subprocess(config, mode, precision, replicas, aug, a)
        if r is None:
            continue
        if config in flops:
            r["train_gflops_per_s"] = round(flops[config]["train_est"] * r["images_per_s"] / 1e9, 3)
            r["fraction_of_conv_throughput"] = round(r["train_gflops_per_s"] / results["conv_gflops"], 4)
        results["runs"].append(r)
        print(json.dumps(r))
    results["flops"] = flops
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
