"""Fused bias + activation + gain + clamp, in pure TensorFlow.

StyleGAN2 applies, after every dense and convolution layer, a bias, a nonlinearity, a gain that
keeps activations at unit variance under the equalized learning rate (Karras et al. 2018, Sec.
4.1), and, with mixed precision, a clamp of the result (Karras et al. 2020b, "Training GANs with
Limited Data", Appendix D.2: conv_clamp=256). Semantics and the activation table (default alpha
and gain of each function) are those of NVIDIA's stylegan2-ada-pytorch
`torch_utils/ops/bias_act.py`; the bias applies to the last (channel) axis, because we are NHWC.

Order: x + b -> act(x, alpha) -> * gain -> clamp to [-clamp, clamp]. Built from TF elementwise ops
only, so XLA fuses it into one kernel and first and second order gradients come for free.

float16/bfloat16 inputs are computed in float32 and rounded once at the end, as NVIDIA's CUDA kernel
does (it loads half values into float registers). Computing in the input dtype would round the
gain (sqrt(2) -> 1.4141) and the lrelu slope (0.2 -> 0.19995) to float16 and round after every
step: a systematic relative error of up to 2**-11 in every fp16 layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

from sg2ada.ops.precision import REDUCED

__all__ = ["bias_act", "activation_funcs", "ActivationSpec"]


@dataclass(frozen=True)
class ActivationSpec:
    func: Callable  # func(x, alpha) -> tensor
    def_alpha: float
    def_gain: float


activation_funcs = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0),
    "relu": ActivationSpec(lambda x, alpha: tf.nn.relu(x), 0.0, math.sqrt(2)),
    "lrelu": ActivationSpec(lambda x, alpha: _leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": ActivationSpec(lambda x, alpha: tf.math.tanh(x), 0.0, 1.0),
    "sigmoid": ActivationSpec(lambda x, alpha: tf.math.sigmoid(x), 0.0, 1.0),
    "elu": ActivationSpec(lambda x, alpha: tf.nn.elu(x), 0.0, 1.0),
    "selu": ActivationSpec(lambda x, alpha: tf.nn.selu(x), 0.0, 1.0),
    "softplus": ActivationSpec(lambda x, alpha: tf.math.softplus(x), 0.0, 1.0),
    # Written out rather than tf.nn.silu, whose custom gradient is not meant to be differentiated
    # again; the product form gives exact second-order gradients.
    "swish": ActivationSpec(lambda x, alpha: tf.math.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def _leaky_relu(x, alpha):
    """tf.nn.leaky_relu whose gradient reads the output instead of the input, as TF's relu does.

    TensorFlow's own LeakyRelu gradient reads the input (the bias add), which grappler's remapper
    fuses away into Conv2D+BiasAdd+LeakyRelu: it then refuses the rewrite with an error-level log
    line ("remapper failed ... LeakyReluGrad exist for missing node"). With alpha >= 0 the output
    has the input's sign, so LeakyReluGrad(dy, y) is the same gradient; it is differentiable again
    (LeakyReluGrad has a registered gradient), so R1 and path length regularization still work.
    """
    if alpha < 0:
        return tf.nn.leaky_relu(x, alpha=alpha)

    @tf.custom_gradient
    def f(x):
        y = tf.nn.leaky_relu(x, alpha=alpha)
        # stop_gradient: the gradient is piecewise constant in y (exactly zero derivative), and a
        # path back through y would rebuild TF's LeakyReluGrad on the input in second-order graphs.
        return y, lambda dy: tf.raw_ops.LeakyReluGrad(gradients=dy, features=tf.stop_gradient(y), alpha=alpha)

    return f(x)


def bias_act(x, b=None, act="linear", alpha=None, gain=None, clamp=None):
    """Add bias `b` (shape [C], C = last axis of x), apply `act`, scale by `gain`, clamp to +-clamp.

    alpha/gain None = the activation's default (lrelu: alpha 0.2; relu/lrelu/swish: gain sqrt(2),
    others 1). clamp None disables clamping. Returns a tensor of x's shape and dtype.
    """
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(activation_funcs)}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)

    x = tf.convert_to_tensor(x)
    out_dtype = x.dtype
    if out_dtype in REDUCED:
        x = tf.cast(x, tf.float32)
    if b is not None:
        b = tf.cast(b, x.dtype)
        if b.shape.rank != 1:
            raise ValueError(f"bias must be 1-D [C], got shape {b.shape}")
        if b.shape[0] is not None and x.shape[-1] is not None and b.shape[0] != x.shape[-1]:
            raise ValueError(f"bias has {b.shape[0]} elements but x has {x.shape[-1]} channels")
        x = x + b
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * tf.cast(gain, x.dtype)
    if clamp is not None:
        x = tf.clip_by_value(x, tf.cast(-clamp, x.dtype), tf.cast(clamp, x.dtype))
    return tf.cast(x, out_dtype)
