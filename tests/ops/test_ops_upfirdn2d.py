"""sg2ada.ops.upfirdn2d against a float64 NumPy reference of NVIDIA's definition (ops_reference)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ops_reference as ref
from sg2ada import ops

RNG = np.random.default_rng(1234)


def _x(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _close(actual, expected, tol=1e-5):
    actual = np.asarray(actual, np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def test_setup_filter_matches_nvidia_values():
    f = ops.setup_filter([1, 3, 3, 1])
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    assert f.dtype == tf.float32 and f.shape == (4, 4)
    np.testing.assert_allclose(f.numpy(), expected, rtol=1e-7)
    # 8+ taps stay 1-D (separable), normalised to sum 1; gain multiplies each axis by sqrt(gain).
    taps = np.arange(1, 9, dtype=np.float32)
    f8 = ops.setup_filter(taps, gain=4)
    assert f8.shape == (8,)
    np.testing.assert_allclose(f8.numpy(), taps / taps.sum() * 2, rtol=1e-6)
    # Flip reverses; no normalisation keeps the raw values; None is the identity impulse.
    ff = ops.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    np.testing.assert_array_equal(ff.numpy(), [[4, 3], [2, 1]])
    np.testing.assert_array_equal(ops.setup_filter(None).numpy(), [[1]])
    assert ops.setup_filter([1, 2, 1], separable=True).shape == (3,)
    with pytest.raises(ValueError):
        ops.setup_filter(np.ones([2, 2]), separable=True)


FILTERS = {
    "none": None,
    "box2": [1, 1],
    "1331": [1, 3, 3, 1],
    "odd5": [1, 4, 6, 4, 1],
    "sep12": np.array([0.1, -0.2, 0.3, 1.0, 2.0, 1.5, 1.1, -0.4, 0.25, 0.05, -0.02, 0.3]),  # 1-D separable
    "nonsep": np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 1.0, 1.0]]),  # rank 3
    "rect": np.outer([1.0, 2.0, 1.0], [1.0, 3.0, 3.0, 1.0, 2.0]),  # separable but fh != fw
    "row": np.array([[1.0, -2.0, 3.0]]),  # 1 x 3
    "col": np.array([[0.5], [2.0]]),  # 2 x 1
}

CASES = [
    # name, up, down, padding, flip_filter, gain
    ("1331", 1, 1, 0, False, 1),
    ("1331", 1, 1, [2, 1, 2, 1], False, 1),
    ("1331", 2, 1, [2, 1, 2, 1], False, 4),
    ("1331", 1, 2, [1, 1, 1, 1], False, 1),
    ("1331", 2, 2, [3, 2, 1, 0], True, 2.5),
    ("1331", 3, 1, 2, False, 9),
    ("1331", 1, 3, [0, 2, 1, 0], False, 1),
    ("odd5", 1, 1, 2, False, 1),
    ("odd5", 2, 1, [-1, 3, 2, -2], True, 4),
    ("box2", 1, 2, 0, False, 1),
    ("none", 2, 1, 0, False, 1),
    ("none", 1, 2, [-1, -1, 0, 1], False, 3),
    ("sep12", 2, 2, [6, 5, 6, 5], False, 4),
    ("sep12", 1, 2, [5, 5, 5, 5], True, 1),
    ("nonsep", 1, 1, 1, False, 1),
    ("nonsep", 2, 1, [2, 1, 1, 2], True, 4),
    ("nonsep", 1, 2, [1, 1, 1, 1], False, 1),
    ("rect", 1, 1, [2, 2, 1, 1], False, 1),
    ("rect", 2, 2, [2, 2, 1, 1], False, 1),
    ("row", 2, 1, [1, 1, 0, 0], False, 2),
    ("col", 1, 2, [0, 0, 1, 1], True, 3),
    ("1331", [2, 1], [1, 2], [2, 1, 1, 1], False, 2),  # anisotropic factors [x, y]
    ("sep12", [1, 2], [2, 1], [5, 5, 6, 5], False, 2),
    ("nonsep", [2, 1], [2, 3], 1, False, 2),
]


@pytest.fixture(params=["depthwise", "slices"])
def fir_impl(request):
    ops.set_fir_impl(request.param)
    yield request.param
    ops.set_fir_impl("auto")


@pytest.mark.parametrize("name,up,down,padding,flip_filter,gain", CASES)
def test_upfirdn2d_matches_reference(name, up, down, padding, flip_filter, gain, fir_impl):
    f = FILTERS[name]
    x = _x([2, 9, 7, 3])  # odd, non-square sizes catch x/y mix-ups
    expected = ref.upfirdn2d(ref.to_nchw(x), f, up=up, down=down, padding=padding,
                             flip_filter=flip_filter, gain=gain)
    f_tf = None if f is None else ops.setup_filter(f, normalize=False, separable=(np.ndim(f) == 1 and len(f) >= 8))
    y = ops.upfirdn2d(x, f_tf, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    assert y.dtype == tf.float32
    assert tuple(y.shape) == ref.to_nhwc(expected).shape
    _close(y, ref.to_nhwc(expected))
    # A plain numpy filter (what the network layers hand in) gives the same result.
    if f is not None:
        f_np = f_tf.numpy()
        y2 = ops.upfirdn2d(x, f_np, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        _close(y2, ref.to_nhwc(expected))


def test_upfirdn2d_runtime_filter_uses_generic_path():
    """A filter only known at run time (a graph input) must give the same values."""
    x = _x([2, 8, 8, 3])
    f2 = ops.setup_filter(FILTERS["nonsep"])
    f1 = ops.setup_filter(FILTERS["sep12"])

    @tf.function(input_signature=[tf.TensorSpec([2, 8, 8, 3]), tf.TensorSpec([None, None]), tf.TensorSpec([None])])
    def run(x, f2, f1):
        return (ops.upfirdn2d(x, f2, up=2, down=1, padding=[2, 1, 1, 2], gain=4),
                ops.upfirdn2d(x, f1, up=1, down=2, padding=6))

    a, b = run(x, f2, f1)
    _close(a, ref.to_nhwc(ref.upfirdn2d(ref.to_nchw(x), f2.numpy(), up=2, padding=[2, 1, 1, 2], gain=4)))
    _close(b, ref.to_nhwc(ref.upfirdn2d(ref.to_nchw(x), f1.numpy(), down=2, padding=6)))


@pytest.mark.parametrize("fname", ["1331", "odd5", "sep12", "nonsep"])
def test_wrappers_use_nvidia_paddings(fname):
    f = ops.setup_filter(FILTERS[fname])
    fn = f.numpy()
    fw, fh = (fn.shape[-1], fn.shape[0])
    x = _x([2, 8, 8, 2])
    xc = ref.to_nchw(x)

    y = ops.filter2d(x, f, padding=1)
    p = [1 + fw // 2, 1 + (fw - 1) // 2, 1 + fh // 2, 1 + (fh - 1) // 2]
    _close(y, ref.to_nhwc(ref.upfirdn2d(xc, fn, padding=p)))
    assert y.shape == (2, 10, 10, 2)

    y = ops.upsample2d(x, f)
    p = [(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2]
    _close(y, ref.to_nhwc(ref.upfirdn2d(xc, fn, up=2, padding=p, gain=4)))
    assert y.shape == (2, 16, 16, 2)

    y = ops.downsample2d(x, f)
    p = [(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2]
    _close(y, ref.to_nhwc(ref.upfirdn2d(xc, fn, down=2, padding=p)))
    assert y.shape == (2, 4, 4, 2)


def test_upsample_preserves_dc_and_downsample_averages():
    """Physical sanity: a constant image stays constant inside (gain up**2 makes up for the zeros)."""
    f = ops.setup_filter([1, 3, 3, 1])
    x = np.full([1, 8, 8, 1], 2.0, np.float32)
    up = ops.upsample2d(x, f).numpy()
    np.testing.assert_allclose(up[0, 2:-2, 2:-2, 0], 2.0, rtol=1e-6)
    down = ops.downsample2d(x, f).numpy()
    np.testing.assert_allclose(down[0, 1:-1, 1:-1, 0], 2.0, rtol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(tf.float16, 2e-3), (tf.bfloat16, 2e-2), (tf.float64, 1e-12)])
def test_upfirdn2d_dtypes(dtype, tol, fir_impl):
    x = _x([2, 8, 8, 4])
    f = ops.setup_filter([1, 3, 3, 1])
    for kw in (dict(up=2, padding=[2, 1, 2, 1], gain=4), dict(down=2, padding=1), dict(padding=[2, 1, 2, 1])):
        y = ops.upfirdn2d(tf.cast(x, dtype), f, **kw)
        assert y.dtype == dtype
        _close(tf.cast(y, tf.float64), ref.to_nhwc(ref.upfirdn2d(ref.to_nchw(x), f.numpy(), **kw)), tol)


def test_upfirdn2d_rejects_bad_arguments():
    x = _x([1, 4, 4, 1])
    with pytest.raises(ValueError):
        ops.upfirdn2d(x[0], None)
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, None, up=0)
    with pytest.raises(ValueError):
        ops.upfirdn2d(x, None, padding=[1, 2, 3])


def test_auto_impl_uses_slices_under_xla_only():
    """XLA's CPU lowering of depthwise convolutions is very slow, so jit-compiled traces must use
    the slice form, and ordinary graphs the depthwise kernels."""
    x = tf.zeros([1, 8, 8, 2])
    f = ops.setup_filter([1, 3, 3, 1])

    def fn(x):
        return ops.downsample2d(x, f)

    def op_types(jit):
        graph = tf.function(fn, jit_compile=jit).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "DepthwiseConv2dNative" in op_types(False)
    assert "DepthwiseConv2dNative" not in op_types(True)
    with pytest.raises(ValueError):
        ops.set_fir_impl("fft")


def test_zero_insertion_with_dynamic_shapes():
    """Unknown batch/size/channels take the fallback inserts (the static one pads the channel axis)."""
    x = _x([2, 5, 6, 3])
    f = ops.setup_filter(FILTERS["1331"])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None])])
    def run(x):
        return ops.upfirdn2d(x, f, up=[3, 2], padding=[2, 1, 1, 2], gain=6)

    expected = ref.upfirdn2d(ref.to_nchw(x), f.numpy(), up=[3, 2], padding=[2, 1, 1, 2], gain=6)
    _close(run(x), ref.to_nhwc(expected))


def test_upsampling_converts_to_tflite_builtins():
    """Zero insertion is 4-D only, so TFLite needs no Select TF (Flex) ops for upsampling."""
    f = ops.setup_filter([1, 3, 3, 1])
    fn = tf.function(lambda x: ops.upsample2d(x, f)).get_concrete_function(tf.TensorSpec([1, 8, 8, 3]))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # raises if a Flex op is needed
    interp = tf.lite.Interpreter(model_content=conv.convert())
    interp.allocate_tensors()
    x = _x([1, 8, 8, 3])
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    _close(out, ref.to_nhwc(ref.upfirdn2d(ref.to_nchw(x), f.numpy(), up=2, padding=[2, 1, 2, 1], gain=4)))
