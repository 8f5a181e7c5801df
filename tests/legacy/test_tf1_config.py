"""TF1 `static_kwargs` -> GeneratorConfig / DiscriminatorConfig, with the defaults of NVIDIA's TF1
`G_main`/`G_mapping`/`G_synthesis`/`D_main` (NVlabs/stylegan2-ada training/networks.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sg2ada.errors import UserError
from sg2ada.legacy.tf1_import import (discriminator_config_from_tf1, generator_config_from_tf1, tf1_arrays_for,
                                      tf1_to_variable_layout)
from sg2ada.legacy.tf1_pickle import TF1Network


def make_G(kwargs=None, synth_func="G_synthesis", num_ws=None, func="G_main"):
    kwargs = dict(kwargs or {})
    synth = TF1Network({"name": "G_synthesis", "build_func_name": synth_func, "static_kwargs": kwargs, "variables": []})
    mkw = dict(kwargs)
    if num_ws is not None:
        mkw["dlatent_broadcast"] = num_ws
    mapping = TF1Network({"name": "G_mapping", "build_func_name": "G_mapping", "static_kwargs": mkw, "variables": []})
    return TF1Network({"name": "G", "version": 5, "build_func_name": func, "static_kwargs": kwargs,
                       "components": {"synthesis": synth, "mapping": mapping}, "variables": []})


def make_D(kwargs=None, func="D_main"):
    return TF1Network({"name": "D", "version": 5, "build_func_name": func, "static_kwargs": dict(kwargs or {}),
                       "variables": []})


def test_generator_defaults_are_tf1_defaults():
    cfg, record = generator_config_from_tf1(make_G(), "x.pkl")
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim, cfg.img_resolution, cfg.img_channels) == (512, 512, 0, 1024, 3)
    assert cfg.channel_base == 2 * 16384 and cfg.channel_max == 512
    assert cfg.mapping.num_layers == 8 and cfg.mapping.lr_multiplier == 0.01 and cfg.mapping.w_avg_beta == 0.995
    assert cfg.num_fp16_res == 0 and cfg.conv_clamp is None and cfg.architecture == "skip"
    assert cfg.resample_filter == (1, 3, 3, 1) and cfg.use_noise
    assert record["truncation_psi"] == 0.5  # G_main's run-time default, recorded


def test_generator_translation():
    kw = dict(resolution=256, num_channels=1, label_size=10, latent_size=64, dlatent_size=96, fmap_base=8192,
              fmap_max=256, mapping_layers=4, mapping_fmaps=32, mapping_lrmul=0.1, label_fmaps=48,
              architecture="resnet", num_fp16_res=2, conv_clamp=256, resample_kernel=[1, 2, 1],
              truncation_psi=0.7, is_training=False, style_mixing_prob=0.9, randomize_noise=False,
              fused_modconv=True, dlatent_avg_beta=None)
    cfg, record = generator_config_from_tf1(make_G(kw, num_ws=14), "x.pkl")
    assert cfg.channel_base == 16384 and cfg.channel_max == 256
    assert [cfg.channels(r) for r in (4, 64, 256)] == [min(8192 // 2, 256), 16384 // 64, 16384 // 256]
    assert (cfg.z_dim, cfg.w_dim, cfg.c_dim, cfg.img_channels) == (64, 96, 10, 1)
    m = cfg.mapping
    assert (m.num_layers, m.layer_features, m.embed_features, m.lr_multiplier) == (4, 32, 48, 0.1)
    assert m.w_avg_beta == 1.0  # TF1 None = no update
    assert cfg.resample_filter == (1, 2, 1) and cfg.architecture == "resnet"
    assert cfg.num_fp16_res == 2 and cfg.conv_clamp == 256
    assert record["truncation_psi"] == 0.7 and record["randomize_noise"] is False


def test_label_embedding_defaults_to_latent_size():
    cfg, _ = generator_config_from_tf1(make_G(dict(label_size=5, latent_size=64, dlatent_size=128)))
    assert cfg.mapping.embed_features == 64  # TF1: latent_size (PyTorch would default to w_dim)
    cfg, _ = generator_config_from_tf1(make_G(dict(label_size=0)))
    assert cfg.mapping.embed_features is None


def test_channel_base_is_twice_fmap_base_by_nvidia_nf():
    for fmap_base, fmap_max, res in ((256, 64, 32), (16384, 512, 1024), (8192, 512, 256)):
        cfg, _ = generator_config_from_tf1(make_G(dict(fmap_base=fmap_base, fmap_max=fmap_max, resolution=res)))
        for log2 in range(2, res.bit_length()):
            nf = int(np.clip(int(fmap_base / 2.0 ** (log2 - 1)), 1, fmap_max))  # TF1 nf(stage = log2 - 1)
            assert cfg.channels(2**log2) == nf


@pytest.mark.parametrize("bad, match", [
    ({"fmap_decay": 0.5}, "fmap_decay=0.5"),
    ({"fmap_min": 128, "fmap_base": 256, "resolution": 64}, "fmap_min=128"),
    ({"nonlinearity": "relu"}, "nonlinearity='relu'"),
    ({"normalize_latents": False}, "normalize_latents=False"),
    ({"dtype": "float16"}, "dtype='float16'"),
    ({"fmap_const": 7}, "fmap_const=7"),
    ({"architecture": "weird"}, "architecture must be"),
    ({"resolution": 48}, "power of two"),
])
def test_generator_rejects_unsupported_numerics(bad, match):
    with pytest.raises(UserError, match=match) as e:
        generator_config_from_tf1(make_G(bad), "g.pkl")
    assert str(e.value).startswith("g.pkl: ")


def test_unknown_kwargs_are_named():
    with pytest.raises(UserError, match="g.pkl: .*does not know: frobnicate, zoom"):
        generator_config_from_tf1(make_G({"zoom": 2, "frobnicate": 1}), "g.pkl")
    with pytest.raises(UserError, match="d.pkl: .*does not know: zoom"):
        discriminator_config_from_tf1(make_D({"zoom": 2}), "d.pkl")


def test_fmap_min_that_changes_nothing_is_accepted():
    cfg, _ = generator_config_from_tf1(make_G({"fmap_min": 16, "fmap_base": 256, "resolution": 32}))
    assert cfg.channels(32) == 16


def test_wrong_build_functions():
    with pytest.raises(UserError, match="G_style"):
        generator_config_from_tf1(make_G(func="G_style"), "g.pkl")
    with pytest.raises(UserError, match="G_synthesis_stylegan_revised"):
        generator_config_from_tf1(make_G(synth_func="G_synthesis_stylegan_revised"), "g.pkl")
    with pytest.raises(UserError, match="D_stylegan"):
        discriminator_config_from_tf1(make_D(func="D_stylegan"), "d.pkl")
    with pytest.raises(UserError, match="broadcasts 5 ws"):
        generator_config_from_tf1(make_G(dict(resolution=32), num_ws=5), "g.pkl")


def test_discriminator_defaults_and_translation():
    cfg, _ = discriminator_config_from_tf1(make_D(), "d.pkl")
    assert cfg.channel_base == 32768 and cfg.architecture == "resnet"
    assert cfg.mbstd_group_size is None and cfg.mbstd_num_channels == 1  # D_main: None = whole minibatch
    assert cfg.mapping_layers == 0 and cfg.mapping_lr_multiplier == 0.1 and cfg.cmap_dim is None
    kw = dict(resolution=64, num_channels=3, label_size=7, fmap_base=1024, fmap_max=256, mbstd_group_size=8,
              mbstd_num_features=2, architecture="orig", num_fp16_res=3, conv_clamp=256, mapping_layers=2,
              mapping_lrmul=0.05, freeze_layers=3, augment_strength=0)
    cfg, record = discriminator_config_from_tf1(make_D(kw), "d.pkl")
    assert (cfg.c_dim, cfg.img_resolution, cfg.channel_base, cfg.channel_max) == (7, 64, 2048, 256)
    assert (cfg.mbstd_group_size, cfg.mbstd_num_channels, cfg.architecture) == (8, 2, "orig")
    assert (cfg.mapping_layers, cfg.mapping_lr_multiplier) == (2, 0.05)
    assert cfg.cmap_dim == 256  # TF1 nf(0) = min(fmap_base, fmap_max)
    assert record == {"freeze_layers": 3, "augment_strength": 0}
    cfg, _ = discriminator_config_from_tf1(make_D(dict(label_size=3, mapping_fmaps=32)))
    assert cfg.cmap_dim == 32


@pytest.mark.parametrize("bad", [{"use_spectral_norm": True}, {"use_pagan": True}, {"adaptive_dropout": 1},
                                 {"score_size": 4}, {"nonlinearity": "relu"}, {"fmap_decay": 2}])
def test_discriminator_rejects_comparison_methods(bad):
    with pytest.raises(UserError, match=f"{next(iter(bad))}="):
        discriminator_config_from_tf1(make_D(bad), "d.pkl")


def test_stylegan2_release_defaults():
    # The original StyleGAN2 release: mapping_fmaps 512 and D group size 4 by default.
    g, _ = generator_config_from_tf1(make_G({}, synth_func="G_synthesis_stylegan2"))
    assert g.mapping.layer_features == 512
    d, _ = discriminator_config_from_tf1(make_D({}, func="D_stylegan2"))
    assert d.mbstd_group_size == 4
    with pytest.raises(UserError, match="conditional StyleGAN2"):
        generator_config_from_tf1(make_G({"label_size": 3}, synth_func="G_synthesis_stylegan2"))


class _Var:
    def __init__(self, shape):
        self.shape = shape


class _Net:
    def __init__(self, shapes):
        self._v = {k: _Var(s) for k, s in shapes.items()}

    def named_variables(self):
        return self._v


def test_variable_matching_reports_names():
    net = _Net({"a/weight": (2, 3), "a/bias": (3,), "noise0": (1, 1, 4, 4)})
    arrays = {"a/weight": np.ones((2, 3)), "a/bias": np.zeros(3), "noise0": np.zeros((1, 1, 4, 4))}
    assert set(tf1_arrays_for(net, arrays, "p.pkl", "G")) == set(arrays)
    with pytest.raises(UserError, match=r"p.pkl: G does not match.*not in the pickle \(a/bias\).*does not have \(x\)"):
        tf1_arrays_for(net, {"a/weight": np.ones((2, 3)), "noise0": np.zeros((1, 1, 4, 4)), "x": np.ones(1)},
                       "p.pkl", "G")
    with pytest.raises(UserError, match=r"'a/weight' has shape \[3, 2\]"):
        tf1_arrays_for(net, {**arrays, "a/weight": np.ones((3, 2))}, "p.pkl", "G")
    # A finished progressive-growing `lod` of 0 is not a weight and is ignored.
    assert "lod" not in tf1_arrays_for(net, {**arrays, "lod": np.float32(0)}, "p.pkl", "G")


def test_layout_conversion_to_nhwc_variables():
    const = np.arange(3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)
    np.testing.assert_array_equal(tf1_to_variable_layout("4x4/Const/const", const, (1, 3, 4, 4)), const)
    np.testing.assert_array_equal(tf1_to_variable_layout("4x4/Const/const", const[:1], (4, 4, 3)),
                                  const[0].transpose(1, 2, 0))
    noise = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(tf1_to_variable_layout("noise0", noise, (4, 4)), noise[0, 0])
