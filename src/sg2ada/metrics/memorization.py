"""Memorisation check: the share of generated images that are near-copies of training images.

An sg2ada metric (NVIDIA has none; on small datasets, Karras et al. 2020 Sec. 4 warn that a GAN can
reproduce its training images). In a feature space, with Euclidean distances:

    d_real(i)  distance from real image i to its nearest other real image (identical duplicates of i,
               closer than 1e-6 of the median spacing, are skipped so they cannot zero the scale),
    threshold  the 5th percentile of d_real over the dataset,
    d_fake(j)  distance from generated image j to its nearest real image,
    copy rate  the share of generated images with d_fake < threshold (key `<name>`),
    nn ratio   median d_fake / median d_real (key `<name>_nn_ratio`; below 1: fakes sit closer to the
               training images than the training images sit to each other).

A generator drawing fresh samples from the data's own distribution scores about 0.05 by this
definition; one that replays its training images scores near 1.

Features: Inception pool_3 (the FID network) when its file is available locally through
`feature_nets` (this metric never downloads it), otherwise `pixel_features`: the image box-filtered
to at most 32x32, centred and scaled to unit length per image (offline, deterministic, blind to
overall brightness and contrast). The picture `<name>-nearest.png` in the run directory shows the
closest generated images, one per row, each followed by its nearest training images.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from sg2ada.data.images import encode_png
from sg2ada.errors import UserError
from sg2ada.images import to_uint8
from sg2ada.metrics.common import fake_labels
from sg2ada.metrics.feature_nets import get_feature_net

__all__ = ["copy_rate", "copy_rate_metric", "nearest_neighbours", "nearest_picture", "pixel_features"]

COPY_PERCENTILE = 5.0  # a fake closer to a real than 95% of the reals are to their nearest neighbour
PIXEL_SIZE = 32  # pixel features: enough to tell images apart, cheap at any resolution
PICTURE_ROWS = 8
PICTURE_SUFFIX = "-nearest.png"  # <metric name><suffix> in the run directory
PICTURE_NEIGHBOURS = 3


def _as_uint8(images) -> np.ndarray:
    """NHWC uint8, or float in [-1, 1] quantised as NVIDIA's metrics do (x*127.5+128, clipped)."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    return np.clip(x.astype(np.float32) * 127.5 + 128.0, 0, 255).astype(np.uint8)


