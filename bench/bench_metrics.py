"""Benchmark of the metric machinery on this machine: feature-extraction throughput and the cost of
the FID/KID/PR formulas at the real feature widths.

Feature networks: the real files when they are available locally (`--feature-net`, the
SG2ADA_INCEPTION / SG2ADA_VGG16 variables or the cache; nothing is downloaded). Otherwise a randomly
initialised network of the same architecture and cost stands in, and the output says so:
`keras.applications.InceptionV3(weights=None)` at 299x299 for the 2015 Inception graph (same
Inception-v3 topology: the same convolutions at the same resolutions), and
`keras.applications.VGG16(weights=None)` at 224x224 for NVIDIA's VGG16.

    .venv/bin/python bench/bench_metrics.py [--batch 32] [--iters 3] [--feature-net PATH ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _time(fn, x, iters):
    fn(x)  # trace / warm up
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn(x)
        np.asarray(out)
    return (time.perf_counter() - t0) / iters


def bench_inception(args):
    import keras
    import tensorflow as tf

    from sg2ada.errors import UserError
    from sg2ada.metrics.feature_nets import get_feature_net

    # Generated images at a typical resolution (256x256), resized to 299x299 inside the network.
    x = np.random.RandomState(0).randint(0, 256, size=(args.batch, 256, 256, 3)).astype(np.uint8)
    try:
        net = get_feature_net("inception", args.feature_net, download=False)
        fn = tf.function(net.features)
        what = f"Inception 2015-12-05 graph ({net.path})"
    except UserError:
        model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(299, 299, 3))

        @tf.function
        def fn(u8):
            img = tf.image.resize(tf.cast(u8, tf.float32), [299, 299]) / 128.0 - 1.0
            return model(img, training=False)

        what = "STAND-IN keras.applications.InceptionV3(weights=None) (real graph file absent)"
    dt = _time(fn, x, args.iters)
    print(f"inception features @299x299: {args.batch / dt:8.1f} images/s  (batch {args.batch}, {dt * 1e3:.0f} ms/batch)  [{what}]")
    return args.batch / dt


def bench_vgg(args):
    import keras
    import tensorflow as tf

    from sg2ada.errors import UserError
    from sg2ada.metrics.feature_nets import get_feature_net

    x = np.random.RandomState(1).randint(0, 256, size=(args.batch, 256, 256, 3)).astype(np.uint8)
    try:
        net = get_feature_net("vgg16", args.feature_net, download=False)
        fn = net.features
        what = f"NVIDIA VGG16 ({net.path})"
    except UserError:
        model = keras.applications.VGG16(weights=None, include_top=True, input_shape=(224, 224, 3))
        fc2 = keras.Model(model.input, model.get_layer("fc2").output)

        @tf.function
        def fn(u8):
            return fc2(tf.image.resize(tf.cast(u8, tf.float32), [224, 224]), training=False)

        what = "STAND-IN keras.applications.VGG16(weights=None) (vgg16.pkl absent)"
    dt = _time(fn, x, args.iters)
    print(f"vgg16 fc2 features @224x224:  {args.batch / dt:8.1f} images/s  (batch {args.batch}, {dt * 1e3:.0f} ms/batch)  [{what}]")


def bench_formulas(args):
    from sg2ada.metrics import formulas

    rng = np.random.RandomState(0)
    d = 2048
    a = rng.randn(4096, d).astype(np.float32)
    b = (rng.randn(4096, d) * 1.1).astype(np.float32)
    sa = formulas.FeatureStats(capture_mean_cov=True)
    sb = formulas.FeatureStats(capture_mean_cov=True)
    t0 = time.perf_counter()
    sa.append(a)
    sb.append(b)
    t_acc = time.perf_counter() - t0
    for method in ("eigh", "sqrtm") if args.sqrtm else ("eigh",):
        t0 = time.perf_counter()
        formulas.fid_from_stats(*sa.get_mean_cov(), *sb.get_mean_cov(), method=method)
        t_fid = time.perf_counter() - t0
        print(f"FID formula (2048-d, {method:5s}): {t_fid:7.2f} s   (accumulating 2x4096 features: {t_acc:.2f} s)")
    t0 = time.perf_counter()
    formulas.kid_from_features(a, b, num_subsets=10, max_subset_size=1000, seed=0)
    t_kid = (time.perf_counter() - t0) / 10
    print(f"KID per subset (1000, 2048-d): {t_kid * 1e3:8.1f} ms  (x100 subsets = {t_kid * 100:.1f} s)")
    n = 2000
    fa = rng.randn(n, 4096).astype(np.float32)
    fb = rng.randn(n, 4096).astype(np.float32)
    t0 = time.perf_counter()
    formulas.precision_recall(fa, fb, 3, 10000, 10000)
    t_pr = time.perf_counter() - t0
    est = t_pr * (50000 * 200000 + 50000 * 50000 + 2 * 50000 * 200000) / (4 * n * n)  # rough quadratic scaling
    print(f"PR k=3 on 2x{n} 4096-d:       {t_pr:8.2f} s   (pr50k3_full extrapolated ~{est / 3600:.1f} h on this CPU)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--feature-net", action="append", default=[])
    p.add_argument("--skip-formulas", action="store_true")
    p.add_argument("--sqrtm", action="store_true", help="also time NVIDIA's scipy.linalg.sqrtm FID (slow)")
    args = p.parse_args(argv)
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible")
    ips = bench_inception(args)
    print(f"  -> fid50k_full generator side: 50000 images ~ {50000 / ips / 60:.0f} min of feature extraction alone")
    bench_vgg(args)
    if not args.skip_formulas:
        bench_formulas(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
