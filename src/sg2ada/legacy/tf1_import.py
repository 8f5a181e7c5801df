"""Import of NVIDIA's TF1 StyleGAN2-ADA network pickles: `static_kwargs` -> our configs, variables by
name -> our Keras networks.

The keyword arguments and defaults are those of the TF1 build functions in NVlabs/stylegan2-ada
`training/networks.py` (`G_main`, `G_mapping`, `G_synthesis`, `D_main`); NVIDIA's own converter
(`legacy.py` of NVlabs/stylegan2-ada-pytorch, `convert_tf_generator` / `convert_tf_discriminator`)
does the same translation to the PyTorch configuration, which our configs mirror. Two facts drive
the numbers:
- TF1 channels are `nf(stage) = clip(fmap_base / 2**stage, fmap_min, fmap_max)` with stage
  `log2(res) - 1`, i.e. `fmap_base * 2 / res`: so `channel_base = 2 * fmap_base`.
- TF1's `G_main` applies `truncation_psi=0.5` by default at run time; our networks never truncate
  implicitly, so the value is recorded (meta) and left to the caller.

Keyword arguments that change the numerics in ways our networks do not implement (non-default
`fmap_decay`/`fmap_min`, spectral norm, PA-GAN, ...) are refused; arguments that only steer training
or evaluation (`is_training`, `truncation_psi`, `style_mixing_prob`, `freeze_layers`, ...) are
accepted and recorded; anything unknown is refused by name.
"""

from __future__ import annotations

import math
import os

import numpy as np

from sg2ada.errors import UserError
from sg2ada.legacy.restricted import jsonable
from sg2ada.legacy.tf1_pickle import KIND, TF1Network, read_tf1_pickle
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig
from sg2ada.networks.layers import assign_named
from sg2ada.networks.snapshot import Networks, build_networks

# Build functions we can translate. The original StyleGAN2 release (NVlabs/stylegan2,
# `training/networks_stylegan2.py`) names its synthesis and discriminator differently and has
# different defaults for a few arguments (see _SG2_DEFAULTS).
G_FUNCS = {"G_main"}
G_SYNTHESIS_FUNCS = {"G_synthesis", "G_synthesis_stylegan2"}
G_MAPPING_FUNCS = {"G_mapping"}
D_FUNCS = {"D_main", "D_stylegan2"}

# Keyword arguments that do not change what the trained network computes for given inputs: they
# steer training or TF1's graph building. Accepted, recorded in the import report.
_G_RUNTIME = {
    "is_training", "is_validation", "return_dlatents", "truncation_psi", "truncation_cutoff",
    "truncation_psi_val", "truncation_cutoff_val", "style_mixing_prob", "components", "mapping_func",
    "synthesis_func", "is_template_graph", "force_clean_graph", "randomize_noise", "fused_modconv",
    "dlatent_broadcast", "structure", "dlatent_avg_beta",
}
_D_RUNTIME = {"augment_strength", "freeze_layers", "is_template_graph", "structure", "is_training"}

# Every keyword of the TF1 build functions that the translation reads.
_G_KNOWN = {
    "latent_size", "label_size", "dlatent_size", "mapping_layers", "mapping_fmaps", "mapping_lrmul",
    "mapping_nonlinearity", "normalize_latents", "label_fmaps", "dtype", "num_channels", "resolution",
    "fmap_base", "fmap_decay", "fmap_min", "fmap_max", "fmap_const", "use_noise", "architecture",
    "nonlinearity", "num_fp16_res", "conv_clamp", "resample_kernel", "w_avg_beta",
} | _G_RUNTIME
_D_KNOWN = {
    "num_channels", "resolution", "label_size", "fmap_base", "fmap_decay", "fmap_min", "fmap_max",
    "mapping_layers", "mapping_fmaps", "mapping_lrmul", "architecture", "nonlinearity", "mbstd_group_size",
    "mbstd_num_features", "dtype", "num_fp16_res", "conv_clamp", "resample_kernel", "use_pagan", "pagan_num",
    "pagan_fade", "score_size", "score_max", "use_spectral_norm", "adaptive_dropout",
} | _D_RUNTIME


