"""Helpers shared by the network tests: the acceptance comparison (NCHW/NHWC transposes come from
tests/reference_testutil.py)."""

from __future__ import annotations

import numpy as np

REL_TOL = 1e-5  # ||ours - ref|| / ||ref||
ABS_TOL = 1e-4  # max |ours - ref|


def rel_and_max_err(ours, ref):
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)), float(np.max(np.abs(ours - ref)))


def assert_close(ours, ref, what):
    ours = np.asarray(ours)
    assert ours.shape == np.shape(ref), f"{what}: shape {ours.shape} != {np.shape(ref)}"
    rel, mx = rel_and_max_err(ours, ref)
    assert rel <= REL_TOL and mx <= ABS_TOL, f"{what}: relative error {rel:.3g}, max abs error {mx:.3g}"


