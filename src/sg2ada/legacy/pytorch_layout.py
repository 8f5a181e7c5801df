"""Conversion between NVIDIA's stylegan2-ada-pytorch parameter layout and ours (= NVIDIA's TF1 layout).

NVIDIA's `legacy.py` (`convert_tf_generator`, `convert_tf_discriminator`) maps TF1 variables to
PyTorch `state_dict` entries; this module is the inverse, written from the same facts:

- dense weights: PyTorch `[out, in]` <-> TF1 `[in, out]` (transpose);
- conv weights: PyTorch `[out, in, kh, kw]` <-> TF1 `[kh, kw, in, out]`; the generator's
  up-sampling kernels (`conv0` = `Conv0_up`, resnet `skip` = `Skip`) are also spatially flipped,
  because PyTorch runs them as true convolutions (`flip_weight=False`) and TF1 as correlations;
- affine (style) biases: PyTorch includes the +1 that TF1 adds at run time (`mod_bias = bias - 1`);
- `synthesis.b4.const` `[C, 4, 4]` <-> `4x4/Const/const` `[1, C, 4, 4]`;
- `noise_const` `[H, W]` <-> `noise{i}` `[1, 1, H, W]`, i = 0 for 4x4, 2*log2(r)-5 / 2*log2(r)-4
  for conv0 / conv1 at resolution r;
- `mapping.w_avg` <-> `dlatent_avg`; `resample_filter` buffers carry no information (the filter is
  part of the config) and are dropped.

Keys are the generator's / discriminator's `named_variables()` names (G: `mapping/...`,
`synthesis/...`, `dlatent_avg`; D: `{r}x{r}/...`, `Output/...`, `LabelEmbed/...`, `Mapping{i}/...`).
Also here: the network configs implied by NVIDIA's PyTorch `init_kwargs`.
"""

from __future__ import annotations

import re

import numpy as np

from sg2ada.errors import UserError
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig


def _dense(w):
    return np.ascontiguousarray(np.asarray(w, np.float32).T)


def _conv(w, flip=False):
    w = np.asarray(w, np.float32).transpose(2, 3, 1, 0)
    if flip:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w)


def _conv_to_pt(w, flip=False):
    w = np.asarray(w, np.float32)
    if flip:
        w = w[::-1, ::-1]
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def _noise_index(res: int, conv: str) -> int:
    if res == 4:
        return 0
    log2 = int(np.log2(res))
    return 2 * log2 - 5 if conv == "conv0" else 2 * log2 - 4


