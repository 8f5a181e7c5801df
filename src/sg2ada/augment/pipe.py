"""AugmentPipe: the 18-transformation augmentation pipeline of ADA (Karras et al. 2020, Sec. 2-3, App. B).

Order, probability multipliers and parameter distributions follow the paper's pipeline (and NVIDIA's
reference implementations, which are the behavioural spec):

  pixel blitting    xflip, rotate90, xint                                  (App. B.1)
  general geometric scale, rotate (split in a pre- and a post-rotation), aniso, xfrac
  colour            brightness, contrast, lumaflip, hue, saturation        (App. B.1)
  image filtering   4-band equaliser (each band counts as one transformation; App. B.2)
  corruptions       additive RGB noise, cutout                             (App. B.3)

Every transformation is applied to each sample independently with probability `multiplier * p`
(Sec. 2.2: p < 0.8 keeps augmentations non-leaking). The geometric transformations are composed into
one inverse 3x3 matrix per sample, the colour transformations into one 4x4 matrix per sample.

Execution of the geometric matrix (App. B.1, "we pad, upsample 2x with a wavelet filter, resample,
downsample 2x"): reflect padding with margins computed from the transformed image corners, 2x
upsampling with the Symlet-6 filter, bilinear sampling (grid_sample semantics: align_corners=False,
zeros outside), 2x downsampling with the same filter. Two deliberate implementation choices:

* Samples whose matrix is a pure pixel blit (flip / 90-degree rotation / integer translation and no
  general transform) are executed as an exact pixel gather with reflection at the borders, which is
  what these operations mean (the paper calls them lossless). Sent through the resampling path they
  would pick up a slight blur, because Symlet-6 is not symmetric and a flipped image sees the
  filter reversed. Samples with a general transform go through the resampling path with the
  composite matrix, as in the reference.
* XLA needs static shapes, so the padded image cannot have data-dependent size. We pad by a static
  amount from a small set of sizes (the smallest one that covers the batch's margins is chosen
  with a switch) and zero everything beyond the data-dependent margins, which reproduces the
  reference's variable padding exactly.

The bilinear sampler is a gather, so gradients w.r.t. the images exist to any order (G's loss and
the R1 penalty flow through the pipe). Samples that no transformation touched are passed through
with `tf.where`, and stages that touch no sample are skipped with `tf.cond`, so p = 0 returns the
input bit for bit. All randomness is stateless (sg2ada.ops.random, Philox) from the int32 [2] seed
given per call; each draw has its own fixed sub-seed, so enabling one op does not change the draws
of another. Given the samples' global positions in a batch (`sample_index`, `num_samples`), every
draw of a sample is its row of one draw for the whole batch, so a sample is augmented the same way
on whichever replica and in whichever accumulation round it is processed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from sg2ada.augment import filters
from sg2ada.errors import UserError
from sg2ada.ops.random import fold_in_many, per_sample_normal, per_sample_uniform, stateless_normal, stateless_uniform

# Probability multipliers of each preset (the paper's pipelines, Fig. 4/5 and App. B).
_BLIT = {"xflip": 1, "rotate90": 1, "xint": 1}
_GEOM = {"scale": 1, "rotate": 1, "aniso": 1, "xfrac": 1}
_COLOR = {"brightness": 1, "contrast": 1, "lumaflip": 1, "hue": 1, "saturation": 1}
PRESETS: dict[str, dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "filter": {"imgfilter": 1},
    "noise": {"noise": 1},
    "cutout": {"cutout": 1},
    "bg": dict(**_BLIT, **_GEOM),
    "bgc": dict(**_BLIT, **_GEOM, **_COLOR),
    "bgcf": dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    "bgcfn": dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    "bgcfnc": dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}
DEFAULT_PRESET = "bgc"

# Probability multipliers, in execution order.
OPS = (
    "xflip", "rotate90", "xint",
    "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation",
    "imgfilter",
    "noise", "cutout",
)  # fmt: skip
GEOMETRIC_OPS = OPS[:7]
COLOR_OPS = OPS[7:12]

# Strength settings (the paper's defaults).
DEFAULT_SETTINGS: dict[str, Any] = {
    "xint_max": 0.125,  # range of integer translation, relative to image size
    "scale_std": 0.2,  # log2 std of isotropic scaling
    "rotate_max": 1.0,  # range of arbitrary rotation, 1 = full circle
    "aniso_std": 0.2,  # log2 std of anisotropic scaling
    "xfrac_std": 0.125,  # std of fractional translation, relative to image size
    "brightness_std": 0.2,
    "contrast_std": 0.5,  # log2
    "hue_max": 1.0,  # 1 = full circle
    "saturation_std": 1.0,  # log2
    "imgfilter_bands": (1.0, 1.0, 1.0, 1.0),  # per-band probability multipliers
    "imgfilter_std": 1.0,  # log2 std of band amplification
    "noise_std": 0.1,
    "cutout_size": 0.5,  # relative to image size
}

# Sub-seed keys of every random draw (fixed, so draws do not depend on which ops are enabled).
_KEYS = {
    name: i
    for i, name in enumerate(
        [
            "xflip", "xflip_gate", "rotate90", "rotate90_gate", "xint", "xint_gate",
            "scale", "scale_gate", "rotate_pre", "rotate_pre_gate", "aniso", "aniso_gate",
            "rotate_post", "rotate_post_gate", "xfrac", "xfrac_gate",
            "brightness", "brightness_gate", "contrast", "contrast_gate", "lumaflip", "lumaflip_gate",
            "hue", "hue_gate", "saturation", "saturation_gate",
            "imgfilter0", "imgfilter0_gate", "imgfilter1", "imgfilter1_gate",
            "imgfilter2", "imgfilter2_gate", "imgfilter3", "imgfilter3_gate",
            "noise", "noise_gate", "noise_pixels", "cutout_gate", "cutout_center",
        ]
    )
}  # fmt: skip

_HZ_PAD = len(filters.SYM6) // 4  # low-res pixels of filter support on each side of the output
_ALG = "philox"  # pinned so that XLA and non-XLA runs draw the same numbers


def _exp2(x):
    return tf.pow(2.0, x)


# ----------------------------------------------------------------------------------------------
# Batched matrix helpers (elements are [N] tensors or Python numbers).


def _matrix(rows, n):
    shape = tf.reshape(n, [1])  # one shape for all elements: a matrix is a few hundred graph ops otherwise
    elems = [tf.broadcast_to(tf.cast(e, tf.float32), shape) if tf.is_tensor(e) else tf.fill(shape, float(e))
             for row in rows for e in row]
    return tf.reshape(tf.stack(elems, axis=-1), [n, len(rows), len(rows[0])])


def _translate2d(tx, ty, n):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n)


def _scale2d(sx, sy, n):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n)


def _rotate2d(cos, sin, n):
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], n)


def _translate3d(tx, ty, tz, n):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], n)


def _scale3d(sx, sy, sz, n):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], n)


def _rotate3d(v, theta, n):
    vx, vy, vz = (float(a) for a in v[:3])
    s = tf.sin(theta)
    c = tf.cos(theta)
    cc = 1 - c
    return _matrix(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        n,
    )


# ----------------------------------------------------------------------------------------------
# Gather-based bilinear sampler.


def bilinear_sample(images: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Sample NHWC `images` at pixel-index coordinates x, y ([N, Ho, Wo]); zeros outside.

    Pixel centres are at integer coordinates (this is grid_sample with align_corners=False once the
    normalised coordinates are converted). Built from a gather, so that the result has gradients of
    any order w.r.t. `images` (the coordinates are treated as constants).
    """
    # A one-pixel zero border makes every out-of-range corner read a zero.
    return _bilinear_sample_bordered(tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]]), x, y)