def pixel_features(images, size: int = PIXEL_SIZE) -> np.ndarray:
    """NHWC images (uint8, or float in [-1, 1]) -> float32 [N, D]: box-filtered to at most size x size,
    each image centred and scaled to unit length."""
    x = _as_uint8(images).astype(np.float32) / 255.0
    n, h, w, c = x.shape
    if h > size or w > size:
        fh, fw = -(-h // size), -(-w // size)
        if h % fh or w % fw:  # not a whole factor: crop the few edge pixels the box filter cannot cover
            x = x[:, : h - h % fh, : w - w % fw]
        x = x.reshape(n, x.shape[1] // fh, fh, x.shape[2] // fw, fw, c).mean(axis=(2, 4))
    x = x.reshape(n, -1)
    x = x - x.mean(axis=1, keepdims=True)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def nearest_neighbours(query, ref, k: int = 1, exclude_self: bool = False, skip_below: float = 0.0,
                       block: int = 256):
    """Euclidean distances and indices of the k nearest rows of `ref` for every row of `query`.

    `exclude_self`: query row i is ref row i (a set against itself), so that pair is skipped;
    `skip_below`: pairs closer than this are skipped too (identical duplicates)."""
    query = np.asarray(query, np.float64)
    ref = np.asarray(ref, np.float64)
    k = min(k, len(ref) - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("nearest_neighbours needs at least one reference row besides the query itself")
    ref_sq = np.square(ref).sum(1)
    dists, idxs = [], []
    for a in range(0, len(query), block):
        q = query[a : a + block]
        d2 = np.square(q).sum(1)[:, None] + ref_sq[None, :] - 2.0 * q @ ref.T
        d = np.sqrt(np.maximum(d2, 0.0))
        if exclude_self:
            rows = np.arange(len(q))
            d[rows, rows + a] = np.inf
        if skip_below > 0:
            d[d < skip_below] = np.inf
        idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(d, idx, 1)
        order = np.argsort(part, axis=1)
        dists.append(np.take_along_axis(part, order, 1))
        idxs.append(np.take_along_axis(idx, order, 1))
    return np.concatenate(dists), np.concatenate(idxs)


def real_spacing(real_features) -> np.ndarray:
    """d_real: each real's distance to its nearest other real, identical duplicates skipped."""
    d, _ = nearest_neighbours(real_features, real_features, exclude_self=True)
    tol = 1e-6 * float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else 0.0
    if tol > 0:
        d, _ = nearest_neighbours(real_features, real_features, exclude_self=True, skip_below=tol)
    d = d[:, 0]
    if not np.isfinite(d).any():
        raise UserError("the dataset's images are all identical: a copy rate needs distinct training images")
    return d[np.isfinite(d)]


def copy_rate(d_fake, d_real, percentile: float = COPY_PERCENTILE) -> dict:
    """{'copy_rate', 'nn_ratio', 'threshold'} from d_fake (fake -> nearest real) and d_real (real ->
    nearest other real); see the module docstring."""
    d_fake = np.asarray(d_fake, np.float64).reshape(-1)
    d_real = np.asarray(d_real, np.float64).reshape(-1)
    threshold = float(np.percentile(d_real, percentile))
    return dict(
        copy_rate=float(np.mean(d_fake < threshold)),
        nn_ratio=float(np.median(d_fake) / max(np.median(d_real), 1e-12)),
        threshold=threshold,
    )


def nearest_picture(fakes, neighbours, path: str, gap: int = 4) -> None:
    """One row per fake: the fake, a white gap, then its nearest reals. `fakes` uint8 [R,H,W,C],
    `neighbours` uint8 [R,K,H,W,C]. Written atomically as PNG."""
    fakes, neighbours = _as_uint8(fakes), _as_uint8(neighbours)
    r, h, w, c = fakes.shape
    k = neighbours.shape[1]
    canvas = np.full([r * (h + gap) - gap, (k + 1) * w + gap * (k + 1), c], 255, np.uint8)
    for i in range(r):
        y = i * (h + gap)
        canvas[y : y + h, :w] = fakes[i]
        for j in range(k):
            x = w + 2 * gap + j * (w + gap)
            canvas[y : y + h, x : x + w] = neighbours[i, j]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".png")
    with os.fdopen(fd, "wb") as f:
        f.write(encode_png(canvas))
    os.replace(tmp, path)  # a viewer never sees half a picture


def _feature_fn(opts):
    """Inception features when the file is at hand (never downloaded here), else pixel features."""
    try:
        net = get_feature_net("inception", opts.feature_net, download=False)
    except UserError:
        return "pixels", pixel_features
    return "inception", lambda images: net.features(np.asarray(images)).numpy()


def copy_rate_metric(opts, spec, p) -> dict:
    """The registry's `copy` kind: `p['num_gen']` fakes against `p['max_real']` reals (None: all).

    `opts` is a metrics.common.MetricOptions. Writes `<spec.name>-nearest.png` to `opts.run_dir` if set."""
    import tensorflow as tf

    space, features = _feature_fn(opts)
    if opts.verbose:
        print(f"{spec.name}: {space} features", file=sys.stderr, flush=True)
    real_feats = []
    for images in opts.dataset.iterate(opts.batch_size, max_items=p["max_real"]):
        real_feats.append(features(images.numpy()))
    if sum(len(f) for f in real_feats) < 2:
        raise UserError(f"--data {opts.dataset.path}: a copy rate needs at least 2 training images")
    real_feats = np.concatenate(real_feats)
    d_real = real_spacing(real_feats)

    G, g_kwargs = opts.G, dict(opts.G_kwargs)
    rng, labels, z_dim = np.random.RandomState(opts.seed), fake_labels(opts, opts.seed), int(G.z_dim)

    @tf.function(reduce_retracing=True)
    def generate(z, c):
        return to_uint8(G(z, c, **g_kwargs))

    num, done = int(p["num_gen"]), 0
    d_fake = []
    keep = None  # (distance, fake image, nearest real indices) of the closest fakes so far
    while done < num:
        b = min(opts.batch_size, num - done)
        fakes = generate(tf.constant(rng.randn(b, z_dim).astype(np.float32)), tf.constant(labels(b))).numpy()
        d, idx = nearest_neighbours(features(fakes), real_feats, k=PICTURE_NEIGHBOURS)
        d_fake.append(d[:, 0])
        cand = (d[:, 0], fakes, idx)
        if keep is not None:
            cand = tuple(np.concatenate(pair) for pair in zip(keep, cand))
        order = np.argsort(cand[0], kind="stable")[:PICTURE_ROWS]
        keep = tuple(x[order] for x in cand)
        done += b
        if opts.progress is not None:
            opts.progress(done, num, "copy-rate fakes")
    stats = copy_rate(np.concatenate(d_fake), d_real)
    if getattr(opts, "run_dir", None):
        wanted = np.unique(keep[2])
        found = {}
        for start, images in _enumerate_batches(opts.dataset.iterate(opts.batch_size, max_items=p["max_real"])):
            for i in wanted[(wanted >= start) & (wanted < start + len(images))]:
                found[int(i)] = images[int(i) - start].numpy()
        neighbours = np.stack([[found[int(i)] for i in row] for row in keep[2]])
        nearest_picture(keep[1], neighbours, os.path.join(opts.run_dir, spec.name + PICTURE_SUFFIX))
    return {spec.name: stats["copy_rate"], f"{spec.name}_nn_ratio": stats["nn_ratio"]}


def _enumerate_batches(batches):
    start = 0
    for images in batches:
        yield start, images
        start += int(images.shape[0])
