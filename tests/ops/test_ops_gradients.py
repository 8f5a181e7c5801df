"""First- and second-order gradients of every op, checked against finite differences in float64.

First order: the Jacobian of the op, projected on a random output direction, element by element
(backprop of <u, op(x)> against central differences). Second order, as R1 and path-length
regularisation use it: g = d L(op(x, w)) / d x for a non-linear scalar L (a linear L would make
the second derivative trivially zero), then the Jacobian of g with respect to x and to the
weights, where the analytic side differentiates through TF's gradient ops and the numeric side
takes finite differences of g.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from sg2ada import ops

RNG = np.random.default_rng(2024)
F1331 = ops.setup_filter([1, 3, 3, 1])
F_NONSEP = ops.setup_filter(np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 1.0, 1.0]]))
F_SEP12 = ops.setup_filter(np.linspace(-0.5, 1.0, 12) ** 2 + 0.1)


def _t(shape, scale=1.0):
    return tf.constant(RNG.standard_normal(shape) * scale, tf.float64)


def _check_jacobians(fn, args, tol=1e-6, jit=False, delta=1e-4):
    """Check u^T J (J = Jacobian of fn w.r.t. every arg, u a fixed random cotangent) element by
    element: backprop on one side, central finite differences of every input element on the
    other. A wrong gradient for any input element or output direction shows up (u is random)."""
    out_shape = tf.function(fn, jit_compile=jit)(*args).shape
    u = tf.constant(np.random.default_rng(1).standard_normal(out_shape), tf.float64)

    def scalar(*a):
        return tf.reduce_sum(fn(*a) * u)

    def analytic(*a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = scalar(*a)
        return tape.gradient(y, a)

    # Traced functions make the 2*size finite-difference evaluations cheap. Grouped convolutions
    # in float64 have no gradient kernel on stock CPU TF (oneDNN is float32-only), so those cases
    # run under XLA, which is also how training runs them.
    scalar = tf.function(scalar, jit_compile=jit)
    analytic = tf.function(analytic, jit_compile=jit)
    theoretical = analytic(*args)
    assert len(theoretical) == len(args)
    values = [a.numpy() for a in args]
    for i, (t, v) in enumerate(zip(theoretical, values)):
        numerical = np.zeros(v.size)
        for j in range(v.size):
            res = []
            for sign in (1, -1):
                vp = v.copy().reshape(-1)
                vp[j] += sign * delta
                shifted = [tf.constant(vp.reshape(v.shape)) if k == i else a for k, a in enumerate(args)]
                res.append(float(scalar(*shifted)))
            numerical[j] = (res[0] - res[1]) / (2 * delta)
        assert np.abs(numerical).max() > 1e-3, "degenerate check: the finite-difference gradient is ~0"
        np.testing.assert_allclose(t.numpy().reshape(-1), numerical, rtol=0,
                                   atol=tol * max(1.0, np.abs(numerical).max()))


def _quadratic_loss(y, seed_shape):
    c = tf.constant(np.random.default_rng(0).standard_normal(seed_shape), tf.float64)
    return tf.reduce_sum(tf.square(y) * c)


def _grad_wrt_first(op):
    """args -> d L(op(*args)) / d args[0], with L a weighted sum of squares."""

    def g(*args):
        with tf.GradientTape() as tape:
            tape.watch(args[0])
            y = op(*args)
            loss = _quadratic_loss(y, y.shape)
        return tape.gradient(loss, args[0])

    return g


UPFIRDN_CASES = [
    dict(f=F1331, up=2, padding=[2, 1, 2, 1], gain=4),
    dict(f=F1331, down=2, padding=1),
    dict(f=F1331, padding=[2, 1, 2, 1]),
    dict(f=F_NONSEP, up=2, down=2, padding=[1, 2, 2, 1], flip_filter=True),
    dict(f=F_SEP12, up=2, down=2, padding=5, gain=4),
]


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=range(len(UPFIRDN_CASES)))
def test_upfirdn2d_gradients(case):
    _upfirdn2d_gradients(case)


# The slices form upsamples phase by phase (no zero insertion): a non-separable, flipped,
# anisotropic up-only case exercises the per-phase sub-kernels and the interleave.
SLICE_CASES = UPFIRDN_CASES[:4] + [dict(f=F_NONSEP, up=[2, 3], padding=[1, 2, 2, 0], flip_filter=True, gain=6)]


@pytest.mark.parametrize("case", SLICE_CASES, ids=range(len(SLICE_CASES)))
def test_upfirdn2d_gradients_slice_impl(case):
    ops.set_fir_impl("slices")
    try:
        _upfirdn2d_gradients(case)
    finally:
        ops.set_fir_impl("auto")


def _upfirdn2d_gradients(case):
    case = dict(case)
    f = case.pop("f")
    x = _t([1, 5, 5, 2])
    op = lambda x: ops.upfirdn2d(x, f, **case)  # noqa: E731
    _check_jacobians(op, [x])
    _check_jacobians(_grad_wrt_first(op), [x])


@pytest.mark.parametrize("act", list(ops.activation_funcs))
def test_bias_act_gradients(act):
    x = _t([3, 4])
    x = tf.where(tf.abs(x) < 0.1, x + 0.3, x)  # keep away from the kinks of relu/lrelu/clamp
    b = tf.constant([0.05, -0.03, 0.02, 0.0], tf.float64)
    clamp = 5.0 if act in ("lrelu", "swish") else None  # inactive clamp: the gradient passes through
    op = lambda x, b: ops.bias_act(x, b, act=act, clamp=clamp)  # noqa: E731
    _check_jacobians(op, [x, b], tol=1e-5)
    if act != "linear":
        _check_jacobians(_grad_wrt_first(op), [x, b], tol=1e-5)


def test_bias_act_clamp_gradient_is_zero_where_clamped():
    x = tf.constant([[-3.0, -0.5, 0.5, 3.0]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.bias_act(x, act="linear", clamp=1.0)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [[0, 1, 1, 0]])


CONV_CASES = [
    dict(k=3, padding=1),
    dict(k=3, up=2, padding=1, flip_weight=False, f=F1331),
    dict(k=3, down=2, padding=1, f=F1331),
    dict(k=1, down=2, f=F1331),
    dict(k=1, up=2, f=F1331),
    dict(k=3, up=2, padding=1, groups=2, f=F1331),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=range(len(CONV_CASES)))
def test_conv2d_resample_gradients(case):
    case = dict(case)
    k = case.pop("k")
    groups = case.get("groups", 1)
    x = _t([2, 4, 4, 2])
    w = _t([k, k, 2 // groups, 2], 0.5)
    op = lambda x, w: ops.conv2d_resample(x, w, **case)  # noqa: E731
    _check_jacobians(op, [x, w], jit=groups > 1)
    _check_jacobians(_grad_wrt_first(op), [x, w], jit=groups > 1)  # R1: d/dw of (d/dx)


MODCONV_CASES = [
    dict(k=3, padding=1, fused_modconv=False),
    dict(k=3, padding=1, fused_modconv=True),
    dict(k=3, up=2, padding=1, flip_weight=False, fused_modconv=False),
    dict(k=3, up=2, padding=1, flip_weight=False, fused_modconv=True),
    dict(k=1, demodulate=False, fused_modconv=False),
]


@pytest.mark.parametrize("case", MODCONV_CASES, ids=range(len(MODCONV_CASES)))
def test_modulated_conv2d_gradients(case):
    case = dict(case)
    k = case.pop("k")
    if case.get("up", 1) > 1:
        case["resample_filter"] = F1331
    x = _t([2, 3, 3, 2])
    w = _t([k, k, 2, 2])
    s = tf.constant(RNG.uniform(0.5, 1.5, [2, 2]), tf.float64)
    op = lambda s, x, w: ops.modulated_conv2d(x, w, s, **case)  # noqa: E731
    # Eager on purpose: the fused form's gradient goes through a custom gradient (the non-fused
    # map), which must give exact first and second derivatives without XLA.
    _check_jacobians(op, [s, x, w], tol=1e-5)
    # Path-length regularisation: d/dw of (d img / d styles).
    _check_jacobians(_grad_wrt_first(op), [s, x, w], tol=1e-5)