class _Kwargs:
    """Reads TF1 static_kwargs with TF1's defaults and collects the refusals."""

    def __init__(self, kwargs: dict, known: set, net: str, path: str):
        self.kwargs = dict(kwargs)
        self.net = net
        self.path = path
        unknown = sorted(set(self.kwargs) - known)
        if unknown:
            raise UserError(f"{path}: {net} has TF1 keyword argument(s) this importer does not know: "
                            f"{', '.join(unknown)}; only StyleGAN2-ADA networks can be converted")

    def get(self, name, default):
        v = self.kwargs.get(name, default)
        return default if v is None and default is not None else v

    def require(self, name, default, allowed, why):
        v = self.kwargs.get(name, default)
        if isinstance(allowed, (set, tuple, list, frozenset)):
            ok = v in allowed
        else:
            ok = v == allowed
        if not ok:
            raise UserError(f"{self.path}: {self.net} has {name}={v!r}; {why}, so this network cannot be converted")
        return v


def _int(v, name, path, net):
    try:
        if isinstance(v, bool) or int(v) != v:
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise UserError(f"{path}: {net} has {name}={v!r}, expected an integer; the pickle is damaged") from None


def _resample_filter(k, path, net):
    if k is None:
        # TF1's upfirdn helpers use a box filter [1]*factor for k=None (factor 2 everywhere here).
        return (1, 1)
    try:
        return tuple(int(x) if float(x).is_integer() else float(x) for x in np.asarray(k).ravel().tolist())
    except (TypeError, ValueError):
        raise UserError(f"{path}: {net} has resample_kernel={k!r}, expected a list of numbers") from None


def _nf(stage, fmap_base, fmap_max):
    return int(min(max(int(fmap_base / (2.0**stage)), 1), fmap_max))


def _check_channels(kw: _Kwargs, fmap_base: int, fmap_max: int):
    kw.require("fmap_decay", 1, {1, 1.0}, "our networks implement NVIDIA's fmap_decay=1 channel rule only")
    fmap_min = kw.get("fmap_min", 1)
    resolution = kw.get("resolution", 1024)
    # fmap_min only matters if it raises some layer's channel count; compute TF1's nf() with it.
    log2 = int(math.log2(resolution)) if resolution and resolution > 0 else 2
    for stage in range(0, log2):
        if _nf(stage, fmap_base, fmap_max) < min(fmap_min, fmap_max):
            raise UserError(f"{kw.path}: {kw.net} has fmap_min={fmap_min}, which changes channel counts; our networks "
                            "use NVIDIA's min(channel_base / res, channel_max) rule only, so it cannot be converted")


