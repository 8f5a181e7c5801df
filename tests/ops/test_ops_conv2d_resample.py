"""sg2ada.ops.conv2d_resample against NVIDIA's generic definition written in NumPy (ops_reference).

NVIDIA's fast paths (1x1 + down, 1x1 + up, strided conv, transposed conv) must all equal the
generic "pad once, up-filter, convolve, down-filter" map; each case below goes through one branch.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ops_reference as ref
from sg2ada import ops

RNG = np.random.default_rng(99)
F1331 = ops.setup_filter([1, 3, 3, 1])
F_NONSEP = ops.setup_filter(np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 1.0, 1.0]]))

CASES = [
    # k, up, down, padding, groups, flip_weight, flip_filter, filter
    (3, 1, 1, 1, 1, True, False, None),  # plain conv, symmetric padding
    (3, 1, 1, 0, 1, False, False, None),
    (3, 1, 1, [2, 0, 1, 1], 1, True, False, None),  # asymmetric: crop/pad + conv
    (3, 1, 1, [-1, 1, 0, 0], 2, True, False, None),  # negative + grouped
    (3, 2, 1, 1, 1, True, False, F1331),  # up: transposed conv + filter
    (3, 2, 1, 1, 1, False, False, F1331),  # flip_weight=False as in NVIDIA's up layers
    (3, 2, 1, 1, 2, False, True, F1331),  # grouped up (zero insertion path)
    (3, 2, 1, 0, 1, True, False, F_NONSEP),
    (4, 2, 1, [1, 2, 0, 1], 2, True, False, F1331),  # grouped polyphase: even kernel
    (3, 3, 1, 1, 2, False, False, F1331),  # grouped, up=3: three phases per axis
    (1, 2, 2, 0, 2, True, False, F1331),  # grouped 1x1 up+down: phases without taps
    (4, 2, 1, [1, 2, 0, 1], 1, True, False, F1331),
    (3, 1, 2, 1, 1, True, False, F1331),  # down: filter + strided conv
    (3, 1, 2, 1, 2, False, True, F1331),
    (2, 1, 2, 0, 1, True, False, F_NONSEP),
    (3, 2, 2, 1, 1, True, False, F1331),  # up and down
    (3, 2, 2, 1, 2, True, False, F1331),
    (1, 1, 2, 0, 1, True, False, F1331),  # 1x1 + down fast path
    (1, 2, 1, 0, 1, True, False, F1331),  # 1x1 + up fast path
    (1, 2, 1, 0, 2, False, False, F_NONSEP),
    (1, 1, 1, 0, 1, True, False, None),
]


@pytest.mark.parametrize("k,up,down,padding,groups,flip_weight,flip_filter,f", CASES)
def test_conv2d_resample_matches_reference(k, up, down, padding, groups, flip_weight, flip_filter, f):
    cin, cout = 4, 6
    x = RNG.standard_normal([2, 8, 7, cin]).astype(np.float32)
    w = RNG.standard_normal([k, k, cin // groups, cout]).astype(np.float32)
    expected = ref.conv2d_resample(ref.to_nchw(x), w, None if f is None else f.numpy(), up=up, down=down,
                                   padding=padding, groups=groups, flip_weight=flip_weight,
                                   flip_filter=flip_filter)
    y = ops.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                            flip_weight=flip_weight, flip_filter=flip_filter)
    assert tuple(y.shape) == ref.to_nhwc(expected).shape
    np.testing.assert_allclose(y.numpy(), ref.to_nhwc(expected), rtol=0, atol=2e-5 * max(1, np.abs(expected).max()))


def test_conv2d_resample_stylegan_shapes():
    """The shapes StyleGAN2 relies on: 3x3 pad 1 keeps size, up=2 doubles, down=2 halves."""
    x = tf.zeros([1, 8, 8, 3])
    w = tf.zeros([3, 3, 3, 5])
    assert ops.conv2d_resample(x, w, padding=1).shape == (1, 8, 8, 5)
    assert ops.conv2d_resample(x, w, F1331, up=2, padding=1).shape == (1, 16, 16, 5)
    assert ops.conv2d_resample(x, w, F1331, down=2, padding=1).shape == (1, 4, 4, 5)
    assert ops.conv2d_resample(x, tf.zeros([1, 1, 3, 5]), F1331, down=2).shape == (1, 4, 4, 5)


def test_flip_weight_is_correlation_vs_convolution():
    x = np.zeros([1, 5, 5, 1], np.float32)
    x[0, 2, 2, 0] = 1  # an impulse: correlation returns the flipped kernel, convolution the kernel
    w = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1)
    corr = ops.conv2d_resample(x, w, padding=1, flip_weight=True).numpy()[0, 1:4, 1:4, 0]
    conv = ops.conv2d_resample(x, w, padding=1, flip_weight=False).numpy()[0, 1:4, 1:4, 0]
    np.testing.assert_array_equal(conv, w[:, :, 0, 0])
    np.testing.assert_array_equal(corr, w[::-1, ::-1, 0, 0])


@pytest.mark.parametrize("dtype,tol", [(tf.float16, 5e-3), (tf.float64, 1e-10)])
def test_conv2d_resample_dtypes(dtype, tol):
    x = RNG.standard_normal([2, 8, 8, 4]).astype(np.float32)
    w = (RNG.standard_normal([3, 3, 4, 4]) / 6).astype(np.float32)
    for up, down in ((1, 1), (2, 1), (1, 2)):
        y = ops.conv2d_resample(tf.cast(x, dtype), w, F1331, up=up, down=down, padding=1)
        assert y.dtype == dtype
        expected = ref.to_nhwc(ref.conv2d_resample(ref.to_nchw(x), w, F1331.numpy(), up=up, down=down, padding=1))
        np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), expected, rtol=0,
                                   atol=tol * max(1, np.abs(expected).max()))


def test_conv2d_resample_rejects_bad_arguments():
    x = tf.zeros([1, 4, 4, 3])
    with pytest.raises(ValueError):
        ops.conv2d_resample(x, tf.zeros([3, 3, 4, 2]))  # channel mismatch
    with pytest.raises(ValueError):
        ops.conv2d_resample(x, tf.zeros([3, 3, 3, 2]), up=0)
