"""Every op traced and compiled with tf.function(jit_compile=True) gives the eager values, and so do
their second-order gradients (what R1 / path-length regularisation compute inside the XLA step)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from sg2ada import ops

RNG = np.random.default_rng(11)
F1331 = ops.setup_filter([1, 3, 3, 1])
F_SEP12 = ops.setup_filter(np.linspace(-0.5, 1.0, 12) ** 2 + 0.1)


def _x(shape):
    return tf.constant(RNG.standard_normal(shape), tf.float32)


X = _x([2, 8, 8, 4])
W3 = _x([3, 3, 4, 6])
W1 = _x([1, 1, 4, 6])
STYLES = tf.constant(RNG.uniform(0.5, 1.5, [2, 4]), tf.float32)
NOISE = _x([2, 16, 16, 1])

OPS = {
    "upfirdn2d_up": lambda x: ops.upfirdn2d(x, F1331, up=2, padding=[2, 1, 2, 1], gain=4),
    "upfirdn2d_down": lambda x: ops.upfirdn2d(x, F1331, down=2, padding=1),
    "upfirdn2d_sep12": lambda x: ops.upfirdn2d(x, F_SEP12, up=2, down=2, padding=[6, 5, 6, 5], gain=4),
    "filter2d": lambda x: ops.filter2d(x, F1331),
    "upsample2d": lambda x: ops.upsample2d(x, F1331),
    "downsample2d": lambda x: ops.downsample2d(x, F1331),
    "bias_act": lambda x: ops.bias_act(x, tf.range(4, dtype=tf.float32) / 4, act="lrelu", clamp=0.8),
    "conv": lambda x: ops.conv2d_resample(x, W3, padding=1),
    "conv_up": lambda x: ops.conv2d_resample(x, W3, F1331, up=2, padding=1, flip_weight=False),
    "conv_down": lambda x: ops.conv2d_resample(x, W3, F1331, down=2, padding=1),
    "conv_1x1_down": lambda x: ops.conv2d_resample(x, W1, F1331, down=2),
    "conv_grouped_up": lambda x: ops.conv2d_resample(x, W3[:, :, :2], F1331, up=2, padding=1, groups=2),
    "modconv_fused_up": lambda x: ops.modulated_conv2d(x, W3, STYLES, noise=NOISE, up=2, padding=1,
                                                       resample_filter=F1331, flip_weight=False),
    "modconv_nonfused_up": lambda x: ops.modulated_conv2d(x, W3, STYLES, noise=NOISE, up=2, padding=1,
                                                          resample_filter=F1331, flip_weight=False,
                                                          fused_modconv=False),
    "modconv_fused": lambda x: ops.modulated_conv2d(x, W3, STYLES, padding=1),
    "downsample2d_fp16": lambda x: tf.cast(ops.downsample2d(tf.cast(x, tf.float16), F1331), tf.float32),
    "modconv_nonfused_up_fp16": lambda x: tf.cast(ops.modulated_conv2d(
        tf.cast(x, tf.float16), W3, STYLES, up=2, padding=1, resample_filter=F1331, fused_modconv=False), tf.float32),
    "torgb": lambda x: ops.modulated_conv2d(x, W1, STYLES, demodulate=False, fused_modconv=False),
}


@pytest.mark.parametrize("name", list(OPS))
def test_xla_matches_eager(name):
    fn = OPS[name]
    eager = fn(X)
    xla = tf.function(fn, jit_compile=True)(X)
    assert xla.shape == eager.shape
    if "fp16" in name:  # different summation orders, each rounded to float16
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=0, atol=4e-3 * np.abs(eager.numpy()).max())
    else:
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)


def _r1_like(fn):
    """d/dW of sum((d sum(fn(x)^2 * c) / dx)^2) - the R1 pattern, through the op twice."""

    def run(x):
        with tf.GradientTape() as outer:
            outer.watch([W3, STYLES])
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = fn(x)
                loss = tf.reduce_sum(tf.square(y))
            gx = inner.gradient(loss, x)
            penalty = tf.reduce_sum(tf.square(gx))
        return outer.gradient(penalty, [W3, STYLES], unconnected_gradients="zero")

    return run


@pytest.mark.parametrize("name", ["conv_up", "conv_down", "modconv_nonfused_up", "modconv_fused"])
def test_xla_second_order_matches_eager(name):
    run = _r1_like(OPS[name])
    eager = run(X)
    xla = tf.function(run, jit_compile=True)(X)
    assert any(np.abs(e.numpy()).max() > 0 for e in eager)
    for e, c in zip(eager, xla):
        np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=2e-4, atol=2e-4 * max(1, np.abs(e.numpy()).max()))
