"""The StyleGAN2 discriminator `D_main` (Karras et al. 2020, Sec. 4 and Fig. 7; conditioning by
projection, Miyato & Koyama 2018, as in the ADA paper's conditional models), as NVIDIA's
`DiscriminatorBlock`, `MinibatchStdLayer`, `DiscriminatorEpilogue` and `Discriminator` in
`training/networks.py` and TF1 `D_main`.

- DiscriminatorBlock (per resolution r > 4): FromRGB (first block, or every block for 'skip'),
  Conv0, Conv1_down; 'resnet' adds a bias-free 1x1 down-sampling Skip, and both paths are scaled by
  sqrt(0.5) before the sum. Blocks at the top `num_fp16_res` resolutions compute in reduced
  precision with conv_clamp; the epilogue is always float32.
- MinibatchStdLayer: the stddev over groups of min(group_size, N) samples, averaged over channels
  and pixels (in `num_channels` channel groups), appended as extra feature maps.
- DiscriminatorEpilogue (4x4): mbstd, Conv, Dense0 on the NCHW-flattened features (TF1/PyTorch
  order), Output; with labels the output (cmap_dim wide) is projected on the mapped label:
  sum(out * cmap) / sqrt(cmap_dim).
- Label mapping: `MappingNetwork(z_dim=0)`: LabelEmbed (normalised) then `mapping_layers` dense
  layers (`Mapping{i}`). NVIDIA's TF1 pickles use 0 layers, lr multiplier 0.1; its PyTorch code 8
  layers, 0.01.

TF1 variable names: `{r}x{r}/FromRGB|Conv0|Conv1_down|Skip/...`, `4x4/Conv/...`, `4x4/Dense0/...`,
`Output/...`, `LabelEmbed/...`, `Mapping{i}/...` (and `4x4/FromRGB/...` for 'skip').
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import keras

from sg2ada import ops
from sg2ada.networks.config import DiscriminatorConfig
from sg2ada.networks.layers import Conv2dLayer, FullyConnectedLayer, Layer, TF1Variables, prefixed, setup_filter_np
from sg2ada.networks.mapping import MappingNetwork
from sg2ada.networks.synthesis import compute_dtype

# Keras converts numpy scalars passed to a layer call into tensors; keep resnet gains Python floats.
SQRT_HALF = math.sqrt(0.5)


class DiscriminatorBlock(Layer):
    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, architecture="resnet",
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False,
                 fp16_dtype="float16", first_layer_idx=0, freeze_layers=0, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.resolution = int(resolution)
        self.num_layers = 0

        def trainable():
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        self.img_channels = int(img_channels)
        self.architecture = architecture
        self.use_fp16 = bool(use_fp16)
        self.fp16_dtype = fp16_dtype
        self.resample_filter = setup_filter_np(resample_filter)
        self.fromrgb = None
        self.skip = None
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp, trainable=trainable(), name="FromRGB")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp, trainable=trainable(), name="Conv0")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp, trainable=trainable(),
                                 name="Conv1_down")
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable(), name="Skip")
        self.built = True

    def named_variables(self):
        out = {}
        for name, layer in (("FromRGB", self.fromrgb), ("Conv0", self.conv0), ("Conv1_down", self.conv1),
                            ("Skip", self.skip)):
            if layer is not None:
                out.update(prefixed(name, layer.named_variables()))
        return out

    def call(self, x, img, force_fp32=False):
        dtype = compute_dtype(self.fp16_dtype) if (self.use_fp16 and not force_fp32) else tf.float32
        if x is not None:
            x = tf.cast(x, dtype)
        if self.fromrgb is not None:
            img = tf.cast(img, dtype)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = ops.downsample2d(img, tf.constant(self.resample_filter)) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=SQRT_HALF)
            x = self.conv0(x)
            x = self.conv1(x, gain=SQRT_HALF)
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(Layer):
    def __init__(self, group_size, num_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.group_size = group_size
        self.num_channels = int(num_channels)
        self.built = True

    def call(self, x):
        shape = tf.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        c = x.shape[3]
        f = self.num_channels
        if self.group_size is None:
            g = n
        elif x.shape[0] is not None:
            g = min(self.group_size, x.shape[0])
            if x.shape[0] % g:
                raise ValueError(f"minibatch stddev: the batch ({x.shape[0]}) must be a multiple of the group size "
                                 f"({g}); change the batch size or mbstd_group_size")
        else:
            g = tf.minimum(self.group_size, n)
        # Sample i belongs to group i mod (N / G), exactly as NVIDIA's reshape(G, -1, ...).
        y = tf.reshape(tf.cast(x, tf.float32), tf.stack([g, -1, h, w, f, c // f]))
        y = y - tf.reduce_mean(y, axis=0)
        y = tf.reduce_mean(tf.square(y), axis=0)
        y = tf.sqrt(y + 1e-8)
        y = tf.reduce_mean(y, axis=[1, 2, 4])  # [n, F]
        y = tf.cast(tf.reshape(y, tf.stack([-1, 1, 1, f])), x.dtype)
        y = tf.tile(y, tf.stack([g, h, w, 1]))
        return tf.concat([x, y], axis=3)


class DiscriminatorEpilogue(Layer):
    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.cmap_dim = int(cmap_dim)
        self.resolution = int(resolution)
        self.architecture = architecture
        self.fromrgb = None
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation, name="FromRGB")
        self.mbstd = (MinibatchStdLayer(mbstd_group_size, mbstd_num_channels, name="mbstd")
                      if mbstd_num_channels > 0 else None)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp, name="Conv")
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation, name="Dense0")
        self.out = FullyConnectedLayer(in_channels, 1 if self.cmap_dim == 0 else self.cmap_dim, name="Output")
        self.built = True

    def named_variables(self):
        out = {}
        if self.fromrgb is not None:
            out.update(prefixed("4x4/FromRGB", self.fromrgb.named_variables()))
        out.update(prefixed("4x4/Conv", self.conv.named_variables()))
        out.update(prefixed("4x4/Dense0", self.fc.named_variables()))
        out.update(prefixed("Output", self.out.named_variables()))
        return out

    def call(self, x, img, cmap=None):
        x = tf.cast(x, tf.float32)
        if self.fromrgb is not None:
            x = x + self.fromrgb(tf.cast(img, tf.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        # Dense0 was trained on NCHW-flattened features.
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, self.in_channels * self.resolution**2])
        x = self.fc(x)
        x = self.out(x)
        if self.cmap_dim > 0:
            x = tf.reduce_sum(x * cmap, axis=1, keepdims=True) * (1.0 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(TF1Variables, keras.Model):
    def __init__(self, config: DiscriminatorConfig, name="D", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(name=name, **kwargs)
        if config.img_resolution < 8:
            raise ValueError("the discriminator needs img_resolution >= 8 (NVIDIA's epilogue works on 4x4 features "
                             "produced by at least one block)")
        self.config = config
        self.c_dim = config.c_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        log2 = config.resolution_log2
        self.block_resolutions = config.block_resolutions
        channels = {res: config.channels(res) for res in self.block_resolutions + [4]}
        self.fp16_resolution = max(2 ** (log2 + 1 - config.num_fp16_res), 8)
        cmap_dim = config.cmap_dim if config.cmap_dim is not None else channels[4]
        if config.c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        self.blocks = []
        layer_idx = 0
        for res in self.block_resolutions:
            self.blocks.append(DiscriminatorBlock(
                channels[res] if res < config.img_resolution else 0, channels[res], channels[res // 2], resolution=res,
                img_channels=config.img_channels, architecture=config.architecture,
                resample_filter=config.resample_filter, conv_clamp=config.conv_clamp,
                use_fp16=res >= self.fp16_resolution, fp16_dtype=config.fp16_dtype, first_layer_idx=layer_idx,
                freeze_layers=config.freeze_layers, name=f"b{res}"))
            layer_idx += self.blocks[-1].num_layers
        self.mapping = None
        if config.c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=config.c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          num_layers=config.mapping_layers, lr_multiplier=config.mapping_lr_multiplier,
                                          layer_name="Mapping", name="mapping")
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, img_channels=config.img_channels,
                                        architecture=config.architecture, mbstd_group_size=config.mbstd_group_size,
                                        mbstd_num_channels=config.mbstd_num_channels, conv_clamp=config.conv_clamp,
                                        name="b4")
        self.built = True

    def named_variables(self) -> dict:
        out = {}
        for res, block in zip(self.block_resolutions, self.blocks):
            out.update(prefixed(f"{res}x{res}", block.named_variables()))
        out.update(self.b4.named_variables())
        if self.mapping is not None:
            out.update(self.mapping.named_variables())
        return out

    def call(self, img, c=None, force_fp32=False):
        img = tf.convert_to_tensor(img)
        if img.shape.rank != 4 or img.shape[1:] != (self.img_resolution, self.img_resolution, self.img_channels):
            raise ValueError(f"D expects NHWC images [N, {self.img_resolution}, {self.img_resolution}, "
                             f"{self.img_channels}], got {img.shape}")
        x = None
        for block in self.blocks:
            x, img = block(x, img, force_fp32=force_fp32)
        cmap = None
        if self.mapping is not None:
            if c is None:
                raise ValueError(f"this discriminator is conditional: pass labels c of shape [N, {self.c_dim}]")
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)
