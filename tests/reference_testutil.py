"""Loading NVIDIA's numerical reference material (`../shared/reference/*.npz`) in tests, and the
layout conversions it needs (NVIDIA's arrays are NCHW, ours NHWC).

A module of its own rather than conftest.py: several test folders have a conftest.py, so
`from conftest import ...` could pick up the wrong one.
"""

from __future__ import annotations

import pathlib

import pytest


def load_reference_npz(reference_dir: pathlib.Path, name: str) -> dict:
    """One npz of NVIDIA's reference material as a dict of arrays; skips when the file is absent."""
    import numpy as np

    path = reference_dir / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def nhwc(x):
    """NCHW (NVIDIA's layout) -> NHWC (ours), contiguous."""
    import numpy as np

    return np.ascontiguousarray(np.transpose(np.asarray(x), (0, 2, 3, 1)))


def nchw(x):
    """NHWC (ours) -> NCHW (NVIDIA's layout)."""
    import numpy as np

    return np.transpose(np.asarray(x), (0, 3, 1, 2))
