"""Modulated (and demodulated) convolution, NHWC, in pure TensorFlow.

StyleGAN2's replacement for AdaIN (Karras et al. 2020, Sec. 2.2, Eq. 1-3): the convolution weight
is scaled per input channel by the style s_i (modulation), and each output channel is rescaled by
sigma_j^-1 = (sum_{i,k} (w_ijk s_i)^2 + eps)^-1/2 (demodulation). Semantics are those of NVIDIA's
stylegan2-ada-pytorch `training/networks.py::modulated_conv2d`, with TF layouts: x [N, H, W, I],
weight [kh, kw, I, O], styles [N, I], output [N, H', W', O].

Two equivalent executions (Sec. 2.2 and Appendix B of the paper):
  - fused: one weight per sample, run as a single grouped convolution with the batch folded into
    the channel axis ([N, H, W, I] -> [1, H, W, N*I], groups = N). TF infers the group count of
    tf.nn.conv2d from the channel counts; the forward pass runs on CPU, GPU and under XLA. TF's
    stock CPU kernels have no gradient for grouped convolutions, so the fused form is
    differentiated through the non-fused form (same function; see
    `_fused_with_nonfused_gradient`), which gives first- and second-order gradients everywhere.
    The batch size must be static; if it is not, the non-fused form is used (same value).
    NVIDIA uses the fused form for inference only.
  - non-fused: scale the activations by the styles, convolve with the shared weight, scale the
    output by the demodulation coefficients, add the noise. This is what NVIDIA trains with.

With float16/bfloat16 activations and demodulation, weight and styles are first rescaled by their
max-norms (NVIDIA's "pre-normalize to avoid FP16 overflow"); demodulation cancels the scale.
Weight, styles and demodulation coefficients are computed in the weight's dtype (float32) and cast
to the activation dtype only at the convolution, as NVIDIA does. In the non-fused form the
demodulation multiply and the noise add are one fused multiply-add with a single rounding (NVIDIA's
`fma`, which is `addcmul` on CPU and one CUDA op on GPU): the convolution output, the coefficients
(cast to the activation dtype first, as NVIDIA) and the noise are combined in float32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from sg2ada.ops.conv2d_resample import conv2d_resample
from sg2ada.ops.precision import REDUCED
from sg2ada.ops.upfirdn2d import _dims

__all__ = ["modulated_conv2d"]

_REDUCED = REDUCED


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """Modulated convolution of NHWC `x` [N,H,W,I] by `weight` [kh,kw,I,O] with `styles` [N,I].

    noise: None or a tensor broadcastable to the output [N,H',W',O] (e.g. [N,H',W',1] or
    [H',W',1]), added after demodulation. up/down/padding/resample_filter/flip_weight: as in
    `conv2d_resample`. Returns [N,H',W',O] in x's dtype.
    """
    x = tf.convert_to_tensor(x)
    weight = tf.convert_to_tensor(weight)
    styles = tf.convert_to_tensor(styles)
    if weight.shape.rank != 4 or x.shape.rank != 4 or styles.shape.rank != 2:
        raise ValueError(f"modulated_conv2d expects x [N,H,W,I], weight [kh,kw,I,O], styles [N,I]; "
                         f"got {x.shape}, {weight.shape}, {styles.shape}")
    kh, kw, in_ch, _ = (int(s) for s in weight.shape)
    if x.shape[-1] is not None and x.shape[-1] != in_ch:
        raise ValueError(f"x has {x.shape[-1]} channels, weight expects {in_ch}")
    if styles.shape[-1] is not None and styles.shape[-1] != in_ch:
        raise ValueError(f"styles have {styles.shape[-1]} channels, weight expects {in_ch}")
    styles = tf.cast(styles, weight.dtype)

    # Pre-normalize so that the per-sample weights cannot overflow in reduced precision.
    if x.dtype in _REDUCED and demodulate:
        w_max = tf.reduce_max(tf.abs(weight), axis=[0, 1, 2], keepdims=True)  # per output channel
        weight = weight * (np.float32(1 / np.sqrt(in_ch * kh * kw)) / w_max)
        styles = styles / tf.reduce_max(tf.abs(styles), axis=1, keepdims=True)

    conv_kwargs = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    batch = x.shape[0]
    if fused_modconv and batch is not None and int(batch) > 1:
        y = _fused_with_nonfused_gradient(x, weight, styles, demodulate, conv_kwargs)
    elif fused_modconv and batch is not None:
        y = _fused(x, weight, styles, demodulate, conv_kwargs)  # batch 1: an ordinary conv
    else:
        # Non-fused; also the fallback for a dynamic batch (a grouped conv needs a static group
        # count), which gives the same value.
        return _nonfused(x, weight, styles, demodulate, conv_kwargs, noise)
    if noise is not None:
        y = y + tf.cast(noise, y.dtype)
    return y


def _nonfused(x, weight, styles, demodulate, conv_kwargs, noise=None):
    """Scale activations by the styles, shared convolution, scale outputs by the dcoefs, add noise."""
    x = x * tf.cast(styles, x.dtype)[:, tf.newaxis, tf.newaxis, :]
    x = conv2d_resample(x, tf.cast(weight, x.dtype), **conv_kwargs)
    dtype = x.dtype
    if not demodulate:
        return x + tf.cast(noise, dtype) if noise is not None else x
    # sum_{k,i} (w_kio s_i)^2 = sum_i s_i^2 sum_k w_kio^2: the same coefficients as NVIDIA's
    # (up to summation order) without materialising the [N, kh, kw, I, O] per-sample weights,
    # which at 512 channels would be ~9 MB per sample, kept again for the backward pass.
    wsq = tf.reduce_sum(tf.square(weight), axis=[0, 1])  # [I, O]
    dcoefs = tf.math.rsqrt(tf.matmul(tf.square(styles), wsq) + 1e-8)  # [N, O]
    dcoefs = tf.cast(dcoefs, dtype)[:, tf.newaxis, tf.newaxis, :]
    if dtype not in _REDUCED:
        return x * dcoefs + tf.cast(noise, dtype) if noise is not None else x * dcoefs
    # Reduced precision: one multiply-add in float32, rounded once (NVIDIA's fma); rounding the
    # product before adding the noise would add a second float16 rounding error to every pixel.
    y = tf.cast(x, tf.float32) * tf.cast(dcoefs, tf.float32)
    if noise is not None:
        y = y + tf.cast(tf.cast(noise, dtype), tf.float32)
    return tf.cast(y, dtype)


def _fused(x, weight, styles, demodulate, conv_kwargs):
    """One grouped convolution with per-sample (de)modulated weights, groups = N."""
    kh, kw, in_ch, out_ch = (int(s) for s in weight.shape)
    w = weight[tf.newaxis] * styles[:, tf.newaxis, tf.newaxis, :, tf.newaxis]  # [N, kh, kw, I, O]
    if demodulate:
        dcoefs = tf.math.rsqrt(tf.reduce_sum(tf.square(w), axis=[1, 2, 3]) + 1e-8)  # [N, O]
        w = w * dcoefs[:, tf.newaxis, tf.newaxis, tf.newaxis, :]
    # Fold the batch into the channel axis: group g owns input channels [g*I, (g+1)*I) and
    # output channels [g*O, (g+1)*O).
    n = int(x.shape[0])
    _, h, wd, _ = _dims(x)
    xg = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, wd, n * in_ch])
    wg = tf.reshape(tf.transpose(w, [1, 2, 3, 0, 4]), [kh, kw, in_ch, n * out_ch])
    y = conv2d_resample(xg, tf.cast(wg, x.dtype), groups=n, **conv_kwargs)
    _, oh, ow, _ = _dims(y)
    return tf.transpose(tf.reshape(y, [oh, ow, n, out_ch]), [2, 0, 1, 3])


def _fused_with_nonfused_gradient(x, weight, styles, demodulate, conv_kwargs):
    """The fused forward pass, differentiated through the (identical) non-fused map.

    TF's stock CPU kernels have no gradient for grouped convolutions (only oneDNN float32 with
    'VALID' padding, GPU and XLA do), and R1/path-length need second-order gradients. The two
    forms compute the same function, so the backward pass differentiates the non-fused form,
    which works on every device and to any order (the gradient function is itself traced by
    outer tapes). NVIDIA never differentiates the fused form in training either.
    """

    @tf.custom_gradient
    def op(x, weight, styles):
        y = _fused(x, weight, styles, demodulate, conv_kwargs)

        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, weight, styles])
                y2 = _nonfused(x, weight, styles, demodulate, conv_kwargs)
            return tape.gradient(y2, [x, weight, styles], output_gradients=dy)

        return y, grad

    return op(x, weight, styles)
