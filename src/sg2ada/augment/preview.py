"""Preview grid of the ADA augmentations (ADA paper, Fig. 2 / App. B: what each transformation does).

One row per transformation of the chosen pipe, applied alone at probability 1 (so every column shows
it, except the part of a sample whose random parameter happens to be the identity, e.g. an x-flip
drawn as "no flip"), then one row of the full pipe at the given p. The first column of every row is
the real image, the next `num` columns are independent augmentations of it.
"""

from __future__ import annotations

import numpy as np

from sg2ada.augment.pipe import OPS, PRESETS, AugmentPipe
from sg2ada.data import make_dataset
from sg2ada.errors import UserError

_LABEL_WIDTH = 84
_MIN_CELL = 64  # small images are enlarged (nearest neighbour) so the grid stays readable


def load_reals(path: str, count: int) -> np.ndarray:
    """The first `count` images of PATH as float32 NHWC in [-1, 1].

    PATH is anything sg2ada.data reads (the dataset tool's output, an image folder or zip,
    builtin:shapes).
    """
    ds = make_dataset(path, count, shuffle=False, repeat=False, mirror=False)
    for images, _labels in ds.take(1):
        return np.asarray(images, np.float32)
    raise UserError(f"--data {path}: the dataset holds no images")


def preview_rows(preset: str, p: float) -> list[tuple[str, AugmentPipe, float]]:
    """(label, pipe, probability) for every row of the preview."""
    if preset not in PRESETS:
        raise UserError(f"--pipe {preset}: unknown augmentation pipe; choose one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    rows = [(op, AugmentPipe(**{op: 1}), 1.0) for op in OPS if spec.get(op, 0) > 0]
    rows.append((f"{preset} p={p:g}", AugmentPipe(preset), float(p)))
    return rows


def render_grid(reals: np.ndarray, preset: str, p: float, seed: int = 0, num: int = 8) -> np.ndarray:
    """The preview as a uint8 RGB array."""
    import tensorflow as tf
    from PIL import Image, ImageDraw

    reals = np.asarray(reals, np.float32)
    if reals.ndim != 4 or reals.shape[-1] not in (1, 3):
        raise UserError("augment-preview needs 1- or 3-channel images")
    _, h, w, _c = reals.shape
    rows = preview_rows(preset, p)
    zoom = max(1, -(-_MIN_CELL // max(h, w)))
    ch, cw = h * zoom, w * zoom
    grid = Image.new("RGB", (_LABEL_WIDTH + (num + 1) * cw, len(rows) * ch), (255, 255, 255))
    draw = ImageDraw.Draw(grid)

    def to_pil(img):
        a = np.clip(np.rint((img + 1) * 127.5), 0, 255).astype(np.uint8)
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        return Image.fromarray(a).resize((cw, ch), Image.NEAREST)

    for r, (label, pipe, prob) in enumerate(rows):
        real = reals[r % len(reals)]
        batch = tf.constant(np.repeat(real[None], num, axis=0))
        out = pipe(batch, prob, tf.constant([seed, r], tf.int32)).numpy()
        y = r * ch
        draw.text((4, y + ch // 2 - 6), label, fill=(0, 0, 0))
        grid.paste(to_pil(real), (_LABEL_WIDTH, y))
        for i in range(num):
            grid.paste(to_pil(out[i]), (_LABEL_WIDTH + (i + 1) * cw, y))
    return np.asarray(grid)
