"""Upsample, pad, FIR-filter and downsample a batch of NHWC images, in pure TensorFlow.

This is the resampling primitive of StyleGAN2 (Karras et al. 2020, Sec. 4 and Appendix B: the
[1,3,3,1] low-pass filter used for every up/down-sampling) and of the ADA augmentation pipeline
(Karras et al. 2020b, Appendix C: the wavelet filters for geometric augmentations). Semantics are
those of NVIDIA's stylegan2-ada-pytorch `torch_utils/ops/upfirdn2d.py` (`setup_filter`,
`upfirdn2d`, `filter2d`, `upsample2d`, `downsample2d`), translated from NCHW to NHWC; the padding
order stays NVIDIA's `[padx0, padx1, pady0, pady1]` (x = width first).

For every channel independently, `upfirdn2d` does:
  1. upsample by inserting `up - 1` zeros after each pixel,
  2. pad with zeros (negative padding crops),
  3. convolve with the filter `f` (true convolution, i.e. `f` flipped; correlation if
     `flip_filter`), keeping only outputs whose footprint lies inside the padded image,
  4. downsample by keeping every `down`-th pixel.

Implementation notes (why it looks the way it does):
- The filter is almost always a constant (numpy array or a `setup_filter` tensor). We read its
  value at trace time so that we can (a) detect a separable (rank-1) 2-D filter and filter with
  1-D passes where that is cheaper, and (b) bake the taps in as constants. A filter that is only
  known at run time (e.g. a graph input) falls back to a generic path that builds the depthwise
  kernel with TF ops. Pass filters as numpy arrays or constants, not as Keras variables.
- Two interchangeable filtering back-ends, same values (`set_fir_impl`):
  'depthwise': `tf.nn.depthwise_conv2d` (one kernel per channel, no per-channel Python loops);
  fast in TF's CPU (oneDNN) and GPU kernels. Small filters go in one 2-D pass, long separable
  ones in two 1-D passes. Downsampling is folded into the stride whenever the x and y factors
  are equal (the only case TF's depthwise kernels accept on every device).
  'slices': a weighted sum of shifted, strided slices, one term per tap; XLA fuses it into one
  loop, which is 40-60x faster than XLA's CPU lowering of depthwise convolutions, and only the
  kept (downsampled) outputs are computed. Upsampling there is polyphase: each output phase is
  the input filtered with the taps that meet real pixels, then the phases are interleaved, so
  no zeros are inserted or multiplied. 'auto' (default) picks 'slices' while tracing under
  `tf.function(jit_compile=True)` and 'depthwise' otherwise.
- float16/bfloat16 images are filtered in float32 and rounded once at the end on CPU (TF's CPU half
  depthwise kernel accumulates in half precision; see `sg2ada.ops.precision`), and always in the
  'slices' form, whose casts XLA fuses for free.
- Only built-in TF ops are used, so every function works inside `tf.function(jit_compile=True)` and
  can be differentiated twice (R1 and path-length regularisation need that).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from sg2ada.ops.precision import REDUCED, compute_in_float32

__all__ = ["setup_filter", "upfirdn2d", "filter2d", "upsample2d", "downsample2d", "get_filter_size", "set_fir_impl"]


# ---------------------------------------------------------------------------------------------
# Argument parsing (NVIDIA's conventions).


def _parse_scaling(scaling):
    if isinstance(scaling, (int, np.integer)):
        scaling = [int(scaling), int(scaling)]
    if not isinstance(scaling, (list, tuple)) or len(scaling) != 2:
        raise ValueError(f"up/down must be an int or [x, y], got {scaling!r}")
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding):
    if isinstance(padding, (int, np.integer)):
        padding = [int(padding), int(padding)]
    if not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4):
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}")
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    return tuple(padding)


def _static_value(f):
    """The value of filter `f` as a float32 numpy array if it is known at trace time, else None."""
    if f is None:
        return None
    if isinstance(f, (np.ndarray, list, tuple, float, int)):
        return np.asarray(f, dtype=np.float32)
    try:
        v = tf.get_static_value(f)
    except (TypeError, ValueError, NotImplementedError):
        v = None
    if v is None and tf.executing_eagerly() and hasattr(f, "numpy"):
        v = f.numpy()
    return None if v is None else np.asarray(v, dtype=np.float32)


def get_filter_size(f):
    """(fw, fh) of a filter as prepared by `setup_filter` (1-D = separable, same taps on both axes)."""
    if f is None:
        return 1, 1
    shape = f.shape if hasattr(f, "shape") else np.shape(f)
    shape = [int(s) for s in shape]
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise ValueError(f"filter must be 1-D (separable) or 2-D [fh, fw], got shape {shape}")
    return shape[-1], shape[0]


# ---------------------------------------------------------------------------------------------
# Filter preparation.


def setup_filter(f, normalize=True, flip_filter=False, gain=1, separable=None):
    """Prepare a 2-D FIR filter for `upfirdn2d` (NVIDIA's `upfirdn2d.setup_filter`).

    f: list/array/tensor of shape [fh, fw] (non-separable), [taps] (separable), [] (impulse) or
    None (identity). A 1-D filter becomes its outer product unless `separable` (default: only for
    8 or more taps, as NVIDIA). `normalize` divides by the sum (unit DC gain); `gain` scales the
    overall magnitude (each axis of a separable filter gets sqrt(gain)). Returns float32 tf.Tensor.
    """
    if f is None:
        f = 1
    f = _static_value(f)
    if f is None:
        raise ValueError("setup_filter needs a filter whose value is known (list, numpy or eager tensor)")
    f = np.array(f, dtype=np.float32)
    if f.ndim not in (0, 1, 2) or f.size == 0:
        raise ValueError(f"filter must be a scalar, 1-D or 2-D and non-empty, got shape {f.shape}")
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = f.ndim == 1 and f.size >= 8
    if f.ndim == 1 and not separable:
        f = np.outer(f, f).astype(np.float32)
    if f.ndim != (1 if separable else 2):
        raise ValueError(f"a 2-D filter cannot be made separable (shape {f.shape})")
    if normalize:
        f = f / f.sum(dtype=np.float32)
    if flip_filter:
        f = np.flip(f, axis=tuple(range(f.ndim)))
    f = f * np.float32(gain ** (f.ndim / 2))
    return tf.constant(np.ascontiguousarray(f, dtype=np.float32))


def _factor_separable(f2):
    """Split a rank-1 2-D filter into (fy, fx) with outer(fy, fx) == f2, or return None."""
    fh, fw = f2.shape
    if fh == 1:
        return np.ones([1]), f2[0, :].astype(np.float64)
    if fw == 1:
        return f2[:, 0].astype(np.float64), np.ones([1])
    i, j = np.unravel_index(np.argmax(np.abs(f2)), f2.shape)
    pivot = f2[i, j]
    if pivot == 0:
        return None
    fy = f2[:, j].astype(np.float64)
    fx = f2[i, :].astype(np.float64) / float(pivot)
    recon = np.outer(fy, fx)
    if not np.allclose(recon, f2, rtol=1e-6, atol=1e-7 * float(np.abs(f2).max())):
        return None
    return fy, fx


# ---------------------------------------------------------------------------------------------
# Shape helpers (static where known, so XLA sees static shapes).


def _dims(x):
    static = x.shape.as_list()
    dynamic = None
    out = []
    for i, s in enumerate(static):
        if s is None:
            if dynamic is None:
                dynamic = tf.shape(x)
            s = dynamic[i]
        out.append(s)
    return out


def _zero_insert(x, upx, upy):
    """Insert up-1 zeros after every pixel along W (upx) and H (upy): [N,H,W,C] -> [N,H*upy,W*upx,C].

    One pad of a 4-D view, so that TFLite converts it to builtin ops (its PAD/RESHAPE take at most
    4-D here; a 6-D pad needed the Flex delegate): [N*H, 1, W, C] padded to [N*H, upy, W, upx*C]
    lays the values out as [N, H, upy, W, upx, C], i.e. [N, H*upy, W*upx, C] with each pixel at
    (upy*h, upx*w) and zeros elsewhere. The zero columns come from padding the channel axis, so
    the channel count must be static (it always is for our networks and augmentations); a dynamic
    one falls back to two single-axis inserts.
    """
    if upx == 1 and upy == 1:
        return x
    n, h, w, c = _dims(x)
    if isinstance(c, tf.Tensor):
        x = tf.reshape(x, [n * h, w, 1, c])
        x = tf.pad(x, [[0, 0], [0, 0], [0, upx - 1], [0, 0]])
        x = tf.reshape(x, [n, h, 1, w * upx * c])
        x = tf.pad(x, [[0, 0], [0, 0], [0, upy - 1], [0, 0]])
        return tf.reshape(x, [n, h * upy, w * upx, c])
    x = tf.reshape(x, [n * h, 1, w, c])
    x = tf.pad(x, [[0, 0], [0, upy - 1], [0, 0], [0, (upx - 1) * c]])
    return tf.reshape(x, [n, h * upy, w * upx, c])


def _pad_crop(x, px0, px1, py0, py1):
    if max(px0, px1, py0, py1) > 0:
        x = tf.pad(x, [[0, 0], [max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)], [0, 0]])
    if min(px0, px1, py0, py1) < 0:
        _, h, w, _ = _dims(x)
        x = x[:, max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0), :]
    return x


def _depthwise(x, k2, sy, sx):
    """Correlate every channel of x with the 2-D kernel k2 ([kh, kw] numpy or tensor), stride (sy, sx)."""
    c = x.shape[-1]
    if isinstance(k2, np.ndarray):
        if c is None:
            k = tf.tile(tf.constant(k2[:, :, None, None], dtype=x.dtype), [1, 1, tf.shape(x)[-1], 1])
        else:
            k = tf.constant(np.tile(k2[:, :, None, None], [1, 1, c, 1]), dtype=x.dtype)
    else:
        k = tf.cast(k2, x.dtype)[:, :, None, None]
        k = tf.tile(k, [1, 1, c if c is not None else tf.shape(x)[-1], 1])
    if sx == sy:
        return tf.nn.depthwise_conv2d(x, k, [1, sy, sx, 1], "VALID")
    # TF's depthwise kernels only take equal strides on all devices: stride 1, then subsample.
    y = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "VALID")
    return y[:, ::sy, ::sx, :]


# ---------------------------------------------------------------------------------------------
# Implementation choice: depthwise convolutions or sums of shifted slices.

_FIR_IMPL = "auto"


def set_fir_impl(impl: str) -> None:
    """Choose how static filters are applied: 'depthwise', 'slices' or 'auto' (the default:
    'slices' while tracing for XLA, `tf.function(jit_compile=True)`, else 'depthwise'). Both give
    the same values; the choice is only about speed."""
    global _FIR_IMPL
    if impl not in ("auto", "depthwise", "slices"):
        raise ValueError(f"FIR implementation must be auto, depthwise or slices, got {impl!r}")
    _FIR_IMPL = impl


def _in_xla_context() -> bool:
    try:
        from tensorflow.python.ops import control_flow_util  # private, but stable for years

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except Exception:  # noqa: BLE001 - an internal API moved: fall back to the portable choice
        return False


def _use_slices() -> bool:
    if _FIR_IMPL == "auto":
        return not tf.executing_eagerly() and _in_xla_context()
    return _FIR_IMPL == "slices"


# ---------------------------------------------------------------------------------------------
# The op.


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Pad, upsample, filter and downsample a batch of NHWC images (NVIDIA's `upfirdn2d`).

    x: [N, H, W, C] float16/bfloat16/float32/float64. f: filter from `setup_filter` (or a numpy
    array / list of the same shape), 2-D [fh, fw] or 1-D separable [taps], or None (identity).
    up/down: int or [x, y]. padding: int, [x, y] or [x0, x1, y0, y1] relative to the upsampled
    image; negative crops. gain: overall magnitude scale. Returns [N, H', W', C] of x's dtype.
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4:
        raise ValueError(f"upfirdn2d expects NHWC (rank 4) input, got shape {x.shape}")
    if x.dtype in REDUCED and (compute_in_float32(x.dtype) or _use_slices()):
        # Half in and out, float32 accumulation over the taps, one rounding (see module doc).
        y = upfirdn2d(tf.cast(x, tf.float32), f, up=up, down=down, padding=padding, flip_filter=flip_filter,
                      gain=gain)
        return tf.cast(y, x.dtype)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)

    fv = _static_value(f) if f is not None else np.ones([1, 1], np.float32)
    if fv is not None and fv.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {fv.shape}")

    if fv is None:
        x = _pad_crop(_zero_insert(x, upx, upy), px0, px1, py0, py1)
        return _filter_dynamic(x, f, downx, downy, flip_filter, gain)

    # Correlation kernels along y and x (1-D) or 2-D. NVIDIA convolves, i.e. flips, unless
    # flip_filter; a separable filter gets sqrt(gain) per axis, exactly as NVIDIA's reference.
    if fv.ndim == 1:
        ky = kx = fv.astype(np.float64) * math.sqrt(gain)
        k2 = None
    else:
        k2 = fv.astype(np.float64) * gain
        sep = _factor_separable(k2)
        ky, kx = (None, None) if sep is None else sep
    if not flip_filter:
        if k2 is not None:
            k2 = np.flip(k2, (0, 1))
        if ky is not None:
            ky, kx = ky[::-1], kx[::-1]

    # float64 taps: the constants are made in x's dtype, so float64 inputs stay exact.
    if ky is not None:
        ky = np.ascontiguousarray(ky, dtype=np.float64)
        kx = np.ascontiguousarray(kx, dtype=np.float64)
    if k2 is not None:
        k2 = np.ascontiguousarray(k2, dtype=np.float64)
    slices = _use_slices() and x.shape[1] is not None and x.shape[2] is not None
    if slices and (upx > 1 or upy > 1) and downx == 1 and downy == 1:
        # Under XLA, upsample phase by phase instead of filtering inserted zeros. Measured on CPU
        # (2 cores, [1,3,3,1], up 2): forward 1.0-1.25x, forward+backward 2-3.5x faster. Not in
        # the depthwise (graph mode) path: there four small depthwise convolutions plus the
        # interleave were 1.2x slower forward and 2-3.5x slower with gradients than one
        # convolution over the zero-filled image.
        y = _polyphase_up(x, ky, kx, k2, upx, upy, px0, px1, py0, py1)
        if y is not None:
            return y

    x = _pad_crop(_zero_insert(x, upx, upy), px0, px1, py0, py1)
    if k2 is not None and k2.shape == (1, 1) and k2[0, 0] == 1:
        return x[:, ::downy, ::downx, :] if (downx > 1 or downy > 1) else x
    if slices:
        return _fir_slices(x, ky, kx, k2, downx, downy)
    return _fir_depthwise(x, ky, kx, k2, downx, downy)



def _phase_plan(size, up, p0, p1, taps):
    """Polyphase plan of one axis: zero insertion by `up`, padding (p0, p1), correlation with
    `taps` taps. Output o[up*a + r] = sum_s k[t0_r + up*s] * x[a + s + d_r]: phase r correlates
    the input with every up-th tap from t0_r, shifted by d_r. Returns (out_size, per-phase count A,
    [(t0_r, taps_r, d_r)], pad_lo, pad_hi) with the input padding that serves every phase, or None
    when some phase has no taps (filters shorter than the factor) or the output is empty."""
    out = size * up + p0 + p1 - taps + 1
    if out < 1:
        return None
    count = -(-out // up)
    phases = []
    for r in range(up):
        t0 = (p0 - r) % up
        n = len(range(t0, taps, up))
        if n == 0:
            return None
        phases.append((t0, n, (r + t0 - p0) // up))
    lo = max(0, max(-d for _, _, d in phases))
    hi = max(0, max(count + n - 1 + d - size for _, n, d in phases))
    return out, count, phases, lo, hi


def _interleave(parts, axis):
    """[N, H, W, C] phases -> one axis `up` = len(parts) times longer, phase r at positions up*a + r.
    4-D reshapes and a concat only (TFLite builtins, XLA fuses them)."""
    n, h, w, c = _dims(parts[0])
    up = len(parts)
    if axis == 2:
        parts = [tf.reshape(p, [n * h, w, 1, c]) for p in parts]
        return tf.reshape(tf.concat(parts, axis=2), [n, h, w * up, c])
    parts = [tf.reshape(p, [n, h, 1, w * c]) for p in parts]
    return tf.reshape(tf.concat(parts, axis=2), [n, h * up, w, c])


def _polyphase_up(x, ky, kx, k2, upx, upy, px0, px1, py0, py1):
    """Upsampling without inserting zeros: each of the upx*upy output phases is the input filtered
    with the sub-filter of the taps that land on real pixels, and the phases are interleaved. Same
    values as zero insertion + filtering, with 1/(upx*upy) of the multiply-adds and no
    zero-filled intermediate. None if not applicable (then the caller inserts zeros)."""
    _, h, w, c = x.shape.as_list()
    if h is None or w is None or c is None:
        return None
    fh, fw = k2.shape if k2 is not None else (len(ky), len(kx))
    plan_y = _phase_plan(h, upy, py0, py1, fh)
    plan_x = _phase_plan(w, upx, px0, px1, fw)
    if plan_y is None or plan_x is None:
        return None
    out_h, ay, phases_y, lo_y, hi_y = plan_y
    out_w, ax, phases_x, lo_x, hi_x = plan_x
    if max(lo_y, hi_y, lo_x, hi_x) > 0:
        x = tf.pad(x, [[0, 0], [lo_y, hi_y], [lo_x, hi_x], [0, 0]])
    rows = []
    for t0y, ny, dy in phases_y:
        cols = []
        for t0x, nx, dx in phases_x:
            part = x[:, lo_y + dy: lo_y + dy + ay + ny - 1, lo_x + dx: lo_x + dx + ax + nx - 1, :]
            sub2 = k2[t0y::upy, t0x::upx] if k2 is not None else None
            suby = ky[t0y::upy] if ky is not None else None
            subx = kx[t0x::upx] if kx is not None else None
            cols.append(_fir_slices(part, suby, subx, sub2, 1, 1))
        rows.append(_interleave(cols, axis=2) if upx > 1 else cols[0])
    y = _interleave(rows, axis=1) if upy > 1 else rows[0]
    if out_h != ay * upy or out_w != ax * upx:
        y = y[:, :out_h, :out_w, :]
    return y


def _fir_depthwise(x, ky, kx, k2, downx, downy):
    """Filtering with depthwise convolutions (fast in TF's CPU/GPU kernels, slow in XLA on CPU)."""
    # Depthwise filtering is memory bound: one 2-D pass over the data beats two 1-D passes for
    # small kernels (measured with oneDNN: a 4x4 filter is 1.3-2x faster in one pass, and the
    # stride then skips the dropped outputs on both axes). Long separable filters (the 12-tap
    # augmentation wavelets: 144 vs 24 taps) go in two passes.
    if ky is not None and (k2 is None and len(ky) * len(kx) > _MAX_2D_TAPS or
                           k2 is not None and k2.size > _MAX_2D_TAPS):
        fh, fw = len(ky), len(kx)
        if fh > 1 or ky[0] != 1:
            x = _depthwise(x, ky.reshape(fh, 1), 1, 1)
        if fw > 1 or kx[0] != 1:
            x = _depthwise(x, kx.reshape(1, fw), downy, downx)
        elif downx > 1 or downy > 1:
            x = x[:, ::downy, ::downx, :]
        return x
    if k2 is None:
        k2 = np.outer(ky, kx)
    return _depthwise(x, k2, downy, downx)


_MAX_2D_TAPS = 25


def _fir_slices(x, ky, kx, k2, downx, downy):
    """Filtering as a weighted sum of shifted (strided) slices, one term per non-zero tap.

    Under XLA this fuses into a single elementwise loop, tens of times faster on CPU than XLA's
    lowering of a depthwise convolution, and it computes only the kept (downsampled) outputs.
    """
    if ky is not None:
        x = _fir_axis(x, ky, 1, downy)
        return _fir_axis(x, kx, 2, downx)
    _, h, w, _ = x.shape.as_list()
    fh, fw = k2.shape
    oh, ow = (h - fh) // downy + 1, (w - fw) // downx + 1
    y = None
    for a in range(fh):
        for b in range(fw):
            if k2[a, b] == 0:
                continue
            t = x[:, a: a + downy * (oh - 1) + 1: downy, b: b + downx * (ow - 1) + 1: downx, :]
            t = t * tf.constant(k2[a, b], x.dtype)
            y = t if y is None else y + t
    return y if y is not None else tf.zeros_like(x[:, :oh * downy:downy, :ow * downx:downx, :])


def _fir_axis(x, k, axis, down):
    """Correlate along one spatial axis with taps k, keeping every down-th output."""
    if len(k) == 1 and k[0] == 1:
        return x if down == 1 else (x[:, ::down] if axis == 1 else x[:, :, ::down])
    size = x.shape[axis]
    out = (size - len(k)) // down + 1
    y = None
    for a, tap in enumerate(k):
        if tap == 0:
            continue
        sl = slice(a, a + down * (out - 1) + 1, down)
        t = x[:, sl] if axis == 1 else x[:, :, sl]
        t = t * tf.constant(tap, x.dtype)
        y = t if y is None else y + t
    if y is None:
        sl = slice(0, down * (out - 1) + 1, down)
        y = tf.zeros_like(x[:, sl] if axis == 1 else x[:, :, sl])
    return y


def _filter_dynamic(x, f, downx, downy, flip_filter, gain):
    """Steps 3-4 for a filter whose value is only known at run time (no separability detection)."""
    f = tf.cast(f, x.dtype)
    if f.shape.rank == 1:
        k = f * tf.cast(math.sqrt(gain), x.dtype)
        if not flip_filter:
            k = tf.reverse(k, [0])
        x = _depthwise(x, k[:, None], 1, 1)
        return _depthwise(x, k[None, :], downy, downx)
    k = f * tf.cast(gain, x.dtype)
    if not flip_filter:
        k = tf.reverse(k, [0, 1])
    return _depthwise(x, k, downy, downx)


# ---------------------------------------------------------------------------------------------
# Convenience wrappers with NVIDIA's default paddings.


def filter2d(x, f, padding=0, flip_filter=False, gain=1):
    """Filter NHWC images with `f`, padded so that the output has the input's size (plus `padding`)."""
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """Upsample NHWC images by `up` with filter `f`; output is `up` times the input (plus `padding`).
    The gain is multiplied by upx*upy to make up for the inserted zeros."""
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
         pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """Downsample NHWC images by `down` with filter `f`; output is 1/`down` of the input (plus `padding`)."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
         pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)
