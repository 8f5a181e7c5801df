"""Throughput of the sg2ada.ops hot paths: upfirdn2d up/down/filter, conv2d_resample and
modulated_conv2d (fused and non-fused), in eager mode, tf.function and tf.function(jit_compile=True).

Prints one line per (case, mode): milliseconds per call (median of --repeats timed runs after a
warm-up) and output megapixels*channels per second. Forward only by default; --grad adds a
forward+backward variant (what training runs). Sizes are StyleGAN2-like but scaled by --batch and
--scale so that it finishes on a CPU; run it on the GPU for the real figures.

    python bench/bench_ops.py [--batch 4] [--scale 1] [--repeats 5] [--grad] [--only upfirdn]
                              [--half-compute auto|float32|native]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sg2ada import ops  # noqa: E402


def cases(batch, scale):
    f = ops.setup_filter([1, 3, 3, 1])
    r = lambda *s: tf.random.normal(s)  # noqa: E731
    res, ch = 32 * scale, 128
    x = r(batch, res, res, ch)
    img = r(batch, 4 * res, 4 * res, 3)
    w3 = r(3, 3, ch, ch)
    w1 = r(1, 1, ch, ch)
    styles = tf.random.uniform([batch, ch], 0.5, 1.5)
    shape = tuple(x.shape)

    def modconv(fused, up=1):
        return lambda x: ops.modulated_conv2d(x, w3, styles, padding=1, up=up, resample_filter=f,
                                              flip_weight=(up == 1), fused_modconv=fused)

    return {
        f"upsample2d  img {tuple(img.shape)}": (lambda x: ops.upsample2d(x, f), img),
        f"upfirdn2d up2 {shape}": (lambda x: ops.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4), x),
        f"filter2d      {shape}": (lambda x: ops.filter2d(x, f), x),
        f"downsample2d  {shape}": (lambda x: ops.downsample2d(x, f), x),
        f"conv3x3 up2   {shape}": (lambda x: ops.conv2d_resample(x, w3, f, up=2, padding=1, flip_weight=False), x),
        f"conv3x3 down2 {shape}": (lambda x: ops.conv2d_resample(x, w3, f, down=2, padding=1), x),
        f"conv1x1 down2 {shape}": (lambda x: ops.conv2d_resample(x, w1, f, down=2), x),
        f"modconv nonfused     {shape}": (modconv(False), x),
        f"modconv fused        {shape}": (modconv(True), x),
        f"modconv nonfused up2 {shape}": (modconv(False, up=2), x),
        f"modconv fused up2    {shape}": (modconv(True, up=2), x),
        f"bias_act lrelu clamp {shape}": (lambda x: ops.bias_act(x, tf.zeros([ch]), act="lrelu", clamp=256), x),
        # An fp16 block's hot path (NVIDIA: non-fused in fp16); see --half-compute.
        f"modconv fp16 nonfused up2 {shape}": (lambda x: tf.cast(modconv(False, up=2)(tf.cast(x, tf.float16)),
                                                                 tf.float32), x),
    }


def with_grad(fn):
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)

    return run


def timeit(fn, x, repeats):
    out = fn(x)  # warm-up (traces / compiles)
    out = tf.nest.flatten(out)
    _ = [o.numpy() for o in out]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = tf.nest.flatten(fn(x))
        _ = [o.numpy() for o in out]  # forces completion
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--scale", type=int, default=1, help="spatial size multiplier (1: 32x32 features)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--grad", action="store_true", help="time forward + backward")
    p.add_argument("--only", default="", help="substring filter on case names")
    p.add_argument("--half-compute", default="auto", choices=["auto", "float32", "native"],
                   help="sg2ada.ops.set_reduced_precision_compute for the fp16 cases")
    args = p.parse_args()
    ops.set_reduced_precision_compute(args.half_compute)
    print(f"tensorflow {tf.__version__}, devices: {[d.name for d in tf.config.list_logical_devices()]}")
    print(f"{'case':44s} {'mode':8s} {'ms/call':>9s} {'Mvals/s':>9s}")
    for name, (fn, x) in cases(args.batch, args.scale).items():
        if args.only and args.only not in name:
            continue
        base = with_grad(fn) if args.grad else fn
        for mode, f in (("eager", base), ("graph", tf.function(base)), ("xla", tf.function(base, jit_compile=True))):
            t, y = timeit(f, x, args.repeats)
            print(f"{name:44s} {mode:8s} {t * 1e3:9.2f} {np.prod(y.shape) / t / 1e6:9.1f}", flush=True)


if __name__ == "__main__":
    main()
