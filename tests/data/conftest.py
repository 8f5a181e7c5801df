"""Fixtures for the dataset tests (builders live in sg2ada_data_helpers.py)."""

from __future__ import annotations

import pytest
from sg2ada_data_helpers import save_png, solid


@pytest.fixture
def image_folder(tmp_path):
    """A folder of 6 RGB 8x8 PNGs, img0..img5, values 10..60, in a nested layout."""
    root = tmp_path / "imgs"
    for i in range(6):
        sub = root / ("a" if i < 3 else "b/c")
        save_png(sub / f"img{i}.png", solid(10 * (i + 1)))
    return root
