"""Our G and D, loaded with NVIDIA's PyTorch weights through legacy/pytorch_layout.py, against the
outputs of NVIDIA's stylegan2-ada-pytorch (../shared/reference/pytorch_small_reference.npz, fp32).

Acceptance: relative error (||ours - ref|| / ||ref||) <= 1e-5 and max abs error <= 1e-4.
"""

from __future__ import annotations

import json

import pytest
from reference_testutil import load_reference_npz, nchw, nhwc
import tensorflow as tf

from sg2ada.legacy.pytorch_layout import (discriminator_config_from_pytorch, discriminator_from_pytorch,
                                          generator_config_from_pytorch, generator_from_pytorch, split_prefixed)
from sg2ada.networks.discriminator import Discriminator
from sg2ada.networks.generator import Generator

from networks_testutil import assert_close

@pytest.fixture(scope="module")
def ref(reference_dir):
    return load_reference_npz(reference_dir, "pytorch_small_reference.npz")


@pytest.fixture(scope="module")
def meta(ref):
    return json.loads(str(ref["meta_json"]))


@pytest.fixture
def G(ref, meta):
    g = Generator(generator_config_from_pytorch(meta["generator_kwargs"]))
    g.load_tf1_variables(generator_from_pytorch(split_prefixed(ref, "G/")), source="pytorch_small_reference.npz")
    return g


@pytest.fixture
def D(ref, meta):
    d = Discriminator(discriminator_config_from_pytorch(meta["discriminator_kwargs"]))
    d.load_tf1_variables(discriminator_from_pytorch(split_prefixed(ref, "D/")), source="pytorch_small_reference.npz")
    return d


def test_configs_match_reference(G, D, meta):
    assert G.num_ws == meta["num_ws"]
    cfg = meta["config"]
    for res, ch in cfg["channels_per_res"].items():
        assert G.config.channels(int(res)) == ch
    assert D.config.mbstd_group_size == cfg["mbstd_group_size"]


def test_mapping_matches(G, ref):
    assert_close(G.mapping(ref["z"], ref["c"]), ref["ws"], "ws")
    assert_close(G.mapping(ref["z"], ref["c"], truncation_psi=0.5), ref["ws_psi"], "ws_psi")


def test_synthesis_fused_and_nonfused_match(G, ref):
    ws = tf.constant(ref["ws"])
    assert_close(nchw(G.synthesis(ws, noise_mode="const", fused_modconv=True)), ref["img"], "img (fused)")
    assert_close(nchw(G.synthesis(ws, noise_mode="const", fused_modconv=False)), ref["img_nonfused"],
                 "img (non-fused)")
    assert_close(nchw(G.synthesis(tf.constant(ref["ws_psi"]), noise_mode="const")), ref["img_psi"], "img_psi")


def test_generator_end_to_end(G, ref):
    img = G(ref["z"], ref["c"], noise_mode="const")
    assert_close(nchw(img), ref["img"], "G(z) img")
    img = G(ref["z"], ref["c"], truncation_psi=0.5, noise_mode="const")
    assert_close(nchw(img), ref["img_psi"], "G(z, psi=0.5) img")


def test_discriminator_logits(D, ref):
    assert_close(D(nhwc(ref["img"]), ref["c"]), ref["logits"], "logits")
    assert_close(D(nhwc(ref["real_img"]), ref["c"]), ref["real_logits"], "real_logits")


def test_r1_penalty(D, ref):
    real = tf.constant(nhwc(ref["real_img"]))
    with tf.GradientTape() as tape:
        tape.watch(real)
        total = tf.reduce_sum(D(real, ref["c"]))
    grad = tape.gradient(total, real)
    r1 = tf.reduce_sum(tf.square(grad), axis=[1, 2, 3])
    assert_close(r1, ref["r1_penalty"], "r1_penalty")


def test_path_lengths(G, ref):
    ws = tf.constant(ref["ws"])
    pl_noise = tf.constant(nhwc(ref["pl_noise"]))
    with tf.GradientTape() as tape:
        tape.watch(ws)
        img = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        out = tf.reduce_sum(img * pl_noise)
    g = tape.gradient(out, ws)
    lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(g), axis=2), axis=1))
    assert_close(lengths, ref["pl_lengths"], "pl_lengths")


def test_wrong_weights_are_detected(ref, meta):
    """The comparison can fail: a perturbed bias moves the image beyond the tolerance."""
    g = Generator(generator_config_from_pytorch(meta["generator_kwargs"]))
    values = generator_from_pytorch(split_prefixed(ref, "G/"))
    values["synthesis/32x32/ToRGB/bias"] = values["synthesis/32x32/ToRGB/bias"] + 1e-3
    g.load_tf1_variables(values)
    with pytest.raises(AssertionError):
        assert_close(nchw(g.synthesis(tf.constant(ref["ws"]), noise_mode="const")), ref["img"], "img")