def _bilinear_sample_bordered(padded: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """`bilinear_sample` of the interior of `padded`, whose outermost rows and columns are zeros.

    The pipe builds that border into its upsampling matrices, which saves a pad of the largest
    tensor of the pipe and the crop of its gradient.

    Four gathers of whole pixels (one per corner) summed with per-point weights. Stacking the four
    corners into one gather and one weighted reduction did the same work 1.7x slower on CPU (the
    stacks interleave along an inner axis; session 15). The lower corner is clipped into
    [-1, size - 1], so the upper one is always inside the bordered image; where the clip moved a
    corner, both corners of that axis lie on or beyond the zero border, so that axis's weights are
    zeroed instead.

    The gradient is our own: TF's gather gradient sums [rows, C] slices with an unsorted segment sum
    that is slow for C = 3 on CPU; summing channel-flattened scalars is faster (session 2: the pipe's
    backward pass 1.5x). It is itself made of differentiable ops (its gradient is a gather), so R1's
    second-order gradient through the pipe exists.
    """
    n = tf.shape(padded)[0]
    hp, wp, c = (int(d) for d in padded.shape[1:])
    h, w = hp - 2, wp - 2
    dt = padded.dtype
    x = tf.cast(x, dt)
    y = tf.cast(y, dt)
    x0 = tf.floor(x)
    y0 = tf.floor(y)
    vx = tf.cast((x0 >= -1) & (x0 <= w - 1), dt)
    vy = tf.cast((y0 >= -1) & (y0 <= h - 1), dt)
    wx1 = (x - x0) * vx
    wy1 = (y - y0) * vy
    wx0, wy0 = vx - wx1, vy - wy1
    xi = tf.cast(tf.clip_by_value(x0, -1.0, float(w - 1)), tf.int32) + 1
    yi = tf.cast(tf.clip_by_value(y0, -1.0, float(h - 1)), tf.int32) + 1
    i00 = tf.reshape(tf.range(n, dtype=tf.int32) * (hp * wp), [-1, 1, 1]) + yi * wp + xi  # [N, Ho, Wo]
    corners = (i00, i00 + 1, i00 + wp, i00 + (wp + 1))
    weights = tuple(a[..., None] for a in (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1))  # [N, Ho, Wo, 1]

    def forward(img):
        flat = tf.reshape(img, [-1, c])
        return tf.add_n([tf.gather(flat, i) * a for i, a in zip(corners, weights)])

    if filters.in_xla_context():
        # XLA needs the segment count at compile time, and the batch may be dynamic: TF's own gradient.
        return forward(padded)

    @tf.custom_gradient
    def sample(img):
        out = forward(img)

        def grad(dy):
            # Stacked along a new leading axis: contiguous copies, not an inner-axis interleave.
            data = dy[None] * tf.stack(weights)  # [4, N, Ho, Wo, C]
            slots = tf.stack(corners)[..., None] * c + tf.range(c, dtype=tf.int32)  # scalar slot of each value
            g = tf.math.unsorted_segment_sum(tf.reshape(data, [-1]), tf.reshape(slots, [-1]), n * (hp * wp * c))
            return tf.reshape(g, [n, hp, wp, c])

        return out, grad

    return sample(padded)


# ----------------------------------------------------------------------------------------------


class AugmentPipe:
    """ADA augmentation pipeline. `pipe(images, p, seed)` -> augmented images (same shape, dtype).

    AugmentPipe("bgc")                  a preset (blit geom color filter noise cutout bg bgc bgcf
                                        bgcfn bgcfnc)
    AugmentPipe(xflip=1, rotate90=1)    explicit probability multipliers (others 0)
    AugmentPipe("bgc", hue=0, noise_std=0.05)   a preset with overrides

    images: NHWC float in [-1, 1] with 1 or 3 channels (static H, W, C; the batch may be dynamic).
    p: scalar augmentation probability (Python number, tensor or variable).
    seed: int32 [2] stateless seed.
    sample_index, num_samples: optional; int [N] global positions of the images in a batch of
    num_samples that is processed in parts (replicas, accumulation rounds) with the same seed. Each
    image then gets the augmentation of its position, independent of the split. Without them the
    batch is the whole batch (sample_index = range(N)).
    """

    def __init__(self, preset: str | None = None, *, pad_buckets=(0.25, 0.5), **kwargs):
        if preset is not None and preset not in PRESETS:
            raise UserError(f"unknown augmentation pipe '{preset}' (--augpipe): choose one of {', '.join(PRESETS)}")
        spec = dict(PRESETS[preset]) if preset is not None else {}
        unknown = sorted(set(kwargs) - set(OPS) - set(DEFAULT_SETTINGS))
        if unknown:
            raise UserError(
                f"unknown AugmentPipe option(s) {', '.join(unknown)}: use op multipliers ({', '.join(OPS)}) "
                f"or settings ({', '.join(DEFAULT_SETTINGS)})"
            )
        spec.update(kwargs)
        self.preset = preset
        self.multipliers = {op: float(spec.get(op, 0.0)) for op in OPS}
        for op, m in self.multipliers.items():
            if not (m >= 0 and math.isfinite(m)):
                raise UserError(f"AugmentPipe option {op}={m}: probability multipliers must be finite and >= 0")
        self.settings = {k: spec.get(k, v) for k, v in DEFAULT_SETTINGS.items()}
        self.settings["imgfilter_bands"] = tuple(float(b) for b in self.settings["imgfilter_bands"])
        if len(self.settings["imgfilter_bands"]) != 4:
            raise UserError("AugmentPipe option imgfilter_bands: give exactly 4 band multipliers")
        self.pad_buckets = tuple(float(f) for f in pad_buckets)
        self._geom_f = filters.geom_filter()
        self._fbank = filters.imgfilter_bank(4)

    def __getattr__(self, name):
        # Read access to multipliers and settings as attributes (pipe.xflip, pipe.scale_std).
        d = self.__dict__
        if name in d.get("multipliers", {}):
            return d["multipliers"][name]
        if name in d.get("settings", {}):
            return d["settings"][name]
        raise AttributeError(name)

    def get_config(self) -> dict:
        return dict(preset=self.preset, **self.multipliers, **self.settings)

    def __repr__(self):
        on = ", ".join(f"{k}={v:g}" for k, v in self.multipliers.items() if v > 0)
        return f"AugmentPipe({on})"

    # ------------------------------------------------------------------------------------------
    # Parameter selection.

    def sample_params(self, batch, p, seed, height: int, width: int, channels: int, sample_index=None,
                      num_samples=None) -> dict:
        """Draw every random parameter for a batch (see `__call__` for sample_index and num_samples).
        Returns a dict of tensors (float32 unless noted):

        gates/<op>: bool [N], whether the op is applied to each sample (rotate: pre OR post);
        G_inv [N,3,3] (output pixel -> input pixel, centred coordinates); blit_only bool [N] and
        general bool [N]; C [N,4,4] colour matrix, color bool [N]; filter_gains [N,4], filter bool
        [N]; noise_sigma [N]; cutout_size [N], cutout_center [N,2].
        """
        n = batch
        p = tf.cast(tf.convert_to_tensor(p), tf.float32)
        seed = tf.convert_to_tensor(seed, dtype=tf.int32)
        m = self.multipliers
        s = self.settings
        zeros_b = tf.zeros([n], tf.bool)

        fold_in = fold_in_many(seed, alg=_ALG)

        def sub(key):
            return fold_in(_KEYS[key])

        def uniform(key, shape):
            if sample_index is None:
                return stateless_uniform(shape, sub(key))
            return per_sample_uniform(sub(key), sample_index, num_samples, shape[1:])

        def normal(key, shape):
            if sample_index is None:
                return stateless_normal(shape, sub(key))
            return per_sample_normal(sub(key), sample_index, num_samples, shape[1:])

        def gate(key, prob):
            return uniform(key + "_gate", [n]) < prob

        out: dict[str, Any] = {"gates": {}}
        gates = out["gates"]

        # Pixel blitting.
        G = tf.eye(3, batch_shape=[n])
        blit = zeros_b
        odd_rot90 = zeros_b
        if m["xflip"] > 0:
            g = gate("xflip", m["xflip"] * p)
            i = tf.where(g, tf.floor(uniform("xflip", [n]) * 2), 0.0)
            G = G @ _scale2d(1 - 2 * i, 1, n)
            gates["xflip"] = g
            blit = blit | g
        if m["rotate90"] > 0:
            g = gate("rotate90", m["rotate90"] * p)
            i = tf.where(g, tf.floor(uniform("rotate90", [n]) * 4), 0.0)
            k = tf.cast(i, tf.int32)
            # Exact cos/sin of multiples of 90 degrees, so that the composite stays an exact blit.
            cos = tf.gather([1.0, 0.0, -1.0, 0.0], k)
            sin = tf.gather([0.0, 1.0, 0.0, -1.0], k)
            G = G @ _rotate2d(cos, sin, n)  # inverse of a rotation by -90*i degrees
            gates["rotate90"] = g
            blit = blit | g
            odd_rot90 = tf.equal(k % 2, 1)
        if m["xint"] > 0:
            g = gate("xint", m["xint"] * p)
            t = (uniform("xint", [n, 2]) * 2 - 1) * s["xint_max"]
            t = tf.where(g[:, None], t, 0.0)
            G = G @ _translate2d(-tf.round(t[:, 0] * width), -tf.round(t[:, 1] * height), n)
            gates["xint"] = g
            blit = blit | g

        # General geometric transformations.
        general = zeros_b
        if m["scale"] > 0:
            g = gate("scale", m["scale"] * p)
            sc = tf.where(g, _exp2(normal("scale", [n]) * s["scale_std"]), 1.0)
            G = G @ _scale2d(1 / sc, 1 / sc, n)
            gates["scale"] = g
            general = general | g
        # Pre- and post-rotation each with p_rot, so that P(pre OR post) = rotate * p.
        p_rot = 1 - tf.sqrt(tf.clip_by_value(1 - m["rotate"] * p, 0.0, 1.0))
        rot_any = zeros_b
        if m["rotate"] > 0:
            g = gate("rotate_pre", p_rot)
            theta = tf.where(g, (uniform("rotate_pre", [n]) * 2 - 1) * np.pi * s["rotate_max"], 0.0)
            G = G @ _rotate2d(tf.cos(theta), tf.sin(theta), n)
            rot_any = rot_any | g
        if m["aniso"] > 0:
            g = gate("aniso", m["aniso"] * p)
            sc = tf.where(g, _exp2(normal("aniso", [n]) * s["aniso_std"]), 1.0)
            G = G @ _scale2d(1 / sc, sc, n)
            gates["aniso"] = g
            general = general | g
        if m["rotate"] > 0:
            g = gate("rotate_post", p_rot)
            theta = tf.where(g, (uniform("rotate_post", [n]) * 2 - 1) * np.pi * s["rotate_max"], 0.0)
            G = G @ _rotate2d(tf.cos(theta), tf.sin(theta), n)
            rot_any = rot_any | g
            gates["rotate"] = rot_any
            general = general | rot_any
        if m["xfrac"] > 0:
            g = gate("xfrac", m["xfrac"] * p)
            t = tf.where(g[:, None], normal("xfrac", [n, 2]) * s["xfrac_std"], 0.0)
            G = G @ _translate2d(-t[:, 0] * width, -t[:, 1] * height, n)
            gates["xfrac"] = g
            general = general | g
        if height != width:
            # A quarter turn of a non-square image does not map pixel centres onto pixel centres.
            general = general | (blit & odd_rot90)
        out.update(G_inv=G, blit_only=blit & ~general, general=general)

        # Colour transformations (C @ [r, g, b, 1]).
        C = tf.eye(4, batch_shape=[n])
        color = zeros_b
        v = np.array([1.0, 1.0, 1.0, 0.0]) / np.sqrt(3)  # luma axis
        vv = tf.constant(np.outer(v, v), tf.float32)
        eye4 = tf.eye(4)
        if m["brightness"] > 0:
            g = gate("brightness", m["brightness"] * p)
            b = tf.where(g, normal("brightness", [n]) * s["brightness_std"], 0.0)
            C = _translate3d(b, b, b, n) @ C
            gates["brightness"] = g
            color = color | g
        if m["contrast"] > 0:
            g = gate("contrast", m["contrast"] * p)
            c = tf.where(g, _exp2(normal("contrast", [n]) * s["contrast_std"]), 1.0)
            C = _scale3d(c, c, c, n) @ C
            gates["contrast"] = g
            color = color | g
        if m["lumaflip"] > 0:
            g = gate("lumaflip", m["lumaflip"] * p)
            i = tf.where(g, tf.floor(uniform("lumaflip", [n]) * 2), 0.0)
            C = (eye4 - 2 * vv * i[:, None, None]) @ C  # Householder reflection across the luma axis
            gates["lumaflip"] = g
            color = color | g
        if m["hue"] > 0 and channels > 1:
            g = gate("hue", m["hue"] * p)
            theta = tf.where(g, (uniform("hue", [n]) * 2 - 1) * np.pi * s["hue_max"], 0.0)
            C = _rotate3d(v, theta, n) @ C  # rotation around the luma axis
            gates["hue"] = g
            color = color | g
        if m["saturation"] > 0 and channels > 1:
            g = gate("saturation", m["saturation"] * p)
            sat = tf.where(g, _exp2(normal("saturation", [n]) * s["saturation_std"]), 1.0)
            C = (vv + (eye4 - vv) * sat[:, None, None]) @ C
            gates["saturation"] = g
            color = color | g
        out.update(C=C, color=color)

        # Image-space filtering: random gain per band, energy kept constant.
        gains = tf.ones([n, 4])
        filt = zeros_b
        if m["imgfilter"] > 0:
            expected = tf.constant(filters.IMGFILTER_EXPECTED_POWER, tf.float32)
            for i, band_strength in enumerate(s["imgfilter_bands"]):
                if band_strength <= 0:
                    continue
                g = gate(f"imgfilter{i}", m["imgfilter"] * p * band_strength)
                t_i = tf.where(g, _exp2(normal(f"imgfilter{i}", [n]) * s["imgfilter_std"]), 1.0)
                t = 1 + (t_i[:, None] - 1) * tf.one_hot(i, 4)  # ones with element i replaced
                t = t / tf.sqrt(tf.reduce_sum(expected * tf.square(t), axis=-1, keepdims=True))
                gains = gains * t
                gates[f"imgfilter{i}"] = g
                filt = filt | g
            gates["imgfilter"] = filt
        out.update(filter_gains=gains, filter=filt)

        # Corruptions.
        sigma = tf.zeros([n])
        if m["noise"] > 0:
            g = gate("noise", m["noise"] * p)
            sigma = tf.where(g, tf.abs(normal("noise", [n])) * s["noise_std"], 0.0)
            gates["noise"] = g
        cut_size = tf.zeros([n])
        cut_center = tf.zeros([n, 2])
        if m["cutout"] > 0:
            g = gate("cutout", m["cutout"] * p)
            cut_size = tf.where(g, tf.cast(s["cutout_size"], tf.float32), 0.0)
            cut_center = uniform("cutout_center", [n, 2])
            gates["cutout"] = g
        out.update(
            noise_sigma=sigma,
            noise_seed=sub("noise_pixels"),
            noise=gates.get("noise", zeros_b),
            cutout_size=cut_size,
            cutout_center=cut_center,
            cutout=gates.get("cutout", zeros_b),
        )
        return out

    # ------------------------------------------------------------------------------------------
    # Execution.

    def __call__(self, images, p, seed, sample_index=None, num_samples=None):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError(f"AugmentPipe expects NHWC images, got shape {images.shape}")
        h, w, c = (int(d) if d is not None else None for d in images.shape[1:])
        if None in (h, w, c):
            raise ValueError(f"AugmentPipe needs static height, width and channels, got {images.shape}")
        uses_color = any(self.multipliers[k] > 0 for k in COLOR_OPS)
        if uses_color and c not in (1, 3):
            raise UserError(
                f"colour augmentations need 1 (L) or 3 (RGB) channels, the images have {c}: "
                "use an augmentation pipe without colour ops (e.g. --augpipe bg)"
            )
        if (sample_index is None) != (num_samples is None):
            raise ValueError("AugmentPipe: give both sample_index and num_samples, or neither")
        n = tf.shape(images)[0]
        prm = self.sample_params(n, p, seed, h, w, c, sample_index, num_samples)

        if any(self.multipliers[k] > 0 for k in GEOMETRIC_OPS):
            images = self._run_geometric(images, prm)
        if uses_color:
            images = _masked(prm["color"], images, lambda x: self._run_color(x, prm["C"]))
        if self.multipliers["imgfilter"] > 0:
            images = _masked(prm["filter"], images, lambda x: self._run_imgfilter(x, prm["filter_gains"]))
        if self.multipliers["noise"] > 0:
            images = _masked(prm["noise"], images, lambda x: _run_noise(x, prm["noise_sigma"], prm["noise_seed"],
                                                                           sample_index, num_samples))
        if self.multipliers["cutout"] > 0:
            images = _masked(prm["cutout"], images, lambda x: _run_cutout(x, prm["cutout_size"], prm["cutout_center"]))
        return images

    # Geometric ------------------------------------------------------------------------------

    def _run_geometric(self, images, prm):
        G = prm["G_inv"]
        touched = prm["blit_only"] | prm["general"]
        general = prm["general"]
        h, w = int(images.shape[1]), int(images.shape[2])
        if h == w and not any(self.multipliers[k] > 0 for k in GEOMETRIC_OPS[3:]):
            # Only pixel blits are possible: no resampling graph at all.
            return tf.cond(tf.reduce_any(touched), lambda: _blit(images, G), lambda: tf.identity(images))

        # One flat switch (no nested conds, whose gradients-of-gradients TF handles poorly):
        # 0 = untouched, 1 = blits only, 2 + k = resampling with padding bucket k.
        bucket, fns = self._resample_branches(images, G)

        def resample_fn(fn):
            return lambda: tf.where(general[:, None, None, None], fn(), _blit(images, G))

        branches = [lambda: tf.identity(images), lambda: _blit(images, G)] + [resample_fn(fn) for fn in fns]
        index = tf.where(
            tf.reduce_any(general), 2 + bucket, tf.where(tf.reduce_any(touched), 1, 0)
        )
        return tf.switch_case(index, branches)

    def _pad_sizes(self, size: int) -> list[int]:
        need = 2 * _HZ_PAD  # margin needed around an untransformed image
        cands = {min(size - 1, need + math.ceil(f * size)) for f in self.pad_buckets}
        cands.add(size - 1)
        return sorted(max(c, 0) for c in cands)

    def _resample(self, images, G):
        """Reference resampling of the whole batch with the composite matrices G ([N,3,3])."""
        bucket, fns = self._resample_branches(images, G)
        return fns[0]() if len(fns) == 1 else tf.switch_case(bucket, fns)

    def _resample_branches(self, images, G):
        """(index of the smallest padding bucket that fits, [resampling fn per bucket])."""
        h, w = int(images.shape[1]), int(images.shape[2])
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # Margins from the transformed corners, over the whole batch (as the reference does).
        corners = tf.constant([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy]], tf.float32)  # [xy, 4]
        cp = G[:, :2, :2] @ corners + G[:, :2, 2:]  # [N, xy, 4]
        cmax = tf.reduce_max(cp, axis=[0, 2])
        cmin = tf.reduce_min(cp, axis=[0, 2])
        slack = 2 * _HZ_PAD
        mx0 = tf.math.ceil(tf.clip_by_value(-cmin[0] + slack - cx, 0, w - 1))
        mx1 = tf.math.ceil(tf.clip_by_value(cmax[0] + slack - cx, 0, w - 1))
        my0 = tf.math.ceil(tf.clip_by_value(-cmin[1] + slack - cy, 0, h - 1))
        my1 = tf.math.ceil(tf.clip_by_value(cmax[1] + slack - cy, 0, h - 1))

        # Hi-res inverse matrix: 2x upsampling with the filter's half-sample offset.
        n = tf.shape(G)[0]
        G_hi = _translate2d(-0.5, -0.5, n) @ _scale2d(2, 2, n) @ G @ _scale2d(0.5, 0.5, n) @ _translate2d(0.5, 0.5, n)

        px_list, py_list = self._pad_sizes(w), self._pad_sizes(h)
        nb = max(len(px_list), len(py_list))
        px_list += [px_list[-1]] * (nb - len(px_list))
        py_list += [py_list[-1]] * (nb - len(py_list))
        fits = [
            tf.logical_and(tf.maximum(mx0, mx1) <= px, tf.maximum(my0, my1) <= py)
            for px, py in zip(px_list, py_list)
        ]
        # Index of the smallest bucket that fits (the last one always does).
        branch = nb - tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32))
        margins = (mx0, mx1, my0, my1)
        fns = [
            (lambda px=px, py=py: self._resample_padded(images, G_hi, margins, px, py))
            for px, py in zip(px_list, py_list)
        ]
        return branch, fns

    def _resample_padded(self, images, G_hi, margins, px, py):
        h, w = int(images.shape[1]), int(images.shape[2])
        dt = images.dtype
        if filters.use_dense(w) and filters.use_dense(h):
            # Reflect padding, zeroing beyond the margins and 2x upsampling are linear along each
            # axis: one matrix per axis (filters.upfirdn_1d says when and why matrices).
            x = filters.apply_along(images, self._up_matrix(w, px, margins[0], margins[1], dt), axis=2)
            x = filters.apply_along(x, self._up_matrix(h, py, margins[2], margins[3], dt), axis=1)  # zero border
        else:
            x = tf.pad(self._upsample_padded(images, margins, px, py), [[0, 0], [1, 1], [1, 1], [0, 0]])
        hi_h, hi_w = 2 * (h + 2 * py), 2 * (w + 2 * px)

        # Sample the output grid (H + 2*Hz_pad, W + 2*Hz_pad at low res, 2x that at high res).
        out_h, out_w = 2 * (h + 2 * _HZ_PAD), 2 * (w + 2 * _HZ_PAD)
        yc = tf.range(out_h, dtype=tf.float32) - (out_h - 1) / 2
        xc = tf.range(out_w, dtype=tf.float32) - (out_w - 1) / 2
        Gr = G_hi[:, :2, :, None, None]  # [N, 2, 3, 1, 1]
        xs = Gr[:, 0, 0] * xc[None, None, :] + Gr[:, 0, 1] * yc[None, :, None] + Gr[:, 0, 2] + (hi_w - 1) / 2
        ys = Gr[:, 1, 0] * xc[None, None, :] + Gr[:, 1, 1] * yc[None, :, None] + Gr[:, 1, 2] + (hi_h - 1) / 2
        x = _bilinear_sample_bordered(x, xs, ys)

        # 2x downsampling and crop back to H x W (the reference's downsample2d with padding -6).
        f = self._geom_f
        down_pad = (-2 * _HZ_PAD + (len(f) - 1) // 2, -2 * _HZ_PAD + (len(f) - 2) // 2)
        x = filters.upfirdn_1d(x, f, axis=2, down=2, pad=down_pad, flip_filter=True)
        return filters.upfirdn_1d(x, f, axis=1, down=2, pad=down_pad, flip_filter=True)

    def _upsample_padded(self, images, margins, px, py):
        """The long-axis form of `_up_matrix` applied to `images` (without the zero border): the same
        steps as separate ops, whose cost grows linearly with the size, not quadratically."""
        h, w = int(images.shape[1]), int(images.shape[2])
        dt = images.dtype
        keep_x, keep_hi_x = _margin_masks(w, px, margins[0], margins[1], dt)
        keep_y, keep_hi_y = _margin_masks(h, py, margins[2], margins[3], dt)
        x = filters.reflect_pad(images, (py, py), (px, px))
        x = x * keep_y[None, :, None, None] * keep_x[None, None, :, None]
        f = self._geom_f
        x = filters.upfirdn_1d(x, f, axis=2, up=2, pad=_up_pad(f), gain=2.0)
        x = filters.upfirdn_1d(x, f, axis=1, up=2, pad=_up_pad(f), gain=2.0)
        return x * keep_hi_y[None, :, None, None] * keep_hi_x[None, None, :, None]

    def _up_matrix(self, size, pad, m0, m1, dt):
        """[2 (size + 2 pad) + 2, size]: reflect-pad by `pad`, zero beyond the batch's margins m0/m1,
        upsample 2x, zero the upsampled image beyond them too (`_margin_masks`), and add the
        one-sample zero border `_bilinear_sample_bordered` wants."""
        f = self._geom_f
        U = tf.constant(filters.upfirdn_matrix(size + 2 * pad, f, up=2, pad=_up_pad(f), gain=2.0), dt)
        R = tf.constant(filters.reflect_matrix(size, pad, pad), dt)
        keep, keep_hi = _margin_masks(size, pad, m0, m1, dt)
        return tf.pad((keep_hi[:, None] * U) @ (keep[:, None] * R), [[1, 1], [0, 0]])

    # Colour -------------------------------------------------------------------------------------

    @staticmethod
    def _run_color(x, C):
        n = tf.shape(x)[0]
        h, w, c = (int(d) for d in x.shape[1:])
        C = tf.cast(C, x.dtype)
        if c == 3:
            flat = tf.reshape(x, [n, h * w, 3])
            out = tf.matmul(flat, C[:, :3, :3], transpose_b=True) + C[:, None, :3, 3]
            return tf.reshape(out, [n, h, w, 3])
        # Luminance images: the average of the RGB rows acting on a grey pixel.
        Cm = tf.reduce_mean(C[:, :3, :], axis=1)  # [N, 4]
        scale = tf.reduce_sum(Cm[:, :3], axis=1)
        return x * scale[:, None, None, None] + Cm[:, 3, None, None, None]

    # Image-space filtering --------------------------------------------------------------------

    def _run_imgfilter(self, x, gains):
        h, w = int(x.shape[1]), int(x.shape[2])
        bank = self._fbank  # [4, taps], symmetric rows, so correlation == convolution
        taps = bank.shape[1]
        pad = taps // 2
        # Per-sample separable filter g @ bank, applied along W then H as a sum of shifted slices
        # (fast with and without XLA; XLA's CPU depthwise convolutions are slow).
        k = tf.cast(gains, x.dtype) @ tf.constant(bank, x.dtype)  # [N, taps]
        k = k[:, :, None, None, None]
        x = filters.reflect_pad(x, (pad, pad), (pad, pad))
        x = tf.add_n([x[:, :, t : t + w] * k[:, t] for t in range(taps)])
        return tf.add_n([x[:, t : t + h] * k[:, t] for t in range(taps)])


def _up_pad(f):
    """Padding of the reference's 2x upsample2d with filter f along one axis ([6, 5] for sym6)."""
    return ((len(f) + 1) // 2, (len(f) - 2) // 2)


def _margin_masks(size, pad, m0, m1, dt):
    """0/1 vectors over an axis reflect-padded by the static `pad` ([size + 2 pad]) and over its 2x
    upsampling: 1 within the batch's data-dependent margins m0/m1. The reference pads by exactly
    the margins, and its upsampled image ends where its padding ends (outside it samples zeros)."""
    m0, m1 = tf.cast(m0, dt), tf.cast(m1, dt)
    r = tf.range(size + 2 * pad, dtype=dt)
    keep = tf.cast((r >= pad - m0) & (r < pad + size + m1), dt)
    r = tf.range(2 * (size + 2 * pad), dtype=dt)
    keep_hi = tf.cast((r >= 2 * (pad - m0)) & (r < 2 * (pad + size + m1)), dt)
    return keep, keep_hi


def _masked(active, images, fn):
    """Apply fn to the batch but keep samples with active=False untouched (bit for bit)."""

    def run():
        return tf.where(active[:, None, None, None], fn(images), images)

    return tf.cond(tf.reduce_any(active), run, lambda: tf.identity(images))


def _blit(images, G):
    """Exact pixel gather for matrices that map pixel centres onto pixel centres; reflect at borders."""
    n = tf.shape(images)[0]
    h, w, c = (int(d) for d in images.shape[1:])
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xc = tf.range(w, dtype=tf.float32)[None, None, :] - cx
    yc = tf.range(h, dtype=tf.float32)[None, :, None] - cy
    Gr = G[:, :2, :, None, None]
    ix = tf.cast(tf.round(Gr[:, 0, 0] * xc + Gr[:, 0, 1] * yc + Gr[:, 0, 2] + cx), tf.int32)
    iy = tf.cast(tf.round(Gr[:, 1, 0] * xc + Gr[:, 1, 1] * yc + Gr[:, 1, 2] + cy), tf.int32)

    def reflect(i, size):
        if size == 1:
            return tf.zeros_like(i)
        period = 2 * (size - 1)
        i = tf.math.floormod(i, period)
        return tf.where(i >= size, period - i, i)

    ix, iy = reflect(ix, w), reflect(iy, h)
    idx = tf.reshape(tf.range(n, dtype=tf.int32), [-1, 1, 1]) * (h * w) + iy * w + ix
    return tf.gather(tf.reshape(images, [-1, c]), idx)


def _run_noise(x, sigma, seed, sample_index, num_samples):
    if sample_index is None:
        noise = stateless_normal(tf.shape(x), seed)
    else:
        noise = per_sample_normal(seed, sample_index, num_samples, x.shape[1:])
    return x + tf.cast(noise * sigma[:, None, None, None], x.dtype)


def _run_cutout(x, size, center):
    h, w = int(x.shape[1]), int(x.shape[2])
    cx = (tf.range(w, dtype=tf.float32) + 0.5) / w
    cy = (tf.range(h, dtype=tf.float32) + 0.5) / h
    mask_x = tf.abs(cx[None, None, :] - center[:, 0, None, None]) >= size[:, None, None] / 2
    mask_y = tf.abs(cy[None, :, None] - center[:, 1, None, None]) >= size[:, None, None] / 2
    mask = tf.cast(mask_x | mask_y, x.dtype)
    return x * mask[..., None]
