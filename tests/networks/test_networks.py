"""Tiny StyleGAN2 networks: every architecture, 1 and 3 channels, conditional and not, fp16/bf16,
noise modes, truncation and w_avg tracking, minibatch stddev, XLA compilation, TF1 variable naming."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.errors import UserError
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig
from sg2ada.networks.discriminator import Discriminator, MinibatchStdLayer
from sg2ada.networks.generator import Generator, generate_images
from sg2ada.networks.layers import FullyConnectedLayer


@pytest.fixture(autouse=True)
def _seeded():
    """Fixed initial weights, so that tolerance checks see the same numbers on every run."""
    import keras

    keras.utils.set_random_seed(0)


def g_config(**kw):
    base = dict(z_dim=16, w_dim=16, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
                mapping=MappingConfig(num_layers=2))
    base.update(kw)
    return GeneratorConfig(**base)


def d_config(**kw):
    base = dict(img_resolution=16, img_channels=3, channel_base=128, channel_max=16, mbstd_group_size=2,
                mapping_layers=2)
    base.update(kw)
    return DiscriminatorConfig(**base)


def randomise(net, seed=0, scale=0.3):
    """Non-zero biases, noise strengths and w_avg, so that every variable matters."""
    rng = np.random.default_rng(seed)
    for name, var in net.named_variables().items():
        if name.endswith(("bias", "noise_strength", "dlatent_avg")):
            var.assign(rng.normal(0, scale, var.shape).astype(np.float32))


def latents(n=4, z_dim=16, c_dim=0, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=[n, z_dim]).astype(np.float32)
    c = np.eye(max(c_dim, 1), dtype=np.float32)[rng.integers(0, max(c_dim, 1), n)][:, :c_dim]
    return tf.constant(z), tf.constant(c)


def _all_variables_named(net):
    named = {id(v) for v in net.named_variables().values()}
    assert len(named) == len(net.named_variables()), "a variable is reported under two names"
    for v in net.weights:
        assert id(v) in named, f"variable {v.path} missing from named_variables()"


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_architectures(architecture, channels):
    G = Generator(g_config(architecture=architecture, img_channels=channels))
    randomise(G)
    z, c = latents()
    img = G(z, c, noise_mode="const")
    assert img.shape == (4, 16, 16, channels) and img.dtype == tf.float32
    assert np.all(np.isfinite(img))
    assert G.num_ws == 6 == G.config.num_ws
    _all_variables_named(G)
    names = set(G.named_variables())
    assert {"dlatent_avg", "mapping/Dense0/weight", "mapping/Dense1/bias", "synthesis/4x4/Const/const",
            "synthesis/noise0", "synthesis/noise4", "synthesis/16x16/Conv0_up/mod_bias",
            "synthesis/16x16/ToRGB/weight"} <= names
    assert ("synthesis/8x8/ToRGB/weight" in names) == (architecture == "skip")
    assert ("synthesis/8x8/Skip/weight" in names) == (architecture == "resnet")
    assert "synthesis/noise5" not in names
    assert G.named_variables()["synthesis/4x4/Const/const"].shape == (1, 16, 4, 4)
    assert G.named_variables()["synthesis/noise3"].shape == (1, 1, 16, 16)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_architectures(architecture, channels):
    D = Discriminator(d_config(architecture=architecture, img_channels=channels))
    randomise(D)
    img = tf.random.stateless_normal([4, 16, 16, channels], seed=[1, 2])
    logits = D(img)
    assert logits.shape == (4, 1) and logits.dtype == tf.float32
    _all_variables_named(D)
    names = set(D.named_variables())
    assert {"16x16/FromRGB/weight", "16x16/Conv0/weight", "16x16/Conv1_down/bias", "4x4/Conv/weight",
            "4x4/Dense0/weight", "Output/weight", "Output/bias"} <= names
    assert ("8x8/FromRGB/weight" in names) == (architecture == "skip")
    assert ("4x4/FromRGB/weight" in names) == (architecture == "skip")
    assert ("8x8/Skip/weight" in names) == (architecture == "resnet")
    assert D.named_variables()["4x4/Conv/weight"].shape == (3, 3, 17, 16)  # + 1 mbstd channel


@pytest.mark.parametrize("mapping_layers", [0, 2])
def test_conditional_networks(mapping_layers):
    G = Generator(g_config(c_dim=3))
    D = Discriminator(d_config(c_dim=3, mapping_layers=mapping_layers, architecture="skip"))
    randomise(G)
    randomise(D)
    z, c = latents(c_dim=3)
    c_other = tf.roll(c, 1, axis=1)
    assert "mapping/LabelEmbed/weight" in G.named_variables()
    names = set(D.named_variables())
    assert "LabelEmbed/weight" in names
    mapping_weights = {n for n in names if n.startswith("Mapping") and n.endswith("weight")}
    assert mapping_weights == {f"Mapping{i}/weight" for i in range(mapping_layers)}
    assert D.named_variables()["Output/weight"].shape == (16, 16)  # cmap_dim = channels at 4x4
    img = G(z, c, noise_mode="const")
    img2 = G(z, c_other, noise_mode="const")
    assert np.max(np.abs(img - img2)) > 1e-3
    logits = D(img, c)
    assert logits.shape == (4, 1)
    assert np.max(np.abs(logits - D(img, c_other))) > 1e-4
    with pytest.raises(ValueError):
        D(img)


def test_fully_connected_equalized_lr():
    fc = FullyConnectedLayer(8, 4, lr_multiplier=0.01, bias_init=1)
    w = fc.weight.numpy()
    assert 30 < np.std(w) < 300  # stored as randn / lr_multiplier
    x = np.random.default_rng(0).normal(size=[3, 8]).astype(np.float32)
    expected = x @ (w * 0.01 / np.sqrt(8)) + 1 * 0.01
    np.testing.assert_allclose(fc(x), expected, rtol=1e-5, atol=1e-6)


def test_noise_modes_and_seeds():
    G = Generator(g_config())
    randomise(G)
    ws = G.mapping(*latents())
    const = G.synthesis(ws, noise_mode="const")
    np.testing.assert_array_equal(const, G.synthesis(ws, noise_mode="const"))
    none = G.synthesis(ws, noise_mode="none")
    assert np.max(np.abs(const - none)) > 1e-3
    seed = tf.constant([3, 4], tf.int32)
    a = G.synthesis(ws, noise_mode="random", noise_seed=seed)
    np.testing.assert_array_equal(a, G.synthesis(ws, noise_mode="random", noise_seed=seed))
    assert np.max(np.abs(a - G.synthesis(ws, noise_mode="random", noise_seed=tf.constant([3, 5])))) > 1e-3
    assert np.max(np.abs(G.synthesis(ws) - G.synthesis(ws))) > 1e-3
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="fixed")


def test_generate_images_in_batches_matches_one_call():
    G = Generator(g_config())
    z = np.random.RandomState(0).randn(5, 16).astype(np.float32)
    c = np.zeros([5, 0], np.float32)
    imgs = generate_images(G, z, c, batch_size=2)
    assert imgs.shape == (5, 16, 16, 3) and imgs.dtype == np.float32
    np.testing.assert_allclose(imgs, G(z, c, noise_mode="const").numpy(), rtol=1e-5, atol=1e-5)
    assert generate_images(G, z[:0], c[:0]).shape == (0, 16, 16, 3)


def test_truncation_and_w_avg_update():
    G = Generator(g_config())
    randomise(G)
    z, c = latents()
    w_avg = G.w_avg.numpy().copy()
    ws = G.mapping(z, c).numpy()
    assert ws.shape == (4, G.num_ws, 16)
    np.testing.assert_allclose(ws[:, 0], ws[:, -1])
    trunc = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=2).numpy()
    np.testing.assert_allclose(trunc[:, :2], w_avg + 0.7 * (ws[:, :2] - w_avg), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(trunc[:, 2:], ws[:, 2:])
    np.testing.assert_array_equal(G.w_avg.numpy(), w_avg)  # no update unless asked
    G.mapping(z, c, update_w_avg=True)
    expected = ws[:, 0].mean(0) + 0.995 * (w_avg - ws[:, 0].mean(0))
    np.testing.assert_allclose(G.w_avg.numpy(), expected, rtol=1e-5, atol=1e-6)


def _mbstd_numpy(x, group, f):
    n, h, w, c = x.shape
    g = min(group, n)
    y = x.reshape(g, n // g, h, w, f, c // f)
    y = np.sqrt(((y - y.mean(0)) ** 2).mean(0) + 1e-8)  # [n/g, h, w, f, c/f]
    y = y.mean(axis=(1, 2, 4))  # [n/g, f]
    y = np.tile(y, [g, 1])  # sample i gets group i mod (n/g)
    return np.concatenate([x, np.broadcast_to(y[:, None, None, :], (n, h, w, f))], axis=3)


@pytest.mark.parametrize("group,f", [(2, 1), (2, 2), (8, 1), (None, 1)])
def test_minibatch_stddev(group, f):
    x = np.random.default_rng(0).normal(size=[4, 3, 3, 6]).astype(np.float32)
    expected = _mbstd_numpy(x, group or 4, f)
    np.testing.assert_allclose(MinibatchStdLayer(group, f)(x), expected, rtol=1e-5, atol=1e-6)
    fn = tf.function(lambda t: MinibatchStdLayer(group, f)(t),
                     input_signature=[tf.TensorSpec([None, 3, 3, 6], tf.float32)])
    np.testing.assert_allclose(fn(x), expected, rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_rejects_ragged_groups():
    with pytest.raises(ValueError, match="multiple of the group size"):
        MinibatchStdLayer(4)(np.zeros([6, 2, 2, 3], np.float32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_close_to_fp32(dtype):
    G = Generator(g_config(num_fp16_res=2, conv_clamp=256, fp16_dtype=dtype))
    D = Discriminator(d_config(num_fp16_res=2, conv_clamp=256, fp16_dtype=dtype))
    randomise(G, scale=0.1)
    randomise(D, scale=0.1)
    assert [b.use_fp16 for b in G.synthesis.blocks] == [False, True, True]
    assert [b.use_fp16 for b in D.blocks] == [True, True]
    ws = G.mapping(*latents())
    img16 = G.synthesis(ws, noise_mode="const")
    img32 = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert img16.dtype == tf.float32
    tol = {"float16": 0.01, "bfloat16": 0.08}[dtype]  # relative to the image's scale
    scale = float(np.std(img32))
    assert np.max(np.abs(img16 - img32)) <= tol * scale * 10
    assert np.linalg.norm(img16 - img32) / np.linalg.norm(img32) <= tol
    x, _ = G.synthesis.blocks[1](ws[:, 1:4], G.synthesis.blocks[0](ws[:, :2])[0], None, noise_mode="const")
    assert x.dtype == tf.as_dtype(dtype)
    l16, l32 = D(img32), D(img32, force_fp32=True)
    assert l16.dtype == tf.float32
    assert np.linalg.norm(l16 - l32) / np.linalg.norm(l32) <= tol


def test_jit_compile_matches_eager():
    G = Generator(g_config(c_dim=2, architecture="resnet"))
    D = Discriminator(d_config(c_dim=2, architecture="skip"))
    randomise(G)
    randomise(D)
    z, c = latents(c_dim=2)
    seed = tf.constant([7, 8], tf.int32)

    @tf.function(jit_compile=True)
    def run_g(z, c, seed):
        ws = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
        return ws, G.synthesis(ws, noise_mode="random", noise_seed=seed), G.synthesis(ws, noise_mode="const",
                                                                                    fused_modconv=False)

    @tf.function(jit_compile=True)
    def run_d(img, c):
        return D(img, c)

    ws, img, img_const = run_g(z, c, seed)
    ws_e = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    np.testing.assert_allclose(ws, ws_e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(img, G.synthesis(ws_e, noise_mode="random", noise_seed=seed), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(img_const, G.synthesis(ws_e, noise_mode="const"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run_d(img, c), D(img, c), rtol=1e-4, atol=1e-5)


def test_jit_compile_gradients_match_eager():
    """R1-style and path-length-style gradients compile under XLA and agree with eager."""
    G = Generator(g_config())
    D = Discriminator(d_config())
    randomise(G)
    randomise(D)
    ws = G.mapping(*latents())
    real = tf.random.stateless_normal([4, 16, 16, 3], seed=[5, 6])

    def grads(ws, real):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([ws, real])
            img = G.synthesis(ws, noise_mode="const", training=True)
            pl = tf.reduce_sum(img * real)
            d = tf.reduce_sum(D(real))
        return tape.gradient(pl, ws), tape.gradient(d, real)

    g_ws, g_real = tf.function(grads, jit_compile=True)(ws, real)
    e_ws, e_real = grads(ws, real)
    np.testing.assert_allclose(g_ws, e_ws, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_real, e_real, rtol=1e-4, atol=1e-6)


def test_load_tf1_variables_checks_names_and_shapes():
    G = Generator(g_config())
    values = G.get_tf1_variables()
    G2 = Generator(g_config())
    G2.load_tf1_variables(values)
    for k, v in G2.get_tf1_variables().items():
        np.testing.assert_array_equal(v, values[k])
    bad = dict(values)
    del bad["synthesis/noise2"]
    with pytest.raises(UserError, match="synthesis/noise2"):
        G2.load_tf1_variables(bad, source="x.pkl")
    bad = dict(values)
    bad["mapping/Dense0/weight"] = np.zeros([3, 3], np.float32)
    with pytest.raises(UserError, match="mapping/Dense0/weight"):
        G2.load_tf1_variables(bad)
    D = Discriminator(d_config())
    with pytest.raises(UserError, match="unexpected"):
        D.load_tf1_variables({**D.get_tf1_variables(), "Extra/weight": np.zeros(1)})


def test_dynamic_batch_size_traces():
    G = Generator(g_config())
    D = Discriminator(d_config())
    randomise(G)
    randomise(D)
    z, _ = latents()
    g_fn = tf.function(lambda z: G(z, noise_mode="const"), input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    d_fn = tf.function(lambda x: D(x), input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    img = g_fn(z)
    np.testing.assert_allclose(img, G(z, noise_mode="const"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_fn(img), D(img), rtol=1e-4, atol=1e-5)


def test_w_avg_update_under_mirrored_strategy():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py sets them up)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        G = Generator(g_config())
    z = np.random.default_rng(0).normal(size=[4, 16]).astype(np.float32)
    ws = G.mapping(z).numpy()[:, 0]
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(z).batch(4, drop_remainder=True),
        tf.distribute.InputOptions(experimental_fetch_to_device=False))

    @tf.function
    def step(z):
        G.mapping(z, update_w_avg=True)

    strategy.run(step, args=(next(iter(dist)),))
    # Each replica blends its own half-batch mean; the variable keeps the mean over replicas.
    expected = 0.5 * sum(m + 0.995 * (0 - m) for m in (ws[:2].mean(0), ws[2:].mean(0)))
    np.testing.assert_allclose(G.w_avg.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_freeze_d_layers():
    D = Discriminator(d_config(freeze_layers=5))  # resnet: b16 FromRGB, Conv0, Conv1_down, Skip; b8 Conv0
    frozen = {n for n, v in D.named_variables().items() if not v.trainable}
    assert frozen == {"16x16/FromRGB/weight", "16x16/FromRGB/bias", "16x16/Conv0/weight", "16x16/Conv0/bias",
                      "16x16/Conv1_down/weight", "16x16/Conv1_down/bias", "16x16/Skip/weight",
                      "8x8/Conv0/weight", "8x8/Conv0/bias"}
    trainable = {id(v) for v in D.trainable_variables}
    assert all(id(D.named_variables()[n]) not in trainable for n in frozen)
    assert id(D.named_variables()["8x8/Conv1_down/weight"]) in trainable
    D.trainable = False
    D.trainable = True
    assert not D.named_variables()["16x16/Conv0/weight"].trainable


@pytest.mark.slow
def test_fp16_networks_compile_under_xla():
    G = Generator(g_config(num_fp16_res=2, conv_clamp=256))
    D = Discriminator(d_config(num_fp16_res=2, conv_clamp=256))
    randomise(G, scale=0.1)
    randomise(D, scale=0.1)
    z, _ = latents()
    fn = tf.function(lambda z: D(G(z, noise_mode="const", training=True)), jit_compile=True)
    compiled = fn(z).numpy()
    eager = D(G(z, noise_mode="const", training=True)).numpy()
    fp32 = D(G(z, noise_mode="const", force_fp32=True), force_fp32=True).numpy()
    # Logits are O(1); XLA and eager round fp16 differently, both stay within fp16 noise of fp32.
    assert np.max(np.abs(compiled - fp32)) <= 5e-3
    assert np.max(np.abs(eager - fp32)) <= 5e-3
    assert np.max(np.abs(compiled - eager)) <= 5e-3


def test_importing_the_package_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, sg2ada.networks, sg2ada.presets; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _np_mapping(named, prefix, z, c, num_layers, lr, layer_name):
    """NVIDIA's MappingNetwork in numpy: normalise z and the (lr 1) label embedding, concat, dense lrelu."""
    def norm(x):
        return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-8)

    def dense(x, scope, lr_mul, act):
        w, b = named[f"{prefix}{scope}/weight"].numpy(), named[f"{prefix}{scope}/bias"].numpy()
        y = x @ (w * lr_mul / np.sqrt(w.shape[0])) + b * lr_mul
        return np.where(y >= 0, y, 0.2 * y) * np.sqrt(2) if act else y

    parts = [norm(z)] if z is not None else []
    parts.append(norm(dense(c, "LabelEmbed", 1.0, False)))
    x = np.concatenate(parts, axis=1)
    for i in range(num_layers):
        x = dense(x, f"{layer_name}{i}", lr, True)
    return x