def generator_config_from_tf1(net: TF1Network, path: str = "?") -> tuple[GeneratorConfig, dict]:
    """GeneratorConfig for a TF1 `G_main` network, plus a record of the run-time arguments it carried."""
    path = os.fspath(path)
    if net.build_func_name not in G_FUNCS:
        raise UserError(f"{path}: generator {net.name!r} was built by {net.build_func_name!r}, not G_main; "
                        "only StyleGAN2(-ADA) generators can be converted")
    comps = net.components
    synth, mapping = comps.get("synthesis"), comps.get("mapping")
    if not isinstance(synth, TF1Network) or not isinstance(mapping, TF1Network):
        raise UserError(f"{path}: generator {net.name!r} lacks its mapping/synthesis components; the pickle is damaged")
    if synth.build_func_name not in G_SYNTHESIS_FUNCS or mapping.build_func_name not in G_MAPPING_FUNCS:
        raise UserError(f"{path}: generator {net.name!r} uses components {mapping.build_func_name!r} / "
                        f"{synth.build_func_name!r}; only G_mapping + G_synthesis (StyleGAN2-ADA) can be converted")
    sg2 = synth.build_func_name == "G_synthesis_stylegan2"

    # G_main forwards its **kwargs to both components, so G's static_kwargs hold everything. The
    # components' own kwargs are those plus dlatent_broadcast; merging catches hand-made pickles.
    merged = {**synth.static_kwargs, **mapping.static_kwargs, **net.static_kwargs}
    kw = _Kwargs(merged, _G_KNOWN, f"generator {net.name!r}", path)

    z_dim = _int(kw.get("latent_size", 512), "latent_size", path, kw.net)
    c_dim = _int(kw.get("label_size", 0), "label_size", path, kw.net)
    w_dim = _int(kw.get("dlatent_size", 512), "dlatent_size", path, kw.net)
    resolution = _int(kw.get("resolution", 1024), "resolution", path, kw.net)
    channels = _int(kw.get("num_channels", 3), "num_channels", path, kw.net)
    fmap_base = _int(kw.get("fmap_base", 16384), "fmap_base", path, kw.net)
    fmap_max = _int(kw.get("fmap_max", 512), "fmap_max", path, kw.net)
    _check_channels(kw, fmap_base, fmap_max)
    fmap_const = kw.get("fmap_const", None)
    if fmap_const is not None and fmap_const != _nf(1, fmap_base, fmap_max):
        raise UserError(f"{path}: {kw.net} has fmap_const={fmap_const}, different from the 4x4 channel count; "
                        "our networks do not support that, so it cannot be converted")
    kw.require("dtype", "float32", {"float32", "float16"} if sg2 else {"float32"},
               "our networks compute in float32 (plus the num_fp16_res blocks)")
    kw.require("normalize_latents", True, True, "our mapping always normalizes z")
    kw.require("nonlinearity", "lrelu", "lrelu", "our synthesis uses lrelu")
    activation = kw.require("mapping_nonlinearity", "lrelu", {"lrelu", "relu", "linear"},
                            "our mapping supports lrelu, relu and linear")
    if sg2 and c_dim > 0:
        raise UserError(f"{path}: {kw.net} is a conditional StyleGAN2 (not -ADA) generator, whose label input "
                        "(LabelConcat) our networks do not implement; it cannot be converted")

    mapping_fmaps = kw.get("mapping_fmaps", 512 if sg2 else None)
    label_fmaps = kw.get("label_fmaps", None)
    beta = kw.kwargs.get("w_avg_beta", kw.kwargs.get("dlatent_avg_beta", 0.995))
    mapping_cfg = MappingConfig(
        num_layers=_int(kw.get("mapping_layers", 8), "mapping_layers", path, kw.net),
        # TF1 embeds labels to latent_size features by default, PyTorch to w_dim: be explicit.
        embed_features=(int(label_fmaps) if label_fmaps is not None else z_dim) if c_dim > 0 else None,
        layer_features=int(mapping_fmaps) if mapping_fmaps is not None else None,
        activation=activation,
        lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
        # TF1 disables the w_avg update with None; tracking with beta 1 is the same and keeps w_avg.
        w_avg_beta=1.0 if beta is None else float(beta),
    )
    conv_clamp = kw.get("conv_clamp", None)
    try:
        cfg = GeneratorConfig(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=resolution, img_channels=channels,
            mapping=mapping_cfg, channel_base=2 * fmap_base, channel_max=fmap_max,
            num_fp16_res=_int(kw.get("num_fp16_res", 0), "num_fp16_res", path, kw.net),
            conv_clamp=float(conv_clamp) if conv_clamp is not None else None,
            architecture=str(kw.get("architecture", "skip")),
            resample_filter=_resample_filter(kw.kwargs.get("resample_kernel", [1, 3, 3, 1]), path, kw.net),
            use_noise=bool(kw.get("use_noise", True)),
        )
    except ValueError as e:
        raise UserError(f"{path}: {kw.net}: {e}") from None
    broadcast = mapping.static_kwargs.get("dlatent_broadcast")
    if broadcast is not None and broadcast != cfg.num_ws:
        raise UserError(f"{path}: {kw.net} mapping broadcasts {broadcast} ws, the synthesis needs {cfg.num_ws}; "
                        "the pickle is damaged")
    record = {k: jsonable(v) for k, v in merged.items() if k in _G_RUNTIME and k != "components"}
    # What TF1's G_main would have applied at run time had the caller not overridden it.
    record.setdefault("truncation_psi", 0.5)
    return cfg, record


