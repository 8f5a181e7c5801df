"""Independent NumPy reference for the geometric stage of ADA (paper App. B.1), for tests only.

Written directly from the described procedure with data-dependent shapes (what the TF code cannot
do under XLA): reflect-pad by margins computed from the transformed corners, 2x upsample with the
Symlet-6 filter, bilinear sampling with zeros outside (grid_sample, align_corners=False), 2x
downsample and crop. Slow and simple on purpose.
"""

from __future__ import annotations

import numpy as np

from sg2ada.augment.filters import geom_filter


def upfirdn_last_axis(x, f, up=1, down=1, pad=(0, 0), flip_filter=False, gain=1.0):
    """1-D upfirdn along the last axis of x (float64)."""
    f = np.asarray(f, np.float64) * gain
    n = x.shape[-1]
    y = np.zeros(x.shape[:-1] + (n * up,))
    y[..., ::up] = x
    p0, p1 = pad
    y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(max(p0, 0), max(p1, 0))])
    y = y[..., max(-p0, 0) : y.shape[-1] - max(-p1, 0)]
    k = f if flip_filter else f[::-1]  # correlation kernel
    out_len = y.shape[-1] - k.size + 1
    z = sum(y[..., i : i + out_len] * k[i] for i in range(k.size))
    return z[..., ::down]


def _along(x, axis, **kw):
    x = np.moveaxis(x, axis, -1)
    return np.moveaxis(upfirdn_last_axis(x, **kw), -1, axis)


def grid_sample_bilinear_zeros(img, xs, ys):
    """img [H, W, C]; xs, ys pixel-index coordinates [Ho, Wo]; zeros outside."""
    h, w, _ = img.shape
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    out = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - np.abs(xs - xi)) * (1 - np.abs(ys - yi))
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            vals = img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out = out + (wgt * valid)[..., None] * vals
    return out


def T(tx, ty):
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], np.float64)


def S(sx, sy):
    return np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], np.float64)


def geometric_reference(images, G_inv):
    """images [N, H, W, C] float64, G_inv [N, 3, 3] (output -> input, centred pixel coordinates)."""
    images = np.asarray(images, np.float64)
    G_inv = np.asarray(G_inv, np.float64)
    n, h, w, _c = images.shape
    f = geom_filter()
    hz_pad = f.size // 4
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = np.array([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], np.float64)
    cp = G_inv @ corners  # [N, 3, 4]
    xs_c, ys_c = cp[:, 0].ravel(), cp[:, 1].ravel()
    mx0 = int(np.ceil(np.clip(np.max(-xs_c) + 2 * hz_pad - cx, 0, w - 1)))
    mx1 = int(np.ceil(np.clip(np.max(xs_c) + 2 * hz_pad - cx, 0, w - 1)))
    my0 = int(np.ceil(np.clip(np.max(-ys_c) + 2 * hz_pad - cy, 0, h - 1)))
    my1 = int(np.ceil(np.clip(np.max(ys_c) + 2 * hz_pad - cy, 0, h - 1)))

    x = np.pad(images, [(0, 0), (my0, my1), (mx0, mx1), (0, 0)], mode="reflect")
    G = T((mx0 - mx1) / 2, (my0 - my1) / 2) @ G_inv
    up_pad = ((f.size + 1) // 2, (f.size - 2) // 2)
    x = _along(x, 2, f=f, up=2, pad=up_pad, gain=2.0)
    x = _along(x, 1, f=f, up=2, pad=up_pad, gain=2.0)
    G = T(-0.5, -0.5) @ S(2, 2) @ G @ S(0.5, 0.5) @ T(0.5, 0.5)

    hi_h, hi_w = x.shape[1], x.shape[2]
    out_h, out_w = 2 * (h + 2 * hz_pad), 2 * (w + 2 * hz_pad)
    jy, jx = np.meshgrid(np.arange(out_h) - (out_h - 1) / 2, np.arange(out_w) - (out_w - 1) / 2, indexing="ij")
    sampled = []
    for i in range(n):
        X = G[i, 0, 0] * jx + G[i, 0, 1] * jy + G[i, 0, 2] + (hi_w - 1) / 2
        Y = G[i, 1, 0] * jx + G[i, 1, 1] * jy + G[i, 1, 2] + (hi_h - 1) / 2
        sampled.append(grid_sample_bilinear_zeros(x[i], X, Y))
    x = np.stack(sampled)
    down_pad = (-2 * hz_pad + (f.size - 1) // 2, -2 * hz_pad + (f.size - 2) // 2)
    x = _along(x, 2, f=f, down=2, pad=down_pad, flip_filter=True)
    x = _along(x, 1, f=f, down=2, pad=down_pad, flip_filter=True)
    return x


def reflect_shift(img, tx, ty):
    """Integer translation of an [H, W, C] image by (tx, ty) with reflect fill (content moves +t)."""
    h, w = img.shape[:2]
    big = np.pad(img, [(h, h), (w, w), (0, 0)], mode="reflect")
    return big[h - ty : 2 * h - ty, w - tx : 2 * w - tx]
