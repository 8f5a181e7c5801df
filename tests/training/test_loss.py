"""The loss terms against NVIDIA's stylegan2-ada-pytorch (R1 penalty and path lengths of
`pytorch_small_reference.npz`), plus the per-sample GAN losses and style mixing."""

import json

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.training.loss import StyleGAN2Loss, mix_styles, path_lengths, pl_noise_scale, r1_penalty


def _nhwc(x):
    return np.transpose(x, [0, 2, 3, 1])


@pytest.fixture(scope="module")
def reference(reference_dir):
    path = reference_dir / "pytorch_small_reference.npz"
    if not path.exists():
        pytest.skip(f"{path} missing")
    return dict(np.load(path))


def _networks(ref):
    from sg2ada.legacy.pytorch_layout import (discriminator_config_from_pytorch, discriminator_from_pytorch,
                                              generator_config_from_pytorch, generator_from_pytorch, split_prefixed)
    from sg2ada.networks import Discriminator, Generator

    meta = json.loads(str(ref["meta_json"]))
    G = Generator(generator_config_from_pytorch(meta["generator_kwargs"]))
    D = Discriminator(discriminator_config_from_pytorch(meta["discriminator_kwargs"]))
    G.load_tf1_variables(generator_from_pytorch(split_prefixed(ref, "G/")))
    D.load_tf1_variables(discriminator_from_pytorch(split_prefixed(ref, "D/")))
    return G, D


def test_r1_and_path_lengths_match_nvidia(reference):
    ref = reference
    G, D = _networks(ref)
    real = tf.constant(_nhwc(ref["real_img"]))
    c = tf.constant(ref["c"])
    r1, logits = r1_penalty(lambda x, c_: D(x, c_), real, c)
    np.testing.assert_allclose(logits.numpy(), ref["real_logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r1.numpy(), ref["r1_penalty"], rtol=1e-3)

    ws = tf.constant(ref["ws"])
    noise = tf.constant(_nhwc(ref["pl_noise"]))
    lengths, img = path_lengths(lambda w: G.synthesis(w, noise_mode="const", training=True), ws, noise)
    np.testing.assert_allclose(img.numpy(), _nhwc(ref["img"]), atol=1e-3)
    np.testing.assert_allclose(lengths.numpy(), ref["pl_lengths"], rtol=1e-3)


def test_pl_noise_scale():
    assert pl_noise_scale([4, 32, 32, 3]) == pytest.approx(1 / 32)


def test_r1_is_gradient_of_sum_of_logits():
    w = tf.constant(np.random.RandomState(0).randn(3 * 4 * 4, 1).astype(np.float32))

    def D(x, c):  # quadratic, so the penalty has a closed form
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return tf.square(flat @ w)

    x = tf.constant(np.random.RandomState(1).randn(2, 4, 4, 3).astype(np.float32))
    r1, _ = r1_penalty(D, x, None)
    flat = x.numpy().reshape(2, -1)
    expected = [(2 * (f @ w.numpy())[0]) ** 2 * float(np.sum(w.numpy() ** 2)) for f in flat]
    np.testing.assert_allclose(r1.numpy(), expected, rtol=1e-5)


def test_mix_styles_cutoff():
    a = tf.zeros([2, 6, 3])
    b = tf.ones([2, 6, 3])
    m = mix_styles(a, b, tf.constant(2)).numpy()
    assert (m[:, :2] == 0).all() and (m[:, 2:] == 1).all()
    assert (mix_styles(a, b, tf.constant(6)).numpy() == 0).all()


def test_gan_losses_are_softplus():
    class FakeD:
        def __call__(self, img, c):
            return tf.reduce_mean(img, axis=[1, 2, 3])[:, None]

    loss = StyleGAN2Loss(G=None, D=FakeD(), r1_gamma=4.0)
    real = tf.constant(np.linspace(-1, 1, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3))
    out = loss.D_real(real, None, None, do_main=True, do_r1=True)
    logits = real.numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose(out["loss_Dreal"].numpy(), np.log1p(np.exp(-logits)), rtol=1e-6)
    # d mean / d x = 1/48 everywhere: r1 = 48 * (1/48)^2
    np.testing.assert_allclose(out["Loss/r1_penalty"].numpy(), [1 / 48] * 2, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), np.log1p(np.exp(-logits)) + 2.0 / 48, rtol=1e-5)
