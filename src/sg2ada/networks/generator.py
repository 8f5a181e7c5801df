"""The StyleGAN2 generator `G_main` = `G_mapping` + `G_synthesis` (Karras et al. 2020), as NVIDIA's
`Generator` in `training/networks.py` and TF1 `G_main` (whose variables live in components
`mapping/` and `synthesis/`, with the moving average `dlatent_avg` at the top level).

    ws  = G.mapping(z, c, truncation_psi=1, truncation_cutoff=None, update_w_avg=False)
    img = G.synthesis(ws, noise_mode="random", noise_seed=None, force_fp32=False)   # NHWC
    img = G(z, c, ...)

Style mixing and the path-length regulariser live in the training loss; the generator only offers
the two halves.
"""

from __future__ import annotations

import keras
import numpy as np

from sg2ada.networks.config import GeneratorConfig
from sg2ada.networks.layers import TF1Variables, prefixed
from sg2ada.networks.mapping import MappingNetwork
from sg2ada.networks.synthesis import SynthesisNetwork


class Generator(TF1Variables, keras.Model):
    def __init__(self, config: GeneratorConfig, name="G", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(name=name, **kwargs)
        self.config = config
        self.z_dim = config.z_dim
        self.c_dim = config.c_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=config.w_dim, img_resolution=config.img_resolution, img_channels=config.img_channels,
            channel_base=config.channel_base, channel_max=config.channel_max, num_fp16_res=config.num_fp16_res,
            conv_clamp=config.conv_clamp, architecture=config.architecture, resample_filter=config.resample_filter,
            use_noise=config.use_noise, fp16_dtype=config.fp16_dtype, name="synthesis")
        self.num_ws = self.synthesis.num_ws
        assert self.num_ws == config.num_ws
        m = config.mapping
        self.mapping = MappingNetwork(
            z_dim=config.z_dim, c_dim=config.c_dim, w_dim=config.w_dim, num_ws=self.num_ws, num_layers=m.num_layers,
            embed_features=m.embed_features, layer_features=m.layer_features, activation=m.activation,
            lr_multiplier=m.lr_multiplier, w_avg_beta=m.w_avg_beta,
            layer_name="Dense", name="mapping")
        self.built = True

    @property
    def w_avg(self):
        return self.mapping.w_avg

    def named_variables(self) -> dict:
        out = prefixed("mapping", self.mapping.named_variables())
        out["dlatent_avg"] = self.mapping.w_avg
        out.update(prefixed("synthesis", self.synthesis.named_variables()))
        return out

    def call(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode="random", noise_seed=None,
             force_fp32=False, fused_modconv=None, update_w_avg=False, training=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, noise_seed=noise_seed, force_fp32=force_fp32,
                              fused_modconv=fused_modconv, training=training)


def generate_images(G, z, c, batch_size: int | None = None, noise_mode: str = "const") -> np.ndarray:
    """G(z, c) in batches of `batch_size` (normally G_ema on fixed latents); NHWC float32 NumPy in
    about [-1, 1]. `c` has one row per latent ([N, 0] for an unconditional G). By default a batch
    holds as many pixels as 32 images at 64x64: below that, eager G is bound by per-op dispatch."""
    import tensorflow as tf

    if batch_size is None:
        batch_size = int(np.clip(32 * (64 // G.img_resolution) ** 2, 32, 1024))
    out = []
    for i in range(0, len(z), batch_size):
        zi = tf.convert_to_tensor(z[i: i + batch_size], tf.float32)
        ci = tf.convert_to_tensor(c[i: i + batch_size], tf.float32)
        out.append(np.asarray(G(zi, ci, noise_mode=noise_mode), dtype=np.float32))
    if not out:
        return np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels], np.float32)
    return np.concatenate(out)
