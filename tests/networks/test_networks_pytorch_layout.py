"""legacy/pytorch_layout.py without reference files: layouts, flips, the +1 of the style bias, noise
indices, config translation and the errors for things we cannot convert."""

from __future__ import annotations

import numpy as np
import pytest

from sg2ada.errors import UserError
from sg2ada.legacy.pytorch_layout import (discriminator_config_from_pytorch, discriminator_from_pytorch,
                                          generator_config_from_pytorch, generator_from_pytorch,
                                          generator_to_pytorch)


def test_generator_layouts():
    rng = np.random.default_rng(0)
    w_up = rng.normal(size=[8, 4, 3, 3]).astype(np.float32)  # [out, in, kh, kw]
    w = rng.normal(size=[8, 8, 3, 3]).astype(np.float32)
    state = {
        "mapping.fc0.weight": rng.normal(size=[16, 12]).astype(np.float32),
        "synthesis.b4.const": rng.normal(size=[4, 4, 4]).astype(np.float32),
        "synthesis.b8.conv0.weight": w_up,
        "synthesis.b8.conv1.weight": w,
        "synthesis.b8.conv0.affine.bias": np.full([4], 1.25, np.float32),
        "synthesis.b8.conv0.noise_const": rng.normal(size=[8, 8]).astype(np.float32),
        "synthesis.b8.conv1.noise_const": rng.normal(size=[8, 8]).astype(np.float32),
        "synthesis.b4.conv1.noise_const": rng.normal(size=[4, 4]).astype(np.float32),
        "synthesis.b8.resample_filter": np.ones([4, 4], np.float32),
    }
    out = generator_from_pytorch(state)
    assert out["mapping/Dense0/weight"].shape == (12, 16)
    assert out["synthesis/4x4/Const/const"].shape == (1, 4, 4, 4)
    up = out["synthesis/8x8/Conv0_up/weight"]
    assert up.shape == (3, 3, 4, 8)
    np.testing.assert_array_equal(up[0, 0, 1, 2], w_up[2, 1, 2, 2])  # flipped spatially
    np.testing.assert_array_equal(out["synthesis/8x8/Conv1/weight"][0, 2, 1, 2], w[2, 1, 0, 2])  # not flipped
    np.testing.assert_array_equal(out["synthesis/8x8/Conv0_up/mod_bias"], np.full([4], 0.25, np.float32))
    np.testing.assert_array_equal(out["synthesis/noise0"][0, 0], state["synthesis.b4.conv1.noise_const"])
    np.testing.assert_array_equal(out["synthesis/noise1"][0, 0], state["synthesis.b8.conv0.noise_const"])
    np.testing.assert_array_equal(out["synthesis/noise2"][0, 0], state["synthesis.b8.conv1.noise_const"])
    assert not any("resample_filter" in k for k in out)
    back = generator_to_pytorch(out)
    for k, v in state.items():
        if "resample_filter" not in k:
            np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_unknown_parameters_are_user_errors():
    with pytest.raises(UserError, match="synthesis.b8.attention.weight"):
        generator_from_pytorch({"synthesis.b8.attention.weight": np.zeros([1])}, source="net.pkl")
    with pytest.raises(UserError, match="b8.conv2.weight"):
        discriminator_from_pytorch({"b8.conv2.weight": np.zeros([1, 1, 1, 1])})


def test_configs_from_init_kwargs():
    g = generator_config_from_pytorch({
        "z_dim": 64, "c_dim": 3, "w_dim": 32, "img_resolution": 32, "img_channels": 1,
        "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 1024, "channel_max": 64,
                                                                 "num_fp16_res": 4, "conv_clamp": 256,
                                                                 "architecture": "resnet"}})
    assert (g.z_dim, g.c_dim, g.w_dim, g.img_channels, g.mapping.num_layers) == (64, 3, 32, 1, 2)
    assert (g.channel_base, g.num_fp16_res, g.conv_clamp, g.architecture) == (1024, 4, 256, "resnet")
    d = discriminator_config_from_pytorch({
        "c_dim": 3, "img_resolution": 32, "img_channels": 1, "architecture": "orig",
        "block_kwargs": {"freeze_layers": 2}, "mapping_kwargs": {}, "epilogue_kwargs": {"mbstd_group_size": 8}})
    assert (d.mapping_layers, d.mapping_lr_multiplier, d.mbstd_group_size, d.freeze_layers) == (8, 0.01, 8, 2)
    with pytest.raises(UserError, match="synthesis_kwargs"):
        generator_config_from_pytorch({"z_dim": 1, "w_dim": 1, "img_resolution": 8, "img_channels": 3,
                                       "synthesis_kwargs": {"magic": 1}})
