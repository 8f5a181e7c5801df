"""2-D convolution with optional FIR up/down-sampling, NHWC, in pure TensorFlow.

StyleGAN2's resampling convolutions (Karras et al. 2020, Appendix B: "we upsample/downsample with
the [1,3,3,1] filter around the 3x3 convolution") as in NVIDIA's stylegan2-ada-pytorch
`torch_utils/ops/conv2d_resample.py`. Weights use TF's layout `[kh, kw, in/groups, out]`.

Padding is given with respect to the upsampled image and applied once, at the beginning; the
filter padding is added here exactly as NVIDIA does. We keep NVIDIA's branch structure because
where the filter padding ends up (before or after the convolution) is part of the numerics:
  - 1x1 kernel, down only: filter+downsample, then the 1x1 convolution;
  - 1x1 kernel, up only:   the 1x1 convolution, then upsample+filter;
  - down only:             filter, then a strided convolution;
  - up (and maybe down):   transposed strided convolution, then filter (then downsample);
  - neither:               a plain convolution (explicit padding), or crop/pad + convolution.

`flip_weight=True` means correlation (what tf.nn.conv2d and torch.conv2d compute), False means
true convolution (the kernel is flipped spatially). With `groups > 1` the input channels are split
into `groups` contiguous groups (TF infers the group count of tf.nn.conv2d from the channel counts).
TF has no grouped transposed convolution, so the grouped `up` branch computes it in polyphase form
(one small grouped convolution per output phase, interleaved); the same linear map as NVIDIA's
grouped transposed convolution.
Gradients of grouped convolutions exist on GPU and under XLA, but TF's stock CPU kernels lack them
(oneDNN covers only float32 'VALID' cases); `modulated_conv2d`, the one caller with groups > 1,
therefore differentiates its fused form through the equivalent non-fused form.

float16/bfloat16: the weight is rounded to the activation dtype (as NVIDIA's callers do), and on
CPU the whole resampling convolution is computed in float32 from those rounded values and rounded
once at the end (see `sg2ada.ops.precision`: TF's CPU half transposed convolution and depthwise
filter accumulate in half precision).
"""

from __future__ import annotations

import tensorflow as tf

from sg2ada.ops.precision import compute_in_float32
from sg2ada.ops.upfirdn2d import _dims, _parse_padding, get_filter_size, upfirdn2d

__all__ = ["conv2d_resample"]


def _conv2d(x, w, stride=1, padding=(0, 0), flip_weight=True):
    """Plain (possibly grouped) correlation with symmetric zero padding (py, px)."""
    kh, kw = int(w.shape[0]), int(w.shape[1])
    if not flip_weight and (kh > 1 or kw > 1):
        w = tf.reverse(w, [0, 1])
    py, px = padding
    if px == 0 and py == 0:
        pad = "VALID"
    elif stride == 1 and kh % 2 and kw % 2 and (py, px) == ((kh - 1) // 2, (kw - 1) // 2):
        # The same zero padding as the explicit list, but TF's oneDNN graph rewrite skips the
        # gradient kernels of EXPLICIT padding: Conv2DBackpropInput/Filter then fall back to slower
        # Eigen kernels (3x3, 128 channels, forward + backward: 59-63 ms against 38-40 ms; small32
        # training 1.5-1.7x slower; docs/benchmarks.md).
        pad = "SAME"
    else:
        pad = [[0, 0], [py, py], [px, px], [0, 0]]
    return tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding=pad)


def _conv2d_transpose(x, w, stride, flip_weight):
    """Ungrouped transposed convolution, 'VALID' (output (H-1)*stride + kh), w `[kh, kw, in, out]`.

    The result equals: insert stride-1 zeros between pixels, pad kh-1 / kw-1 on both sides, and
    correlate with w (flip_weight=True) or convolve with w (False), matching NVIDIA's
    `conv_transpose2d(..., flip_weight=not flip_weight)` on the transposed weight.
    """
    kh, kw, _, out_ch = (int(s) for s in w.shape)
    if flip_weight:  # conv2d_transpose scatters w unflipped, i.e. it convolves: flip to correlate
        w = tf.reverse(w, [0, 1])
    w = tf.transpose(w, [0, 1, 3, 2])  # TF wants [kh, kw, out, in]
    n, h, wd, _ = _dims(x)
    out_shape = [n, (h - 1) * stride + kh, (wd - 1) * stride + kw, out_ch]
    if any(isinstance(d, tf.Tensor) for d in out_shape):
        out_shape = tf.stack(out_shape)
    return tf.nn.conv2d_transpose(x, w, out_shape, strides=[1, stride, stride, 1], padding="VALID")


