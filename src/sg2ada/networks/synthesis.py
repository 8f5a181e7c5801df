"""The StyleGAN2 synthesis network `G_synthesis` (Karras et al. 2020, Sec. 2-4, Fig. 7; ADA paper
Appendix B for the mixed-precision details), as NVIDIA's `SynthesisLayer`, `ToRGBLayer`,
`SynthesisBlock` and `SynthesisNetwork` in `training/networks.py` and TF1 `G_synthesis`.

- SynthesisLayer: affine style (+1, TF1 `mod_bias`), modulated/demodulated 3x3 conv (optionally 2x
  up-sampling), per-pixel noise scaled by a learned per-layer strength, bias, lrelu, clamp.
- ToRGBLayer: 1x1 modulated conv without demodulation, style scaled by 1/sqrt(fan_in).
- SynthesisBlock: orig / skip / resnet. A block consumes `num_conv + num_torgb` ws but advances the
  w index by `num_conv` only: its ToRGB shares its w with the next block's first conv.
- Blocks at the top `num_fp16_res` resolutions (never below 8x8) compute in `fp16_dtype` and clamp
  conv outputs to +-conv_clamp; the rgb skip image always stays float32 (and on CPU, where the
  reduced-precision convolutions compute in float32 anyway, ToRGB computes in float32 too).

All variables have the exact TF1 names and shapes, including the NCHW-shaped ones: `4x4/Const/const`
`[1, C, 4, 4]` and `noise{i}` `[1, 1, H, W]` are stored as TF1 has them and transposed at run time
(negligible cost), so a TF1 pickle and our snapshots load without conversion.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from sg2ada import ops
from sg2ada.ops.random import SampleSeed, per_sample_normal
from sg2ada.networks.layers import (Conv2dLayer, FullyConnectedLayer, Layer, act_gain, prefixed,
                                    setup_filter_np)

NOISE_MODES = ("random", "const", "none")

# Keras converts numpy scalars passed to a layer call into tensors; keep resnet gains Python floats.
SQRT_HALF = math.sqrt(0.5)


def compute_dtype(name: str):
    return {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32}[name]


def check_noise_mode(noise_mode):
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")


class SynthesisLayer(Layer):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, noise_index=0, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.resolution = int(resolution)
        self.up = int(up)
        self.use_noise = bool(use_noise)
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.noise_index = int(noise_index)
        self.resample_filter = setup_filter_np(resample_filter)
        self.padding = kernel_size // 2
        self.act_gain = act_gain(activation)
        # TF1 keeps the style bias at 0 and adds 1 at run time; PyTorch folds the 1 into the bias.
        self.affine = FullyConnectedLayer(w_dim, in_channels, name="affine")
        self.weight = self._weight("weight", [kernel_size, kernel_size, in_channels, out_channels],
                                   keras.initializers.RandomNormal(stddev=1.0))
        if self.use_noise:
            self.noise_const = self._weight("noise_const", [1, 1, resolution, resolution],
                                            keras.initializers.RandomNormal(stddev=1.0), trainable=False)
            self.noise_strength = self._weight("noise_strength", [], "zeros")
        self.bias = self._weight("bias", [out_channels], "zeros")
        self.built = True

    def named_variables(self):
        out = {"weight": self.weight, "mod_weight": self.affine.weight, "mod_bias": self.affine.bias}
        if self.use_noise:
            out["noise_strength"] = self.noise_strength
        out["bias"] = self.bias
        return out

    def styles(self, w):
        return self.affine(w) + 1.0

    def call(self, x, w, noise_mode="random", noise_seed=None, fused_modconv=True, gain=1.0):
        styles = self.styles(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = tf.stack([tf.shape(x)[0], self.resolution, self.resolution, 1])
            if noise_seed is None:
                noise = tf.random.normal(shape, dtype=tf.float32)
            elif isinstance(noise_seed, SampleSeed):  # training: each sample's noise by its batch position
                s = noise_seed.fold_in(self.noise_index)
                noise = per_sample_normal(s.seed, s.index, s.count, [self.resolution, self.resolution, 1])
            else:
                seed = tf.random.experimental.stateless_fold_in(tf.cast(noise_seed, tf.int32), self.noise_index,
                                                                 alg="philox")
                noise = ops.stateless_normal(shape, seed)  # the same numbers eagerly and under XLA
            noise = noise * tf.convert_to_tensor(self.noise_strength)
        elif self.use_noise and noise_mode == "const":
            # [1, 1, H, W] -> [1, H, W, 1]: a pure reshape, the channel axis has size 1.
            noise = tf.reshape(tf.convert_to_tensor(self.noise_const), [1, self.resolution, self.resolution, 1])
            noise = noise * tf.convert_to_tensor(self.noise_strength)
        if noise is not None:
            noise = tf.cast(noise, x.dtype)

        x = ops.modulated_conv2d(x, tf.convert_to_tensor(self.weight), styles, noise=noise, up=self.up,
                                 padding=self.padding, resample_filter=tf.constant(self.resample_filter),
                                 demodulate=True, flip_weight=True, fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, tf.cast(tf.convert_to_tensor(self.bias), x.dtype), act=self.activation,
                            gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(Layer):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, **kwargs):
        super().__init__(**kwargs)
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, name="affine")
        self.weight = self._weight("weight", [kernel_size, kernel_size, in_channels, out_channels],
                                   keras.initializers.RandomNormal(stddev=1.0))
        self.bias = self._weight("bias", [out_channels], "zeros")
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.built = True

    def named_variables(self):
        return {"weight": self.weight, "mod_weight": self.affine.weight, "mod_bias": self.affine.bias,
                "bias": self.bias}

    def call(self, x, w, fused_modconv=True):
        styles = (self.affine(w) + 1.0) * self.weight_gain
        if ops.compute_in_float32(x.dtype):
            # The result goes straight into the float32 rgb image. Where the reduced-precision
            # convolutions already run in float32 (CPU, see sg2ada.ops.precision), computing this
            # 1x1 projection from the float16 activations in float32 costs nothing and skips
            # rounding the image contribution to float16 (ulp 2**-8 at |y| >= 4), which NVIDIA
            # does, and which is the largest fp16 error left in the output image. Measured on
            # the TF1 reference network: max |img - fp32 img| 0.0109 -> 0.0079.
            x = tf.cast(x, tf.float32)
        x = ops.modulated_conv2d(x, tf.convert_to_tensor(self.weight), styles, demodulate=False,
                                 flip_weight=True, fused_modconv=fused_modconv)
        return ops.bias_act(x, tf.cast(tf.convert_to_tensor(self.bias), x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(Layer):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_dtype="float16",
                 use_noise=True, activation="lrelu", **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.w_dim = int(w_dim)
        self.resolution = int(resolution)
        self.img_channels = int(img_channels)
        self.is_last = bool(is_last)
        self.architecture = architecture
        self.use_fp16 = bool(use_fp16)
        self.fp16_dtype = fp16_dtype
        self.resample_filter = setup_filter_np(resample_filter)
        self.num_conv = 0
        self.num_torgb = 0
        log2 = int(np.log2(resolution))
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, resample_filter=resample_filter, conv_clamp=conv_clamp,
                            use_noise=use_noise, activation=activation)
        self.const = None
        self.conv0 = None
        self.skip = None
        self.torgb = None
        if in_channels == 0:
            self.const = self._weight("const", [1, out_channels, resolution, resolution],
                                      keras.initializers.RandomNormal(stddev=1.0))
            self.conv1 = SynthesisLayer(out_channels, out_channels, noise_index=0, name="Conv", **layer_kwargs)
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, noise_index=2 * log2 - 5, name="Conv0_up",
                                        **layer_kwargs)
            self.conv1 = SynthesisLayer(out_channels, out_channels, noise_index=2 * log2 - 4, name="Conv1",
                                        **layer_kwargs)
            self.num_conv = 2
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, name="ToRGB")
            self.num_torgb = 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, name="Skip")
        self.built = True

    @property
    def layers_by_tf1_name(self) -> dict:
        out = {}
        if self.const is not None:
            out["Conv"] = self.conv1
        else:
            out["Conv0_up"] = self.conv0
            out["Conv1"] = self.conv1
        if self.torgb is not None:
            out["ToRGB"] = self.torgb
        if self.skip is not None:
            out["Skip"] = self.skip
        return out

    def synthesis_layers(self) -> list:
        return [l for l in (self.conv0, self.conv1) if l is not None]

    def named_variables(self):
        out = {}
        if self.const is not None:
            out["Const/const"] = self.const
        for name, layer in self.layers_by_tf1_name.items():
            out.update(prefixed(name, layer.named_variables()))
        return out

    def dtype_for(self, force_fp32):
        return compute_dtype(self.fp16_dtype) if (self.use_fp16 and not force_fp32) else tf.float32

    def call(self, ws, x=None, img=None, force_fp32=False, fused_modconv=None, noise_mode="random",
             noise_seed=None, training=False):
        dtype = self.dtype_for(force_fp32)
        if fused_modconv is None:
            # NVIDIA: fused (grouped) modconv for inference in fp32 or batch 1; the per-sample
            # weights would overflow fp16, and training prefers the shared-weight convolution.
            fused_modconv = (not training) and (dtype == tf.float32 or ws.shape[0] == 1)
        w_iter = iter(tf.unstack(ws, num=self.num_conv + self.num_torgb, axis=1))
        layer_kwargs = dict(noise_mode=noise_mode, noise_seed=noise_seed, fused_modconv=fused_modconv)

        if self.in_channels == 0:
            const = tf.cast(tf.transpose(tf.convert_to_tensor(self.const), [0, 2, 3, 1]), dtype)
            x = tf.tile(const, tf.stack([tf.shape(ws)[0], 1, 1, 1]))
        else:
            x = tf.cast(x, dtype)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=SQRT_HALF)
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), gain=SQRT_HALF, **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)

        if img is not None:
            img = ops.upsample2d(img, tf.constant(self.resample_filter))
        if self.torgb is not None:
            y = tf.cast(self.torgb(x, next(w_iter), fused_modconv=fused_modconv), tf.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(Layer):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 conv_clamp=None, architecture="skip", resample_filter=(1, 3, 3, 1), use_noise=True,
                 fp16_dtype="float16", activation="lrelu", **kwargs):
        super().__init__(**kwargs)
        self.w_dim = int(w_dim)
        self.img_resolution = int(img_resolution)
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = int(img_channels)
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.blocks = []
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == self.img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, architecture=architecture,
                                   resample_filter=resample_filter, conv_clamp=conv_clamp,
                                   use_fp16=res >= self.fp16_resolution, fp16_dtype=fp16_dtype, use_noise=use_noise,
                                   activation=activation, name=f"b{res}")
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            self.blocks.append(block)
        self.built = True

    def block(self, res: int) -> SynthesisBlock:
        return self.blocks[self.block_resolutions.index(res)]

    def noise_layers(self) -> list:
        """Synthesis layers in TF1 `noise{i}` order."""
        return [l for b in self.blocks for l in b.synthesis_layers()]

    def named_variables(self):
        out = {}
        for layer in self.noise_layers():
            if layer.use_noise:
                out[f"noise{layer.noise_index}"] = layer.noise_const
        for res, block in zip(self.block_resolutions, self.blocks):
            out.update(prefixed(f"{res}x{res}", block.named_variables()))
        return out

    def call(self, ws, noise_mode="random", noise_seed=None, force_fp32=False, fused_modconv=None, training=False):
        check_noise_mode(noise_mode)
        ws = tf.cast(tf.convert_to_tensor(ws), tf.float32)
        if ws.shape.rank != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {ws.shape}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            block_ws = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb]
            w_idx += block.num_conv
            x, img = block(block_ws, x, img, force_fp32=force_fp32, fused_modconv=fused_modconv,
                           noise_mode=noise_mode, noise_seed=noise_seed, training=training)
        return img
