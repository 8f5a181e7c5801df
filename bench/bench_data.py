"""Benchmark the dataset tool and the input pipeline; prints figures (images/s), asserts nothing.

    .venv/bin/python bench/bench_data.py [--count32 4096] [--count256 512] [--seconds 5]

Measures: conversion rate of `sg2ada dataset` (builtin:shapes at 32x32, a folder of 256x256 PNGs),
and pipeline throughput (batches of float32 [-1,1] images, shuffled, repeated) from the TFRecord
output at 32x32 and 256x256, with the in-memory cache and without it, for PNG and raw encodings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def convert(source, dest, **kw):
    from sg2ada.data.tool import convert_dataset

    t = time.perf_counter()
    meta = convert_dataset(source, dest, log=lambda m: None, **kw)
    dt = time.perf_counter() - t
    return meta["count"], dt


def throughput(path, batch, seconds, **kw):
    from sg2ada.data import make_dataset

    it = iter(make_dataset(path, batch, seed=0, **kw))
    for _ in range(3):  # warm up (fills the cache on the first pass for cached runs)
        next(it)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        x, _ = next(it)
        n += int(x.shape[0])
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count32", type=int, default=4096)
    ap.add_argument("--count256", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=5.0, help="time per throughput figure")
    args = ap.parse_args()

    import PIL.Image
    import tensorflow as tf

    from sg2ada.data.builtin import generate_shapes

    print(f"tensorflow {tf.__version__}, {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        generate_shapes(args.count32, 32, 0)
        print(f"builtin:shapes generation 32x32: {args.count32 / (time.perf_counter() - t):,.0f} img/s")

        n, dt = convert("builtin:shapes", tmp / "s32", max_images=args.count32)
        print(f"convert builtin:shapes 32x32 png: {n / dt:,.0f} img/s ({n} in {dt:.1f} s, incl. generation)")
        n, dt = convert("builtin:shapes", tmp / "s32raw", max_images=args.count32, encoding="raw")
        print(f"convert builtin:shapes 32x32 raw: {n / dt:,.0f} img/s")

        # A folder of 256x256 PNG files, as from a photo collection (upsampled shapes: realistic size).
        imgs, _ = generate_shapes(args.count256, 64, 1)
        folder = tmp / "png256"
        folder.mkdir()
        for i, a in enumerate(imgs):
            PIL.Image.fromarray(a).resize((256, 256), PIL.Image.Resampling.BILINEAR).save(folder / f"{i:05d}.png")
        n, dt = convert(str(folder), tmp / "f256")
        print(f"convert folder of 256x256 PNG -> png records: {n / dt:,.0f} img/s")
        n, dt = convert(str(folder), tmp / "f256raw", encoding="raw")
        print(f"convert folder of 256x256 PNG -> raw records: {n / dt:,.0f} img/s")
        n, dt = convert(str(folder), tmp / "f128", resolution=128)
        print(f"convert folder of 256x256 PNG, lanczos resize to 128: {n / dt:,.0f} img/s")

        for name, path, batch in (("32x32 png", tmp / "s32", 64), ("32x32 raw", tmp / "s32raw", 64),
                                  ("256x256 png", tmp / "f256", 16), ("256x256 raw", tmp / "f256raw", 16)):
            for cache in (True, False):
                r = throughput(path, batch, args.seconds, cache=cache)
                print(f"pipeline {name} batch {batch} cache={cache!s:5}: {r:,.0f} img/s")
            r = throughput(path, batch, args.seconds, cache=True, mirror=True)
            print(f"pipeline {name} batch {batch} cache=True  mirror: {r:,.0f} img/s")


if __name__ == "__main__":
    main()
