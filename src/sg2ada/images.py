"""uint8 image arrays, shared by generation, training snapshots, metrics and previews: NVIDIA's
quantisation of generator output, a row-major grid of images, and atomic PNG writes.
"""

from __future__ import annotations

import math
import os

import numpy as np

from sg2ada.errors import UserError


def to_uint8(images):
    """NHWC float images in [-1, 1] -> uint8 tensor, NVIDIA's rule `(x * 127.5 + 128).clamp(0, 255)`
    truncated. Takes NumPy arrays or tensors, eagerly or inside tf.function."""
    import tensorflow as tf  # lazy: the CLI uses image_grid and save_png without TensorFlow

    x = tf.cast(images, tf.float32) * 127.5 + 128.0
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def image_grid(images_uint8, cols: int | None = None, rows: int | None = None) -> np.ndarray:
    """[N,H,W,C] uint8 -> one [rows*H, cols*W, C] image, row-major, black where no image falls.
    `cols` defaults to ceil(sqrt(N)), `rows` to as many as the images need; extra images are left out."""
    images = np.asarray(images_uint8)
    n, h, w, c = images.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = rows or max(1, math.ceil(n / cols))
    grid = np.zeros([rows * h, cols * w, c], images.dtype)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i]
    return grid


def pil_image(img_uint8: np.ndarray):
    """A uint8 HWC array (C = 1 or 3) as a PIL image."""
    import PIL.Image

    img = np.asarray(img_uint8)
    if img.ndim == 3 and img.shape[-1] == 1:
        return PIL.Image.fromarray(img[:, :, 0], "L")
    return PIL.Image.fromarray(img, "RGB")


def save_png(img_uint8: np.ndarray, path) -> str:
    """Write a uint8 HWC image as PNG atomically (a viewer never sees half a file); returns the path."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        pil_image(img_uint8).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"{path}: cannot write the image ({e.strerror or e})") from None
    return path


__all__ = ["image_grid", "pil_image", "save_png", "to_uint8"]