def test_conditional_mappings_match_numpy():
    G = Generator(g_config(c_dim=3, mapping=MappingConfig(num_layers=2, lr_multiplier=0.05)))
    randomise(G)
    z, c = latents(c_dim=3)
    expected = _np_mapping(G.named_variables(), "mapping/", z.numpy(), c.numpy(), 2, 0.05, "Dense")
    np.testing.assert_allclose(G.mapping(z, c)[:, 0], expected, rtol=1e-4, atol=1e-5)
    for depth in (0, 2):
        D = Discriminator(d_config(c_dim=3, mapping_layers=depth, mapping_lr_multiplier=0.1))
        randomise(D)
        expected = _np_mapping(D.named_variables(), "", None, c.numpy(), depth, 0.1, "Mapping")
        np.testing.assert_allclose(D.mapping(None, c), expected, rtol=1e-4, atol=1e-5)


def test_discriminator_projection_conditioning():
    D = Discriminator(d_config(c_dim=3, architecture="orig"))
    randomise(D)
    _, c = latents(c_dim=3)
    img = tf.random.stateless_normal([4, 16, 16, 3], seed=[3, 3])
    x, im = None, img
    for block in D.blocks:
        x, im = block(x, im)
    b4 = D.b4
    h = b4.conv(b4.mbstd(x))
    out = b4.out(b4.fc(tf.reshape(tf.transpose(h, [0, 3, 1, 2]), [4, -1]))).numpy()  # [N, cmap_dim]
    cmap = D.mapping(None, c).numpy()
    expected = np.sum(out * cmap, axis=1, keepdims=True) / np.sqrt(cmap.shape[1])
    np.testing.assert_allclose(D(img, c), expected, rtol=1e-4, atol=1e-5)
