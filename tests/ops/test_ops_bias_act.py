"""sg2ada.ops.bias_act against NumPy formulas of NVIDIA's activation table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from sg2ada import ops

RNG = np.random.default_rng(7)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
NUMPY_ACTS = {
    # name: (f(x, alpha), default alpha, default gain)
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: np.maximum(x, 0), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: np.where(x >= 0, x, a * x), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: np.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: _sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: np.where(x >= 0, x, np.expm1(x)), 0.0, 1.0),
    "selu": (lambda x, a: SELU_SCALE * np.where(x >= 0, x, SELU_ALPHA * np.expm1(x)), 0.0, 1.0),
    "softplus": (lambda x, a: np.log1p(np.exp(x)), 0.0, 1.0),
    "swish": (lambda x, a: x * _sigmoid(x), 0.0, math.sqrt(2)),
}


def test_table_has_nvidia_defaults():
    assert set(ops.activation_funcs) == set(NUMPY_ACTS)
    for name, (_, alpha, gain) in NUMPY_ACTS.items():
        spec = ops.activation_funcs[name]
        assert spec.def_alpha == pytest.approx(alpha) and spec.def_gain == pytest.approx(gain), name


@pytest.mark.parametrize("act", list(NUMPY_ACTS))
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_every_activation(act, clamp):
    fn, alpha, gain = NUMPY_ACTS[act]
    x = (RNG.standard_normal([2, 3, 4, 5]) * 2).astype(np.float32)
    b = RNG.standard_normal([5]).astype(np.float32)
    expected = fn(x.astype(np.float64) + b, alpha) * gain
    if clamp is not None:
        expected = np.clip(expected, -clamp, clamp)
    y = ops.bias_act(x, b, act=act, clamp=clamp)
    assert y.dtype == tf.float32 and y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=2e-6, atol=2e-6)


def test_bias_act_explicit_alpha_gain_and_order():
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], np.float32)
    b = np.array([0.0, 1.0, -1.0, 0.0], np.float32)
    # lrelu(x + b, 0.1) * 5 then clamp to 10: the clamp comes after the gain.
    y = ops.bias_act(x, b, act="lrelu", alpha=0.1, gain=5, clamp=10).numpy()
    np.testing.assert_allclose(y, [[-1.0, 2.5, -0.25, 10.0]], rtol=1e-6)
    # No bias, linear, no gain: identity.
    np.testing.assert_array_equal(ops.bias_act(x).numpy(), x)


def test_bias_act_dense_and_dtypes():
    x = RNG.standard_normal([4, 6]).astype(np.float32)
    b = RNG.standard_normal([6]).astype(np.float32)
    for dtype in (tf.float16, tf.bfloat16, tf.float64):
        y = ops.bias_act(tf.cast(x, dtype), b, act="lrelu", clamp=256)
        assert y.dtype == dtype
        np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(),
                                   np.where(x + b >= 0, x + b, 0.2 * (x + b)) * math.sqrt(2), rtol=2e-2, atol=2e-2)


def test_bias_act_rejects_bad_arguments():
    x = np.zeros([2, 3], np.float32)
    with pytest.raises(ValueError, match="unknown activation"):
        ops.bias_act(x, act="gelu")
    with pytest.raises(ValueError):
        ops.bias_act(x, np.zeros([4], np.float32))
    with pytest.raises(ValueError):
        ops.bias_act(x, clamp=-1)