def _grouped_conv2d_transpose(x, w, stride, flip_weight):
    """`_conv2d_transpose` for grouped weights (TF has no grouped transposed convolution).

    Polyphase form: output pixel (stride*q + r) only receives the kernel taps r, r + stride, ...,
    so each of the stride**2 output phases is a small 'full' grouped convolution of x with the
    sub-kernel of its taps, and the phases are interleaved. Same values as inserting zeros and
    convolving, without the stride**2 - 1 multiplications by zero per tap.
    """
    kh, kw, _, out_ch = (int(s) for s in w.shape)
    scatter = tf.reverse(w, [0, 1]) if flip_weight else w  # the kernel a transposed conv scatters
    n, h, wd, _ = _dims(x)
    qy, qx = h + -(-kh // stride) - 1, wd + -(-kw // stride) - 1  # longest phase
    rows = []
    for ry in range(stride):
        cols = []
        for rx in range(stride):
            sub = scatter[ry::stride, rx::stride]
            ky, kx = int(sub.shape[0]), int(sub.shape[1])
            if ky == 0 or kx == 0:  # kernel smaller than the stride: this phase gets no taps
                cols.append(tf.zeros(tf.stack([n, qy, qx, out_ch]) if isinstance(n, tf.Tensor)
                                     else [n, qy, qx, out_ch], x.dtype))
                continue
            # Full convolution = correlation of the (k-1)-padded input with the reversed kernel.
            y = tf.pad(x, [[0, 0], [ky - 1, ky - 1], [kx - 1, kx - 1], [0, 0]])
            y = tf.nn.conv2d(y, tf.reverse(sub, [0, 1]), strides=1, padding="VALID")
            y = tf.pad(y, [[0, 0], [0, qy - (h + ky - 1)], [0, qx - (wd + kx - 1)], [0, 0]])
            cols.append(y)
        rows.append(tf.stack(cols, axis=3))  # [N, qy, qx, stride(rx), O]
    y = tf.stack(rows, axis=2)  # [N, qy, stride(ry), qx, stride(rx), O]
    y = tf.reshape(y, [n, qy * stride, qx * stride, out_ch])
    return y[:, :(h - 1) * stride + kh, :(wd - 1) * stride + kw, :]


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """2-D convolution of NHWC `x` with `w` [kh, kw, in/groups, out], with optional up/downsampling.

    f: low-pass filter from `setup_filter` (or numpy), None = identity. up/down: int factors.
    padding: int, [x, y] or [x0, x1, y0, y1] with respect to the upsampled image.
    Returns [N, H', W', out] in x's dtype (w is cast to it, as NVIDIA's callers do).
    """
    x = tf.convert_to_tensor(x)
    w = tf.cast(w, x.dtype)
    if x.shape.rank != 4 or w.shape.rank != 4:
        raise ValueError(f"conv2d_resample expects x NHWC and w [kh,kw,in,out], got {x.shape} and {w.shape}")
    if compute_in_float32(x.dtype):
        # Half inputs, float32 arithmetic, one rounding of the result: what cuDNN and PyTorch's
        # CPU kernels do, unlike TF's CPU half kernels (see sg2ada.ops.precision).
        y = _conv2d_resample(tf.cast(x, tf.float32), tf.cast(w, tf.float32), f, up, down, padding, groups,
                             flip_weight, flip_filter)
        return tf.cast(y, x.dtype)
    return _conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)


def _conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f"up and down must be ints >= 1, got {up!r}, {down!r}")
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    kh, kw, in_per_group, out_ch = (int(s) for s in w.shape)
    if x.shape[-1] is not None and x.shape[-1] != in_per_group * groups:
        raise ValueError(f"x has {x.shape[-1]} channels but w expects {in_per_group} x {groups} groups")
    if out_ch % groups:
        raise ValueError(f"out channels {out_ch} not divisible by groups {groups}")
    fw, fh = get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # The filter's own padding, so that the output is up/down times the input (NVIDIA's rule).
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: resample first (fewer pixels to convolve).
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve first (fewer pixels to convolve).
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d(x, w, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    # Downsampling only: filter (with all the padding), then a strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, flip_weight=flip_weight)

    # Upsampling (optionally followed by downsampling): transposed strided convolution, then filter.
    if up > 1:
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        if groups == 1:
            x = _conv2d_transpose(x, w, up, flip_weight)
        else:
            x = _grouped_conv2d_transpose(x, w, up, flip_weight)
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling, symmetric non-negative padding: one convolution does it all.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=(py0, px0), flip_weight=flip_weight)

    # General case (asymmetric or negative padding): pad/crop, then convolve.
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv2d(x, w, flip_weight=flip_weight)
