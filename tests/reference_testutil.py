"""Loading NVIDIA's numerical reference material (`../shared/reference/*.npz`) in tests.

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
