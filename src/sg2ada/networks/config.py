"""Typed configuration of the StyleGAN2 generator and discriminator (Karras et al. 2020, "Analyzing
and Improving the Image Quality of StyleGAN", Sec. 2-4 and Appendix B; ADA paper Appendix B for the
mixed-precision settings).

Field names follow NVIDIA's stylegan2-ada-pytorch so that configurations can be compared with its
`training_options.json`. Channel counts follow its rule: channels at resolution r are
`min(channel_base // r, channel_max)` (NVIDIA's TF1 `fmap_base` is `channel_base / 2`).
Configs are frozen dataclasses: they go to JSON in snapshots and checkpoints (`to_dict`/`from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class _NetworkConfig:
    """What the G and D configs share: validation, the channel rule and the JSON form."""

    _kind = "?"  # G or D, in error messages

    def __post_init__(self):
        res = self.img_resolution
        if res < 4 or res > 1024 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of two from 4 to 1024, got {res}")
        if self.architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"{self._kind} architecture must be orig, skip or resnet, got {self.architecture!r}")
        if self.img_channels not in (1, 3):
            raise ValueError(f"img_channels must be 1 or 3, got {self.img_channels}")

    @property
    def resolution_log2(self) -> int:
        return self.img_resolution.bit_length() - 1

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "resample_filter" in d:
            d["resample_filter"] = tuple(d["resample_filter"])
        return cls(**d)


@dataclass(frozen=True)
class MappingConfig:
    num_layers: int = 8  # G: 8 in the paper presets, 2 for `auto`/`cifar`; D label mapping: see DiscriminatorConfig
    embed_features: int | None = None  # label embedding width; None = w_dim
    layer_features: int | None = None  # hidden width; None = w_dim
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: float | None = 0.995  # None disables w_avg tracking (D's label mapping)


@dataclass(frozen=True)
class GeneratorConfig(_NetworkConfig):
    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping: MappingConfig = field(default_factory=MappingConfig)
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0  # the top N resolutions compute in reduced precision
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp (256 with fp16)
    architecture: str = "skip"  # 'orig' | 'skip' | 'resnet'
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    use_noise: bool = True
    fp16_dtype: str = "float16"  # 'float16' (NVIDIA) or 'bfloat16'; only where num_fp16_res > 0

    _kind = "G"

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, self.resolution_log2 + 1)]

    @property
    def num_ws(self) -> int:
        # Each block uses 2 ws for its convs (1 for the 4x4 block) plus 1 shared with the next
        # block's first conv for ToRGB: 2 * log2(res) - 2 in total.
        return 2 * self.resolution_log2 - 2

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["mapping"] = MappingConfig(**d.get("mapping", {}))
        return super().from_dict(d)


@dataclass(frozen=True)
class DiscriminatorConfig(_NetworkConfig):
    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    architecture: str = "resnet"  # 'orig' | 'skip' | 'resnet'
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    cmap_dim: int | None = None  # projection width for conditioning; None = channels at 4x4
    # Label mapping depth: NVIDIA's TF1 pickles use 0 (labels embedded by one dense layer),
    # its PyTorch code uses the MappingNetwork default of 8.
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.1  # TF1 D mapping_lrmul; PyTorch D uses MappingConfig default (0.01)
    mbstd_group_size: int | None = 4  # None = whole minibatch
    mbstd_num_channels: int = 1
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    fp16_dtype: str = "float16"
    # Freeze-D (Mo et al. 2020; NVIDIA's --freezed): the first N layers, counted from the input
    # (FromRGB, Conv0, Conv1_down, Skip per block), get non-trainable weights.
    freeze_layers: int = 0

    _kind = "D"

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(self.resolution_log2, 2, -1)]