_G_LAYER = re.compile(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(weight|bias|noise_strength|noise_const|"
                      r"affine\.weight|affine\.bias)")


def generator_from_pytorch(state: dict, source: str = "PyTorch generator") -> dict:
    """NVIDIA PyTorch `Generator.state_dict()` arrays (no `G/` prefix) -> our TF1-named arrays."""
    out = {}
    for key, value in state.items():
        v = np.asarray(value, dtype=np.float32)
        if key.endswith("resample_filter"):
            continue
        if key == "mapping.w_avg":
            out["dlatent_avg"] = v
            continue
        m = re.fullmatch(r"mapping\.(embed|fc(\d+))\.(weight|bias)", key)
        if m:
            scope = "LabelEmbed" if m.group(1) == "embed" else f"Dense{m.group(2)}"
            out[f"mapping/{scope}/{m.group(3)}"] = _dense(v) if m.group(3) == "weight" else v
            continue
        if key == "synthesis.b4.const":
            out["synthesis/4x4/Const/const"] = v[np.newaxis]
            continue
        m = re.fullmatch(r"synthesis\.b(\d+)\.skip\.weight", key)
        if m:
            r = int(m.group(1))
            out[f"synthesis/{r}x{r}/Skip/weight"] = _conv(v, flip=True)
            continue
        m = _G_LAYER.fullmatch(key)
        if m:
            r, layer, param = int(m.group(1)), m.group(2), m.group(3)
            scope = {"conv0": "Conv0_up", "conv1": "Conv" if r == 4 else "Conv1", "torgb": "ToRGB"}[layer]
            prefix = f"synthesis/{r}x{r}/{scope}"
            if param == "weight":
                out[f"{prefix}/weight"] = _conv(v, flip=(layer == "conv0"))
            elif param == "noise_const":
                out[f"synthesis/noise{_noise_index(r, layer)}"] = v[np.newaxis, np.newaxis]
            elif param == "affine.weight":
                out[f"{prefix}/mod_weight"] = _dense(v)
            elif param == "affine.bias":
                out[f"{prefix}/mod_bias"] = v - np.float32(1)
            else:
                out[f"{prefix}/{param}"] = v
            continue
        raise UserError(f"{source}: unknown parameter {key!r}; only NVIDIA's StyleGAN2(-ADA) generator is supported")
    return out


def generator_to_pytorch(values: dict) -> dict:
    """Inverse of `generator_from_pytorch` (without the `resample_filter` buffers)."""
    out = {}
    for key, value in values.items():
        v = np.asarray(value, np.float32)
        if key == "dlatent_avg":
            out["mapping.w_avg"] = v
            continue
        m = re.fullmatch(r"mapping/(LabelEmbed|Dense(\d+))/(weight|bias)", key)
        if m:
            mod = "embed" if m.group(1) == "LabelEmbed" else f"fc{m.group(2)}"
            out[f"mapping.{mod}.{m.group(3)}"] = _dense(v) if m.group(3) == "weight" else v
            continue
        if key == "synthesis/4x4/Const/const":
            out["synthesis.b4.const"] = v[0]
            continue
        m = re.fullmatch(r"synthesis/noise(\d+)", key)
        if m:
            i = int(m.group(1))
            res = 4 if i == 0 else 2 ** ((i + 5) // 2)
            layer = "conv1" if (i == 0 or i % 2 == 0) else "conv0"
            out[f"synthesis.b{res}.{layer}.noise_const"] = v[0, 0]
            continue
        m = re.fullmatch(r"synthesis/(\d+)x\d+/(Conv|Conv0_up|Conv1|ToRGB|Skip)/(\w+)", key)
        if m:
            r, scope, param = int(m.group(1)), m.group(2), m.group(3)
            layer = {"Conv": "conv1", "Conv0_up": "conv0", "Conv1": "conv1", "ToRGB": "torgb", "Skip": "skip"}[scope]
            prefix = f"synthesis.b{r}.{layer}"
            if param == "weight":
                out[f"{prefix}.weight"] = _conv_to_pt(v, flip=scope in ("Conv0_up", "Skip"))
            elif param == "mod_weight":
                out[f"{prefix}.affine.weight"] = _dense(v)
            elif param == "mod_bias":
                out[f"{prefix}.affine.bias"] = v + np.float32(1)
            else:
                out[f"{prefix}.{param}"] = v
            continue
        raise ValueError(f"unknown generator variable {key!r}")
    return out


_D_BLOCK = {"fromrgb": "FromRGB", "conv0": "Conv0", "conv1": "Conv1_down", "skip": "Skip"}
_D_EPILOGUE = {"fromrgb": "4x4/FromRGB", "conv": "4x4/Conv", "fc": "4x4/Dense0", "out": "Output"}


def discriminator_from_pytorch(state: dict, source: str = "PyTorch discriminator") -> dict:
    """NVIDIA PyTorch `Discriminator.state_dict()` arrays (no `D/` prefix) -> our TF1-named arrays."""
    out = {}
    for key, value in state.items():
        v = np.asarray(value, dtype=np.float32)
        if key.endswith("resample_filter"):
            continue
        m = re.fullmatch(r"b4\.(fromrgb|conv|fc|out)\.(weight|bias)", key)
        if m:
            name = f"{_D_EPILOGUE[m.group(1)]}/{m.group(2)}"
            if m.group(2) == "bias":
                out[name] = v
            else:
                out[name] = _conv(v) if v.ndim == 4 else _dense(v)
            continue
        m = re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip)\.(weight|bias)", key)
        if m:
            r = int(m.group(1))
            name = f"{r}x{r}/{_D_BLOCK[m.group(2)]}/{m.group(3)}"
            out[name] = _conv(v) if m.group(3) == "weight" else v
            continue
        m = re.fullmatch(r"mapping\.(embed|fc(\d+))\.(weight|bias)", key)
        if m:
            scope = "LabelEmbed" if m.group(1) == "embed" else f"Mapping{m.group(2)}"
            out[f"{scope}/{m.group(3)}"] = _dense(v) if m.group(3) == "weight" else v
            continue
        raise UserError(f"{source}: unknown parameter {key!r}; only NVIDIA's StyleGAN2(-ADA) discriminator is "
                        "supported")
    return out


def discriminator_to_pytorch(values: dict) -> dict:
    """Inverse of `discriminator_from_pytorch` (without the `resample_filter` buffers)."""
    inv_block = {v: k for k, v in _D_BLOCK.items()}
    inv_epi = {v: k for k, v in _D_EPILOGUE.items()}
    out = {}
    for key, value in values.items():
        v = np.asarray(value, np.float32)
        scope, param = key.rsplit("/", 1)
        if scope in inv_epi:
            name = f"b4.{inv_epi[scope]}.{param}"
            out[name] = v if param == "bias" else (_conv_to_pt(v) if v.ndim == 4 else _dense(v))
            continue
        m = re.fullmatch(r"(\d+)x\d+/(FromRGB|Conv0|Conv1_down|Skip)", scope)
        if m:
            out[f"b{m.group(1)}.{inv_block[m.group(2)]}.{param}"] = _conv_to_pt(v) if param == "weight" else v
            continue
        m = re.fullmatch(r"LabelEmbed|Mapping(\d+)", scope)
        if m:
            mod = "embed" if scope == "LabelEmbed" else f"fc{m.group(1)}"
            out[f"mapping.{mod}.{param}"] = _dense(v) if param == "weight" else v
            continue
        raise ValueError(f"unknown discriminator variable {key!r}")
    return out


def split_prefixed(state: dict, prefix: str) -> dict:
    """The entries of a flat `{"G/...": array, "D/...": array}` dict under `prefix` (e.g. "G/")."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_known(kwargs: dict, known: set, what: str, source: str) -> None:
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise UserError(f"{source}: unsupported {what} argument {unknown[0]!r}; only NVIDIA's StyleGAN2-ADA "
                        "networks are supported")


def generator_config_from_pytorch(init_kwargs: dict, source: str = "PyTorch pickle") -> GeneratorConfig:
    """GeneratorConfig from NVIDIA's PyTorch `Generator` `init_kwargs`."""
    kw = dict(init_kwargs)
    mk = dict(kw.get("mapping_kwargs") or {})
    sk = dict(kw.get("synthesis_kwargs") or {})
    _check_known(mk, {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                      "w_avg_beta"}, "mapping_kwargs", source)
    _check_known(sk, {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                      "resample_filter", "use_noise", "activation", "fp16_channels_last", "channels_last",
                      "kernel_size"}, "synthesis_kwargs", source)
    if sk.get("activation", "lrelu") != "lrelu" or sk.get("kernel_size", 3) != 3:
        raise UserError(f"{source}: only lrelu activation and 3x3 kernels are supported in the synthesis network")
    mapping = MappingConfig(num_layers=mk.get("num_layers", 8), embed_features=mk.get("embed_features"),
                            layer_features=mk.get("layer_features"), activation=mk.get("activation", "lrelu"),
                            lr_multiplier=mk.get("lr_multiplier", 0.01), w_avg_beta=mk.get("w_avg_beta", 0.995))
    return GeneratorConfig(
        z_dim=kw["z_dim"], c_dim=kw.get("c_dim", 0), w_dim=kw["w_dim"], img_resolution=kw["img_resolution"],
        img_channels=kw["img_channels"], mapping=mapping, channel_base=sk.get("channel_base", 32768),
        channel_max=sk.get("channel_max", 512), num_fp16_res=sk.get("num_fp16_res", 0),
        conv_clamp=sk.get("conv_clamp"), architecture=sk.get("architecture", "skip"),
        resample_filter=tuple(sk.get("resample_filter", (1, 3, 3, 1))), use_noise=sk.get("use_noise", True))


def discriminator_config_from_pytorch(init_kwargs: dict, source: str = "PyTorch pickle") -> DiscriminatorConfig:
    """DiscriminatorConfig from NVIDIA's PyTorch `Discriminator` `init_kwargs`."""
    kw = dict(init_kwargs)
    bk = dict(kw.get("block_kwargs") or {})
    mk = dict(kw.get("mapping_kwargs") or {})
    ek = dict(kw.get("epilogue_kwargs") or {})
    _check_known(bk, {"activation", "resample_filter", "freeze_layers", "fp16_channels_last"}, "block_kwargs", source)
    _check_known(mk, {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier"},
                 "mapping_kwargs", source)
    _check_known(ek, {"mbstd_group_size", "mbstd_num_channels", "activation"}, "epilogue_kwargs", source)
    if any(d.get("activation", "lrelu") != "lrelu" for d in (bk, mk, ek)):
        raise UserError(f"{source}: only the lrelu activation is supported in the discriminator")
    if mk.get("embed_features") is not None or mk.get("layer_features") is not None:
        raise UserError(f"{source}: a discriminator label mapping with custom widths is not supported")
    return DiscriminatorConfig(
        c_dim=kw.get("c_dim", 0), img_resolution=kw["img_resolution"], img_channels=kw["img_channels"],
        architecture=kw.get("architecture", "resnet"), channel_base=kw.get("channel_base", 32768),
        channel_max=kw.get("channel_max", 512), num_fp16_res=kw.get("num_fp16_res", 0),
        conv_clamp=kw.get("conv_clamp"), cmap_dim=kw.get("cmap_dim"), mapping_layers=mk.get("num_layers", 8),
        mapping_lr_multiplier=mk.get("lr_multiplier", 0.01), mbstd_group_size=ek.get("mbstd_group_size", 4),
        mbstd_num_channels=ek.get("mbstd_num_channels", 1),
        resample_filter=tuple(bk.get("resample_filter", (1, 3, 3, 1))), freeze_layers=bk.get("freeze_layers", 0))
