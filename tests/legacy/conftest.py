"""Fixtures shared by the legacy-import tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tf1_pkl(reference_dir):
    """NVIDIA's small TF1 reference pickle (tf1_small.pkl in the reference material)."""
    path = reference_dir / "tf1_small.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
