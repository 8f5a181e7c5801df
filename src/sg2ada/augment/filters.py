"""Fixed filters and 1-D FIR helpers used by the augmentation pipeline (ADA paper, Appendix B.1-B.2).

The geometric stage of the pipe (Sec. 2.3 / App. B.1) avoids aliasing by upsampling 2x with an
orthogonal low-pass wavelet filter (Symlet-6), resampling bilinearly, and downsampling 2x with the
same filter. The image-space filtering stage (App. B.2) is a 4-band equaliser whose band filters
come from the Symlet-2 low-pass filter. The wavelet coefficients are the standard published values
(the same numbers as in PyWavelets); the band construction is our own code from the description.

The FIR helpers follow the `upfirdn` convention of the reference implementation (zero insertion
with trailing zeros, then zero padding / cropping, then convolution, then decimation), applied
along one axis of an NHWC tensor at a time because every filter here is separable. Short axes
use a dense [out, in] matrix built in NumPy (`upfirdn_matrix`) and one matrix product
(`apply_along`); long axes use depthwise convolutions, or slices inside XLA on CPU (`upfirdn_1d`
says why). All forms compile under XLA and have gradients of every order. Reflect padding
(`reflect_pad` as ops, `reflect_matrix` as a matrix) is the other helper.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from sg2ada.ops.upfirdn2d import _in_xla_context as in_xla_context  # one place that asks TF

# Low-pass decomposition filters (standard wavelet tables).
SYM2 = (
    -0.12940952255092145,
    0.22414386804185735,
    0.836516303737469,
    0.48296291314469025,
)
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)

# Expected relative power of the four bands of a natural image (roughly 1/f); the equaliser
# renormalises its gains by this so that amplifying one band does not change overall energy.
IMGFILTER_EXPECTED_POWER = np.array([10.0, 1.0, 1.0, 1.0]) / 13.0


def geom_filter() -> np.ndarray:
    """Symlet-6 low-pass filter normalised to unit DC gain (float64, 12 taps)."""
    f = np.asarray(SYM6, dtype=np.float64)
    return f / f.sum()


def imgfilter_bank(num_bands: int = 4) -> np.ndarray:
    """Band-pass filter bank [num_bands, taps] of the image-space equaliser.

    Built like a dyadic filter bank: with H(z) the Symlet-2 low-pass filter, each level splits the
    current lowest band into a half-band low part H(z)H(z^-1)/2 and high part H(-z)H(-z^-1)/2;
    earlier bands are expanded by two (zero insertion) and smoothed by the low part at each level.
    Row 0 is the lowest band. The rows sum to a unit impulse (perfect reconstruction), so a gain
    vector of ones is the identity filter.
    """
    lo = np.asarray(SYM2, dtype=np.float64)
    hi = lo * ((-1.0) ** np.arange(lo.size))
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1.0
    for i in range(1, num_bands):
        # Expand every existing band by two (insert zeros between taps) ...
        expanded = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        expanded[:, ::2] = bank
        # ... smooth with the half-band low-pass, and add the new high band in row i.
        bank = np.stack([np.convolve(row, lo2) for row in expanded])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start : start + hi2.size] += hi2
    return bank


def reflect_indices(n: int, pad0: int, pad1: int) -> np.ndarray:
    """Indices into an axis of length n that reflect-pad it (edge not repeated, like np.pad 'reflect').

    Works for any padding, even wider than the axis (reflection repeats), which tf.pad cannot do.
    """
    idx = np.arange(-pad0, n + pad1)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _reflect_axis(x: tf.Tensor, axis: int, p0: int, p1: int) -> tf.Tensor:
    # Slices, reverses and concats only: a gather along an inner axis would have a second-order
    # gradient that XLA cannot compile. Pads wider than the axis reflect repeatedly, which is the
    # same as reflecting once more around the new edge.
    while p0 > 0 or p1 > 0:
        n = int(x.shape[axis])
        if n == 1:
            reps = [1] * 4
            reps[axis] = 1 + p0 + p1
            return tf.tile(x, reps)
        a, b = min(p0, n - 1), min(p1, n - 1)
        parts = []
        if a:
            parts.append(tf.reverse(_slice(x, axis, 1, a), [axis]))
        parts.append(x)
        if b:
            parts.append(tf.reverse(_slice(x, axis, n - 1 - b, b), [axis]))
        x = tf.concat(parts, axis=axis)
        p0, p1 = p0 - a, p1 - b
    return x


def reflect_pad(x: tf.Tensor, pad_y: tuple[int, int], pad_x: tuple[int, int]) -> tf.Tensor:
    """Reflect-pad an NHWC tensor by static amounts (any width; differentiable, XLA-friendly)."""
    x = _reflect_axis(x, 1, *pad_y)
    return _reflect_axis(x, 2, *pad_x)


def _slice(x, axis, start, length):
    # A strided slice, not tf.slice: inside XLA, tf.slice's gradient is an op without a gradient,
    # which would break second-order gradients (R1 through the pipe) under jit_compile.
    sl = [slice(None)] * 4
    sl[axis] = slice(start, start + length)
    return x[tuple(sl)]


def reflect_matrix(n: int, pad0: int, pad1: int) -> np.ndarray:
    """[n + pad0 + pad1, n] 0/1 matrix of reflect padding one axis (rows select `reflect_indices`)."""
    idx = reflect_indices(n, pad0, pad1)
    m = np.zeros((idx.size, n))
    m[np.arange(idx.size), idx] = 1.0
    return m


def _kernel_and_length(n, taps, up, pad, flip_filter, gain):
    """(correlation kernel, output length before decimation) of upfirdn on an axis of n samples."""
    k = np.asarray(taps, dtype=np.float64) * gain
    if not flip_filter:
        k = k[::-1]
    full = n * up + pad[0] + pad[1] - k.size + 1
    if full <= 0:
        raise ValueError(f"upfirdn_1d: empty output (length {n}, {k.size} taps, padding {pad})")
    return k, full


@functools.lru_cache(maxsize=64)
def _upfirdn_matrix_cached(n, taps, up, down, pad, flip_filter, gain):
    k, full = _kernel_and_length(n, taps, up, pad, flip_filter, gain)
    p0, p1 = pad
    # Output j (before decimation) = sum_t s[j + t] k[t] over the zero-stuffed, padded/cropped signal
    # s, where input i sits at s[up * i + p0] unless the cropping removed that position.
    i = np.arange(n)
    pos = up * i + p0
    kept = (pos >= 0) & (up * i < n * up + min(p1, 0))
    j = np.arange(0, full, down)[:, None]
    t = pos[None, :] - j
    m = np.where((t >= 0) & (t < k.size) & kept[None, :], k[np.clip(t, 0, k.size - 1)], 0.0)
    m.setflags(write=False)
    return m


def upfirdn_matrix(
    n: int, taps, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), flip_filter: bool = False,
    gain: float = 1.0,
) -> np.ndarray:
    """The [out, n] float64 matrix of `upfirdn_1d` on an axis of length n (read-only, cached)."""
    return _upfirdn_matrix_cached(int(n), tuple(float(v) for v in np.ravel(taps)), int(up), int(down),
                                  (int(pad[0]), int(pad[1])), bool(flip_filter), float(gain))


def apply_along(x: tf.Tensor, m: tf.Tensor, axis: int) -> tf.Tensor:
    """Apply the [out, in] matrix m along axis 1 (H) or 2 (W) of an NHWC tensor.

    Both cases are one broadcast matrix product with no transposes: along W the rows are the
    [W, C] slices of each (n, h), along H the [H, W*C] slice of each sample. Matrix products have
    fast kernels everywhere (oneDNN, XLA, GPUs) and their gradients are matrix products too, to any
    order, so the pipe's R1 second-order gradient stays cheap.
    """
    n = tf.shape(x)[0]
    h, w, c = (int(d) for d in x.shape[1:])
    out = int(m.shape[0])
    if axis == 2:
        y = tf.matmul(m, tf.reshape(x, [-1, w, c]))
        return tf.reshape(y, [n, h, out, c])
    if axis == 1:
        y = tf.matmul(m, tf.reshape(x, [n, h, w * c]))
        return tf.reshape(y, [n, out, w, c])
    raise ValueError(f"apply_along: axis must be 1 or 2, got {axis}")


def _pad_axis(x, axis, p0, p1):
    if p0 == 0 and p1 == 0:
        return x
    paddings = [[0, 0]] * 4
    paddings[axis] = [p0, p1]
    return tf.pad(x, paddings)


def _use_slices() -> bool:
    """True inside an XLA cluster on a machine without GPUs (XLA's CPU depthwise convolution is slow)."""
    return (not tf.executing_eagerly()) and in_xla_context() and not tf.config.list_logical_devices("GPU")


def _upfirdn_1d_conv(x, k, axis, up, down, p0, p1):
    """upfirdn along `axis` (1 = H, 2 = W) with a correlation kernel k, as one depthwise convolution."""
    c = int(x.shape[3])
    if up > 1:
        # Zero insertion with trailing zeros: [x0, 0, x1, 0, ...] (upfirdn's convention).
        z = tf.stack([x] + [tf.zeros_like(x)] * (up - 1), axis=axis + 1)
        dims = [int(d) for d in x.shape[1:]]
        dims[axis - 1] *= up
        x = tf.reshape(z, [-1] + dims)
    x = _pad_axis(x, axis, max(p0, 0), max(p1, 0))
    if p0 < 0 or p1 < 0:
        n = int(x.shape[axis])
        x = _slice(x, axis, max(-p0, 0), n - max(-p0, 0) - max(-p1, 0))
    kshape = [1, 1, 1, 1]
    kshape[axis - 1] = k.size
    kernel = tf.tile(tf.reshape(tf.constant(k, x.dtype), kshape), [1, 1, c, 1])  # [kh, kw, C, 1]
    y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")
    # TF's depthwise kernel wants equal strides on both axes, so decimate afterwards.
    return y if down == 1 else _decimated_phase(y, axis, 0, down)


def _phase_fir(x, taps_offsets, axis, out_len):
    """sum_t x[a + o_t] * k_t for a in [0, out_len), x zero outside its range (unstrided slices)."""
    n = int(x.shape[axis])
    lo = min(o for _, o in taps_offsets)
    hi = max(o for _, o in taps_offsets)
    left = max(0, -lo)
    x = _pad_axis(x, axis, left, max(0, hi + out_len - n))
    acc = None
    for k, o in taps_offsets:
        term = _slice(x, axis, o + left, out_len) * k
        acc = term if acc is None else acc + term
    return acc


def _interleave(phases, axis, total):
    """Interleave phase outputs (phase r holds samples r, r+u, ...) along axis, cropped to total."""
    u = len(phases)
    longest = max(int(ph.shape[axis]) for ph in phases)
    phases = [_pad_axis(ph, axis, 0, longest - int(ph.shape[axis])) for ph in phases]
    y = tf.stack(phases, axis=axis + 1)
    shape = [-1] + [int(d) for d in y.shape[1:]]
    y = tf.reshape(y, shape[:axis] + [longest * u] + shape[axis + 2 :])
    return _slice(y, axis, 0, total)


def _decimated_phase(x, axis, f, down):
    """Samples f, f + down, f + 2 down, ... of x along axis (f in [0, down))."""
    n = int(x.shape[axis])
    length = -(-n // down)
    x = _pad_axis(x, axis, 0, length * down - n)
    shape = [-1] + [int(d) for d in x.shape[1:]]
    x = tf.reshape(x, shape[:axis] + [length, down] + shape[axis + 1 :])
    sl = [slice(None)] * 5
    sl[axis + 1] = f
    return x[tuple(sl)]


# Axes up to this many input samples are filtered with a dense matrix product; longer ones with a
# convolution (or slices inside XLA on CPU). The dense form costs O(in * out) per row, the
# convolution O(taps * out) plus its op overheads. Measured (pipe forward + backward, p = 0.5):
# dense 2x faster at 32x32; at 256x256 even (+17% forward, -7% forward + backward); beyond that
# the dense products grow with the square of the resolution. Tests lower it to cover both forms.
DENSE_MAX_LEN = 128


def use_dense(n: int) -> bool:
    """Whether an axis of n input samples is filtered by a dense matrix product."""
    return n <= DENSE_MAX_LEN


def upfirdn_1d(
    x: tf.Tensor,
    taps: np.ndarray,
    axis: int,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    flip_filter: bool = False,
    gain: float = 1.0,
) -> tf.Tensor:
    """Upsample (zero insertion), pad/crop, FIR filter and downsample one axis of an NHWC tensor.

    Semantics of the reference `upfirdn2d` restricted to one axis: `pad` may be negative (crop);
    the filter is convolved (i.e. flipped before correlating) unless flip_filter is set.

    Three implementations of the same arithmetic, all differentiable to any order (R1 flows
    through the pipe):
    - short axes (`use_dense`): one dense matrix product (`upfirdn_matrix`, `apply_along`). It
      wastes multiplications on zeros but runs at GEMM speed: the pipe's reflect pad + 2x
      upsampling at 32x32 went from 52-63 ms to 14-16 ms forward + backward (session 14).
    - long axes in plain graphs: a depthwise convolution (zero insertion by stack + reshape,
      pad/crop, one `depthwise_conv2d`), 9x faster forward + backward than the slices below
      (32 x 94 x 94 x 3 upsampled on both axes: 27 ms against 241 ms, session 2).
    - long axes inside XLA clusters on CPU, whose depthwise convolutions are very slow:
      polyphase unstrided slices, multiplies and adds.
    """
    if up > 1 and down > 1:
        raise NotImplementedError("upfirdn_1d: up and down together are not needed here")
    n = int(x.shape[axis])
    if use_dense(n):
        m = upfirdn_matrix(n, taps, up=up, down=down, pad=pad, flip_filter=flip_filter, gain=gain)
        return apply_along(x, tf.constant(m, x.dtype), axis)
    k, full = _kernel_and_length(n, taps, up, pad, flip_filter, gain)
    p0, p1 = pad
    if not _use_slices():
        return _upfirdn_1d_conv(x, k, axis, up, down, p0, p1)
    # Output j (before decimation) = sum_t s[j + t] k[t], where the zero-stuffed, padded signal s
    # has s[m] = x[(m - p0) / up] when up divides m - p0 (zero elsewhere and outside x).
    if up > 1:
        # Output phase r (j = r + up * a) reads x[a + (r + t - p0) / up] for the taps t that fit.
        phases = []
        for r in range(up):
            taps_offsets = [(float(k[t]), (r + t - p0) // up) for t in range(k.size) if (r + t - p0) % up == 0]
            length = len(range(r, full, up))
            phases.append(_phase_fir(x, taps_offsets, axis, max(length, 1)))
        return _interleave(phases, axis, full)
    # Decimation: output a = sum_t x[down * a + t - p0] k[t]. With t - p0 = down * e + f
    # (0 <= f < down) this reads input phase f at offset a + e.
    out_len = (full - 1) // down + 1
    by_phase: dict[int, list] = {}
    for t in range(k.size):
        e, f = divmod(t - p0, down)
        by_phase.setdefault(f, []).append((float(k[t]), e))
    acc = None
    for f, taps_offsets in sorted(by_phase.items()):
        src = x if down == 1 else _decimated_phase(x, axis, f, down)
        term = _phase_fir(src, taps_offsets, axis, out_len)
        acc = term if acc is None else acc + term
    return acc
