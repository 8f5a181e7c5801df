"""Building blocks shared by the StyleGAN2 generator and discriminator: the equalized-learning-rate
fully connected and convolution layers (Karras et al. 2018, "Progressive Growing of GANs", Sec. 4.1;
StyleGAN2 Appendix B), as in NVIDIA's `training/networks.py` (`FullyConnectedLayer`,
`Conv2dLayer`, `normalize_2nd_moment`) and TF1 `dense_layer`/`conv2d_layer`/`apply_bias_act`.

Weights are stored unscaled, in the layout of NVIDIA's TF1 pickles (dense `[in, out]`, conv
`[kh, kw, in, out]`), and scaled at run time by `lr_multiplier / sqrt(fan_in)`; biases by
`lr_multiplier`. Storing the TF1 layout lets a released TF1 pickle load by name with no reshaping.

Every layer reports its variables through `named_variables()` keyed by the TF1 variable name
relative to the layer (`weight`, `bias`, ...); parents prefix them with their own scope
(`32x32/Conv0/weight`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from sg2ada import ops
from sg2ada.errors import UserError

# Default gain of each activation, as in NVIDIA's bias_act (`def_gain`): it keeps the activation
# magnitudes unit-variance-preserving under the equalized learning rate.
ACT_GAIN = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1.0, "sigmoid": 1.0,
            "elu": 1.0, "selu": 1.0, "softplus": 1.0, "swish": math.sqrt(2)}


def act_gain(activation: str) -> float:
    try:
        return ACT_GAIN[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACT_GAIN)}") from None


def normalize_2nd_moment(x, axis=-1, eps=1e-8):
    """Pixel-norm of a latent: divide by the root mean square over `axis` (StyleGAN Sec. 2)."""
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=axis, keepdims=True) + eps)


def setup_filter_np(f) -> np.ndarray:
    """The 2-D resampling filter NVIDIA's `setup_filter` makes from a 1-D kernel (outer product,
    normalised to sum 1). Kept as numpy so layers can hand it to ops as a constant."""
    f = np.asarray(f, dtype=np.float32)
    if f.ndim == 1:
        f = np.outer(f, f)
    return (f / f.sum()).astype(np.float32)


class TF1Variables:
    """G's and D's variables as numpy arrays keyed and shaped as in NVIDIA's TF1 pickles (stored in
    TF1's layout, so no conversion is needed either way)."""

    def get_tf1_variables(self) -> dict:
        return {k: np.asarray(v.numpy()) for k, v in self.named_variables().items()}

    def load_tf1_variables(self, values: dict, strict: bool = True, source: str | None = None) -> None:
        assign_named(self, values, strict=strict, source=source or f"TF1 {self.name}")


class Layer(keras.layers.Layer):
    """Base for our layers: no Keras autocasting, because mixed precision here is explicit per block
    (NVIDIA casts activations at block boundaries and keeps parameters in float32), and a Keras
    autocast of the inputs would silently undo the fp16 blocks."""

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def named_variables(self) -> dict:
        """This layer's variables by their TF1 names: `weight` and `bias` where the layer has them;
        layers that hold other layers name theirs with `prefixed`."""
        return {k: v for k in ("weight", "bias") if (v := getattr(self, k, None)) is not None}

    def _weight(self, name, shape, initializer, trainable=True, **kwargs):
        return self.add_weight(name=name, shape=tuple(shape), initializer=initializer, dtype="float32",
                               trainable=trainable, **kwargs)


class FullyConnectedLayer(Layer):
    """Dense layer with equalized learning rate. Weight `[in, out]` (TF1 `dense_layer`)."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0,
                 bias_init=0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.lr_multiplier = float(lr_multiplier)
        self.weight_gain = self.lr_multiplier / math.sqrt(self.in_features)
        self.bias_gain = self.lr_multiplier
        act_gain(activation)  # validate early
        self.weight = self._weight("weight", [self.in_features, self.out_features],
                                   keras.initializers.RandomNormal(stddev=1.0 / self.lr_multiplier))
        self.bias = self._weight("bias", [self.out_features], keras.initializers.Constant(bias_init)) if bias else None
        self.built = True

    def call(self, x):
        w = tf.cast(tf.convert_to_tensor(self.weight), x.dtype) * tf.cast(self.weight_gain, x.dtype)
        x = tf.matmul(x, w)
        b = None
        if self.bias is not None:
            b = tf.cast(tf.convert_to_tensor(self.bias), x.dtype)
            if self.bias_gain != 1:
                b = b * tf.cast(self.bias_gain, x.dtype)
        if self.activation == "linear":
            return x + b if b is not None else x
        return ops.bias_act(x, b, act=self.activation, gain=act_gain(self.activation))


class Conv2dLayer(Layer):
    """Convolution with equalized learning rate, optional 2x up/down-sampling through the FIR
    `resample_filter`, bias, activation and output clamping. Weight `[kh, kw, in, out]` in TF1's
    orientation: the op always correlates (`flip_weight=True`); NVIDIA's PyTorch layout stores
    up-sampling kernels flipped instead (see legacy/pytorch_layout.py)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, trainable=True, **kwargs):
        # `trainable=False` makes the weights themselves non-trainable (NVIDIA registers them as
        # buffers), so toggling the layer's trainable flag later cannot unfreeze them.
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.up = int(up)
        self.down = int(down)
        self.conv_clamp = conv_clamp
        self.resample_filter = setup_filter_np(resample_filter)
        self.padding = self.kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        self.act_gain = act_gain(activation)
        self.weight = self._weight("weight", [self.kernel_size, self.kernel_size, self.in_channels, self.out_channels],
                                   keras.initializers.RandomNormal(stddev=1.0), trainable=trainable)
        self.bias = self._weight("bias", [self.out_channels], "zeros", trainable=trainable) if bias else None
        self.built = True

    def call(self, x, gain=1.0):
        w = tf.cast(tf.convert_to_tensor(self.weight) * self.weight_gain, x.dtype)
        f = tf.constant(self.resample_filter) if (self.up > 1 or self.down > 1) else None
        x = ops.conv2d_resample(x, w, f=f, up=self.up, down=self.down, padding=self.padding, flip_weight=True)
        b = tf.cast(tf.convert_to_tensor(self.bias), x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


def prefixed(prefix: str, variables: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in variables.items()}


def assign_named(network, values: dict, *, strict: bool = True, source: str = "weights") -> None:
    """Assign numpy arrays to `network.named_variables()` by name, checking shapes.

    `strict` requires every variable to be present and every value to be used; the error names
    the first offender so a wrong or truncated file is easy to find."""
    named = network.named_variables()
    if strict:
        missing = sorted(set(named) - set(values))
        extra = sorted(set(values) - set(named))
        if missing:
            raise UserError(f"{source}: missing variable {missing[0]!r} ({len(missing)} missing); "
                            "the file does not match this network configuration")
        if extra:
            raise UserError(f"{source}: unexpected variable {extra[0]!r} ({len(extra)} unexpected); "
                            "the file does not match this network configuration")
    for name, var in named.items():
        if name not in values:
            continue
        value = np.asarray(values[name])
        if value.dtype.kind not in "biuf":
            kind = "text" if value.dtype.kind in "US" else f"{value.dtype.name} values"
            raise UserError(f"{source}: variable {name!r} holds {kind}, not numbers; the file is damaged or was not "
                            "written for sg2ada")
        if tuple(value.shape) != tuple(var.shape):
            raise UserError(f"{source}: variable {name!r} has shape {list(value.shape)}, the network expects "
                            f"{list(var.shape)}; the file does not match this network configuration")
        var.assign(value.astype(np.float32))
