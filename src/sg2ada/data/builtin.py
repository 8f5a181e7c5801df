"""Built-in demo datasets, generated deterministically by code (nothing downloaded or committed).

`builtin:shapes`: RGB images (32x32 by default, 4096 of them) of one anti-aliased disc, square or
triangle of random position, size, rotation and bright colour on a smooth two-colour gradient
background. The class label is the shape (0 disc, 1 square, 2 triangle). The structure is simple
enough for the `tiny` preset to learn in minutes on a CPU, and varied enough that mode collapse
and blur are visible in the samples. Same (seed, count, resolution) -> same bytes.
"""

from __future__ import annotations

import numpy as np


SHAPE_NAMES = ["disc", "square", "triangle"]
DEFAULT_COUNT = 4096
DEFAULT_RESOLUTION = 32
BUILTINS = ("shapes",)
_SUPERSAMPLE = 4  # render at 4x and box-filter down: cheap anti-aliasing


def _hsv_to_rgb(h, s, v):
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def generate_shapes(count: int = DEFAULT_COUNT, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
                    chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """-> (images uint8 [count, R, R, 3], labels int64 [count])."""
    images, attributes = generate_shapes_with_attributes(count, resolution, seed, chunk)
    return images, attributes["shape"]


def generate_shapes_with_attributes(count: int = DEFAULT_COUNT, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
                                    chunk: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The images of `generate_shapes` and what drew them: {"shape": int64 class, "hue": the
    shape's hue in [0, 1), "x", "y": its centre, "size": its radius, as fractions of the image}."""
    rng = np.random.default_rng(seed)
    n = count
    cls = rng.integers(0, 3, n)
    cx, cy = rng.uniform(0.28, 0.72, n), rng.uniform(0.28, 0.72, n)
    size = rng.uniform(0.14, 0.30, n)
    theta = rng.uniform(0, 2 * np.pi, n)
    hue = rng.uniform(0, 1, n)
    fg = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0, n), rng.uniform(0.75, 1.0, n))
    bg0 = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.1, 0.5, n), rng.uniform(0.15, 0.45, n))
    bg1 = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.1, 0.5, n), rng.uniform(0.35, 0.7, n))
    alpha = rng.uniform(0, 2 * np.pi, n)

    s_res = resolution * _SUPERSAMPLE
    coords = (np.arange(s_res, dtype=np.float32) + 0.5) / s_res
    gx, gy = coords[None, None, :], coords[None, :, None]
    lo = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    lx, ly = lo[None, None, :], lo[None, :, None]
    out = np.empty((n, resolution, resolution, 3), np.uint8)
    for a in range(0, n, chunk):
        sl = slice(a, min(a + chunk, n))
        col = lambda v: v[sl, None, None].astype(np.float32)  # noqa: E731
        dx, dy = gx - col(cx), gy - col(cy)
        th, r, k = col(theta), col(size), cls[sl]
        mask = np.empty((k.shape[0], s_res, s_res), bool)
        # Only the supersampled coverage mask needs the fine grid; each shape is evaluated for
        # its own images only.
        for kind in range(3):
            sel = k == kind
            if not sel.any():
                continue
            ddx, ddy, t_, r_ = dx[sel], dy[sel], th[sel], r[sel]
            if kind == 0:
                m = ddx * ddx + ddy * ddy <= r_ * r_
            elif kind == 1:
                c, s = np.cos(t_), np.sin(t_)
                m = np.maximum(np.abs(c * ddx + s * ddy), np.abs(c * ddy - s * ddx)) <= r_ * 0.8
            else:  # inside all three edges of an equilateral triangle (inradius r/2)
                m = None
                for j in range(3):
                    phi = t_ + 2 * np.pi * j / 3
                    e = ddx * np.cos(phi) + ddy * np.sin(phi) <= r_ * 0.5
                    m = e if m is None else m & e
            mask[sel] = m
        cov = mask.reshape(-1, resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE).mean(axis=(2, 4), dtype=np.float32)
        t = (np.cos(col(alpha)) * (lx - 0.5) + np.sin(col(alpha)) * (ly - 0.5)) * 0.9 + 0.5
        bg = bg0[sl, None, None, :] * (1 - t[..., None]) + bg1[sl, None, None, :] * t[..., None]
        img = bg * (1 - cov[..., None]) + fg[sl, None, None, :] * cov[..., None]
        out[sl] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return out, {"shape": cls.astype(np.int64), "hue": hue, "x": cx, "y": cy, "size": size}
