"""Training configuration presets (`--cfg`), with the values of NVIDIA's stylegan2-ada
(ADA paper, Appendix A/B, and `train.py` of both official releases).

A preset fixes the reference batch, minibatch-stddev group, feature-map multiplier, learning rate,
R1 gamma, EMA half-life, EMA ramp-up and mapping depth. `auto` derives them from the resolution and
the number of devices with NVIDIA's formulas. `tiny` is ours, not NVIDIA's: a small network that
trains in minutes on a CPU, for the demo and the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig


@dataclass(frozen=True)
class Preset:
    name: str
    ref_gpus: int
    kimg: int
    batch: int  # global minibatch ("mb")
    mbstd_group: int
    fmaps: float  # channel_base = fmaps * 32768
    lrate: float
    gamma: float  # R1 gamma
    ema_kimg: float
    ema_rampup: float | None
    map_layers: int
    channel_max: int = 512
    pl_weight: float = 2.0
    style_mixing_prob: float = 0.9
    d_architecture: str = "resnet"
    num_fp16_res: int = 4
    conv_clamp: float | None = 256
    z_dim: int = 512
    w_dim: int = 512
    ours: bool = False  # True for presets that are not NVIDIA's

    @property
    def channel_base(self) -> int:
        return int(self.fmaps * 32768)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# NVIDIA's fixed presets (stylegan2-ada-pytorch train.py `cfg_specs`).
PRESETS: dict[str, Preset] = {
    "stylegan2": Preset("stylegan2", ref_gpus=8, kimg=25000, batch=32, mbstd_group=4, fmaps=1, lrate=0.002,
                        gamma=10, ema_kimg=10, ema_rampup=None, map_layers=8),
    "paper256": Preset("paper256", ref_gpus=8, kimg=25000, batch=64, mbstd_group=8, fmaps=0.5, lrate=0.0025,
                       gamma=1, ema_kimg=20, ema_rampup=None, map_layers=8),
    "paper512": Preset("paper512", ref_gpus=8, kimg=25000, batch=64, mbstd_group=8, fmaps=1, lrate=0.0025,
                       gamma=0.5, ema_kimg=20, ema_rampup=None, map_layers=8),
    "paper1024": Preset("paper1024", ref_gpus=8, kimg=25000, batch=32, mbstd_group=4, fmaps=1, lrate=0.002,
                        gamma=2, ema_kimg=10, ema_rampup=None, map_layers=8),
    # cifar: no path-length regularisation, no style mixing, D without residual connections.
    "cifar": Preset("cifar", ref_gpus=2, kimg=100000, batch=64, mbstd_group=32, fmaps=1, lrate=0.0025,
                    gamma=0.01, ema_kimg=500, ema_rampup=0.05, map_layers=2, pl_weight=0.0,
                    style_mixing_prob=0.0, d_architecture="orig"),
    # Ours: 32-64 px, a few dozen channels; fp32 because CPUs gain nothing from fp16.
    "tiny": Preset("tiny", ref_gpus=1, kimg=200, batch=16, mbstd_group=4, fmaps=1 / 32, lrate=0.0025,
                   gamma=0.1, ema_kimg=2, ema_rampup=0.05, map_layers=2, channel_max=64, num_fp16_res=0,
                   conv_clamp=None, z_dim=64, w_dim=64, ours=True),
}

CFG_NAMES = ("auto", *PRESETS)


def auto_preset(resolution: int, gpus: int) -> Preset:
    """NVIDIA's `auto` config: hyperparameters from the resolution and the device count."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)  # keeps memory per GPU in check
    mbstd = min(batch // gpus, 4)
    fmaps = 1 if resolution >= 512 else 0.5
    lrate = 0.002 if resolution >= 1024 else 0.0025
    gamma = 0.0002 * (resolution**2) / batch  # NVIDIA's heuristic
    ema = batch * 10 / 32
    return Preset("auto", ref_gpus=gpus, kimg=25000, batch=batch, mbstd_group=mbstd, fmaps=fmaps, lrate=lrate,
                  gamma=gamma, ema_kimg=ema, ema_rampup=0.05, map_layers=2)


def get_preset(cfg: str, resolution: int, gpus: int = 1) -> Preset:
    if cfg == "auto":
        return auto_preset(resolution, gpus)
    if cfg not in PRESETS:
        raise ValueError(f"unknown --cfg {cfg!r}; choose one of {', '.join(CFG_NAMES)}")
    return PRESETS[cfg]


def network_configs(preset: Preset, resolution: int, img_channels: int = 3, c_dim: int = 0,
                    ) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """The G and D configs a preset trains, as NVIDIA's train.py sets them up."""
    G = GeneratorConfig(
        z_dim=preset.z_dim, c_dim=c_dim, w_dim=preset.w_dim, img_resolution=resolution, img_channels=img_channels,
        mapping=MappingConfig(num_layers=preset.map_layers), channel_base=preset.channel_base,
        channel_max=preset.channel_max, num_fp16_res=preset.num_fp16_res, conv_clamp=preset.conv_clamp,
    )
    D = DiscriminatorConfig(
        c_dim=c_dim, img_resolution=resolution, img_channels=img_channels, architecture=preset.d_architecture,
        channel_base=preset.channel_base, channel_max=preset.channel_max, num_fp16_res=preset.num_fp16_res,
        conv_clamp=preset.conv_clamp, mbstd_group_size=preset.mbstd_group,
        mapping_layers=8, mapping_lr_multiplier=0.01,  # PyTorch-style D label mapping for new runs
    )
    return G, D