def discriminator_config_from_tf1(net: TF1Network, path: str = "?") -> tuple[DiscriminatorConfig, dict]:
    path = os.fspath(path)
    if net.build_func_name not in D_FUNCS:
        raise UserError(f"{path}: discriminator {net.name!r} was built by {net.build_func_name!r}, not D_main; "
                        "only StyleGAN2(-ADA) discriminators can be converted")
    sg2 = net.build_func_name == "D_stylegan2"
    kw = _Kwargs(net.static_kwargs, _D_KNOWN, f"discriminator {net.name!r}", path)
    c_dim = _int(kw.get("label_size", 0), "label_size", path, kw.net)
    resolution = _int(kw.get("resolution", 1024), "resolution", path, kw.net)
    channels = _int(kw.get("num_channels", 3), "num_channels", path, kw.net)
    fmap_base = _int(kw.get("fmap_base", 16384), "fmap_base", path, kw.net)
    fmap_max = _int(kw.get("fmap_max", 512), "fmap_max", path, kw.net)
    _check_channels(kw, fmap_base, fmap_max)
    kw.require("dtype", "float32", {"float32", "float16"} if sg2 else {"float32"},
               "our networks compute in float32 (plus the num_fp16_res blocks)")
    kw.require("nonlinearity", "lrelu", "lrelu", "our discriminator uses lrelu")
    kw.require("use_spectral_norm", False, False, "spectral normalization is one of NVIDIA's comparison methods")
    kw.require("use_pagan", False, False, "PA-GAN is one of NVIDIA's comparison methods")
    kw.require("adaptive_dropout", 0, {0, 0.0}, "adaptive dropout is one of NVIDIA's comparison methods")
    kw.require("score_size", 1, 1, "auxiliary rotation scores are one of NVIDIA's comparison methods")
    kw.require("score_max", 1, 1, "auxiliary rotation scores are one of NVIDIA's comparison methods")
    if sg2 and c_dim > 0:
        raise UserError(f"{path}: {kw.net} is a conditional StyleGAN2 (not -ADA) discriminator, whose label "
                        "projection our networks do not implement; it cannot be converted")
    mbstd_group = kw.kwargs.get("mbstd_group_size", 4 if sg2 else None)
    mbstd_num = _int(kw.get("mbstd_num_features", 1), "mbstd_num_features", path, kw.net)
    if sg2 and mbstd_group is not None and mbstd_group <= 1:
        mbstd_num = 0  # D_stylegan2 disables the layer with group size <= 1
    mapping_fmaps = kw.get("mapping_fmaps", None)
    conv_clamp = kw.get("conv_clamp", None)
    try:
        cfg = DiscriminatorConfig(
            c_dim=c_dim, img_resolution=resolution, img_channels=channels,
            architecture=str(kw.get("architecture", "resnet")),
            channel_base=2 * fmap_base, channel_max=fmap_max,
            num_fp16_res=_int(kw.get("num_fp16_res", 0), "num_fp16_res", path, kw.net),
            conv_clamp=float(conv_clamp) if conv_clamp is not None else None,
            # TF1 D_main's label embedding width defaults to nf(0) = min(fmap_base, fmap_max); the
            # PyTorch default (channels at 4x4) can differ, so set it explicitly.
            cmap_dim=(int(mapping_fmaps) if mapping_fmaps is not None else _nf(0, fmap_base, fmap_max))
            if c_dim > 0 else None,
            mapping_layers=_int(kw.get("mapping_layers", 0), "mapping_layers", path, kw.net),
            mapping_lr_multiplier=float(kw.get("mapping_lrmul", 0.1)),
            mbstd_group_size=None if mbstd_group is None else _int(mbstd_group, "mbstd_group_size", path, kw.net),
            mbstd_num_channels=mbstd_num,
            resample_filter=_resample_filter(kw.kwargs.get("resample_kernel", [1, 3, 3, 1]), path, kw.net),
        )
    except ValueError as e:
        raise UserError(f"{path}: {kw.net}: {e}") from None
    record = {k: jsonable(v) for k, v in net.static_kwargs.items() if k in _D_RUNTIME}
    return cfg, record


# ---------------------------------------------------------------------------------------------------
# Variables.

# Variables that TF1 networks carry but that hold no weights of the trained function: the
# progressive-growing level `lod` of the original StyleGAN2 release (always 0 for a finished net).
_IGNORABLE = {"lod", "synthesis/lod"}


def tf1_arrays_for(network, tf1_vars: dict, path: str, which: str) -> dict:
    """Map the TF1 arrays of one network onto `network.named_variables()`, converting layouts.

    Every network variable must be filled and every pickle variable used; mismatches are reported
    by name."""
    named = network.named_variables()
    out = {}
    unused = set(tf1_vars)
    for name, var in named.items():
        if name not in tf1_vars:
            continue
        out[name] = tf1_to_variable_layout(name, tf1_vars[name], tuple(var.shape), path, which)
        unused.discard(name)
    for name in list(unused):
        if name in _IGNORABLE and np.all(tf1_vars[name] == 0):
            unused.discard(name)
    missing = sorted(set(named) - set(out))
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} network variable(s) not in the pickle ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''})")
        if unused:
            u = sorted(unused)
            parts.append(f"{len(u)} pickle variable(s) the network does not have ({', '.join(u[:4])}"
                         f"{', ...' if len(u) > 4 else ''})")
        raise UserError(f"{path}: {which} does not match the configuration from its static_kwargs: "
                        f"{'; '.join(parts)}; this is not a StyleGAN2-ADA network we can convert")
    return out


