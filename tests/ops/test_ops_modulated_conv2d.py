"""sg2ada.ops.modulated_conv2d: fused == non-fused == per-sample NumPy reference; fp16 pre-normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ops_reference as ref
from sg2ada import ops

RNG = np.random.default_rng(5)
F1331 = ops.setup_filter([1, 3, 3, 1])

CASES = [
    # k, up, down, padding, demodulate, flip_weight, with_noise
    (3, 1, 1, 1, True, True, False),
    (3, 1, 1, 1, False, True, True),
    (3, 2, 1, 1, True, False, True),  # NVIDIA's up layer: flip_weight = (up == 1)
    (3, 2, 1, 1, False, False, False),
    (3, 1, 2, 1, True, True, False),
    (1, 1, 1, 0, False, True, False),  # ToRGB: 1x1, no demodulation
    (1, 1, 1, 0, True, True, True),
]


def _inputs(k, n=3, cin=4, cout=5, h=6):
    x = RNG.standard_normal([n, h, h, cin]).astype(np.float32)
    weight = RNG.standard_normal([k, k, cin, cout]).astype(np.float32)
    styles = (RNG.standard_normal([n, cin]) + 1).astype(np.float32)
    return x, weight, styles


@pytest.mark.parametrize("k,up,down,padding,demodulate,flip_weight,with_noise", CASES)
def test_fused_and_nonfused_match_reference(k, up, down, padding, demodulate, flip_weight, with_noise):
    x, weight, styles = _inputs(k)
    out_h = 6 * up // down
    noise = RNG.standard_normal([3, out_h, out_h, 1]).astype(np.float32) if with_noise else None
    kw = dict(noise=noise, up=up, down=down, padding=padding, resample_filter=F1331,
              demodulate=demodulate, flip_weight=flip_weight)
    expected = ref.to_nhwc(ref.modulated_conv2d(ref.to_nchw(x), weight, styles, noise=noise, up=up, down=down,
                                                padding=padding, resample_filter=F1331.numpy(),
                                                demodulate=demodulate, flip_weight=flip_weight))
    tol = 3e-5 * max(1, np.abs(expected).max())
    fused = ops.modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    nonfused = ops.modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    assert fused.shape == nonfused.shape == expected.shape
    np.testing.assert_allclose(fused.numpy(), expected, rtol=0, atol=tol)
    np.testing.assert_allclose(nonfused.numpy(), expected, rtol=0, atol=tol)


def test_demodulation_gives_unit_output_norm_per_channel():
    """Eq. 3 of the paper: with demodulation, an impulse input returns w'' whose L2 norm is 1 per output."""
    _, weight, styles = _inputs(3, n=2)
    x = np.zeros([2, 5, 5, 4], np.float32)
    x[:, 2, 2, :] = 0
    y_norms = []
    for i in range(4):  # impulse in each input channel -> the slice of the modulated kernel
        xi = x.copy()
        xi[:, 2, 2, i] = 1
        y_norms.append(ops.modulated_conv2d(xi, weight, styles, padding=1).numpy()[:, 1:4, 1:4, :])
    total = sum(np.sum(yi**2, axis=(1, 2)) for yi in y_norms)  # [N, O]
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_dynamic_batch_falls_back_to_nonfused():
    x, weight, styles = _inputs(3)

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 4]), tf.TensorSpec([None, 4])])
    def run(x, s):
        return ops.modulated_conv2d(x, weight, s, padding=1, fused_modconv=True)

    expected = ops.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    np.testing.assert_allclose(run(x, styles).numpy(), expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(tf.float16, 1e-2), (tf.bfloat16, 6e-2)])
@pytest.mark.parametrize("fused", [True, False])
def test_reduced_precision_prenormalisation(dtype, tol, fused):
    """Huge weights/styles overflow float16 without NVIDIA's pre-normalisation; with it the demodulated
    result is unchanged (the scale cancels)."""
    x, weight, styles = _inputs(3)
    weight = weight * 3e3
    styles = styles * 3e3
    expected = ops.modulated_conv2d(x, weight, styles, padding=1, up=2, resample_filter=F1331, flip_weight=False)
    y = ops.modulated_conv2d(tf.cast(x, dtype), weight, styles, padding=1, up=2, resample_filter=F1331,
                             flip_weight=False, fused_modconv=fused)
    assert y.dtype == dtype
    y = tf.cast(y, tf.float32).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, expected.numpy(), rtol=0, atol=tol * np.abs(expected.numpy()).max())