def tf1_to_variable_layout(name: str, value: np.ndarray, shape: tuple, path: str = "?", which: str = "?"):
    """A TF1 array in the layout of our variable of shape `shape`.

    Our networks store TF1's layouts (dense `[in, out]`, conv `[kh, kw, in, out]`), so most arrays
    pass unchanged. NCHW-shaped TF1 variables (`4x4/Const/const` `[1, C, 4, 4]`, `noise<i>`
    `[1, 1, H, W]`) are converted to NHWC when the network stores them that way."""
    value = np.asarray(value, dtype=np.float32)
    if tuple(value.shape) == tuple(shape):
        return value
    if value.size == int(np.prod(shape, dtype=np.int64)):
        if value.ndim == 4 and value.shape[0] == 1:
            nhwc = np.transpose(value, (0, 2, 3, 1))  # [1, C, H, W] -> [1, H, W, C]
            if nhwc.shape == tuple(shape):
                return nhwc
            squeezed = nhwc[0]
            if squeezed.shape == tuple(shape):  # [H, W, C]
                return squeezed
            if value.shape[1] == 1 and value[0, 0].shape == tuple(shape):  # noise [1,1,H,W] -> [H, W]
                return value[0, 0]
        if value.ndim == 0 or len(shape) == 0:
            return value.reshape(shape)
    raise UserError(f"{path}: {which} variable {name!r} has shape {list(value.shape)}, the network built from "
                    f"the pickle's static_kwargs expects {list(shape)}; the pickle does not match its configuration")


def tf1_networks_configs(path) -> dict:
    """Read a TF1 pickle and translate its configs without building anything (no TensorFlow).
    For a generator-only pickle, G, D and their configs/records are None."""
    G, D, Gs = read_tf1_pickle(path)
    gs_cfg, gs_rec = generator_config_from_tf1(Gs, path)
    g_rec = d_cfg = d_rec = None
    if G is not None:
        g_cfg, g_rec = generator_config_from_tf1(G, path)
        if g_cfg != gs_cfg:
            raise UserError(f"{path}: G and Gs have different configurations; the pickle is damaged")
    if D is not None:
        d_cfg, d_rec = discriminator_config_from_tf1(D, path)
    return {"G": G, "D": D, "Gs": Gs, "G_config": gs_cfg, "D_config": d_cfg,
            "record": {"G": g_rec, "Gs": gs_rec, "D": d_rec}}


def import_tf1_pickle(path, networks=("G", "D", "G_ema")):
    """Build G, D and G_ema (= TF1 Gs) from an NVIDIA TF1 pickle. Returns snapshot.Networks; the
    networks not named in `networks`, or not in the pickle (a generator-only pickle), are None."""
    path = os.fspath(path)
    info = tf1_networks_configs(path)
    which = tuple(k for k in networks if (k == "G_ema" or info["G" if k == "G" else "D"] is not None))
    G, D, G_ema = build_networks(info["G_config"], info["D_config"], which, source=path)
    for net, tf1, name in ((G, info["G"], "G"), (D, info["D"], "D"), (G_ema, info["Gs"], "Gs")):
        if net is None:
            continue
        assign_named(net, tf1_arrays_for(net, tf1.collect_variables(path), path, name), source=f"{path} ({name})")
    static = {k: {n: jsonable(v) for n, v in info[k].static_kwargs.items()} for k in ("G", "D", "Gs")
              if info[k] is not None}
    meta = {
        "format": "nvidia-tf1-pickle",
        "source": os.path.abspath(path),
        "G": info["G_config"].to_dict(),
        "D": info["D_config"].to_dict() if info["D_config"] is not None else None,
        "networks": [k for k, n in (("G", info["G"]), ("D", info["D"]), ("G_ema", info["Gs"])) if n is not None],
        "dataset": None,
        "kimg": None,
        "tf1_runtime_kwargs": {k: v for k, v in info["record"].items() if v is not None},
        "tf1_static_kwargs": static,
        "note": f"TF1 G_main would apply truncation_psi={info['record']['Gs'].get('truncation_psi')} at run time; "
                "sg2ada networks do not truncate unless asked",
    }
    return Networks(G, D, G_ema, meta)


__all__ = ["generator_config_from_tf1", "discriminator_config_from_tf1", "tf1_arrays_for", "tf1_to_variable_layout",
           "tf1_networks_configs", "import_tf1_pickle", "KIND"]
