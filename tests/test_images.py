"""sg2ada.images: NVIDIA's quantisation, the image grid and atomic PNG writes."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sg2ada.errors import UserError
from sg2ada.images import image_grid, save_png, to_uint8


def test_quantisation_is_nvidias_eagerly_and_in_graph():
    x = np.array([-1.5, -1.0, -0.5, -0.001, 0.0, 0.5, 0.999, 1.0, 2.0], np.float32).reshape(1, 1, 9, 1)
    want = np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8)  # truncated, not rounded
    np.testing.assert_array_equal(np.asarray(to_uint8(x)), want)
    np.testing.assert_array_equal(tf.function(to_uint8)(tf.constant(x)).numpy(), want)
    assert list(want.reshape(-1)) == [0, 0, 64, 127, 128, 191, 255, 255, 255]


def test_grid_is_row_major_with_black_padding_and_drops_extra_images():
    imgs = np.arange(1, 6, dtype=np.uint8)[:, None, None, None] * np.ones([5, 2, 3, 1], np.uint8)
    g = image_grid(imgs, cols=3)
    assert g.shape == (4, 9, 1)
    assert [g[0, 0, 0], g[0, 3, 0], g[0, 6, 0], g[2, 0, 0], g[2, 3, 0], g[2, 6, 0]] == [1, 2, 3, 4, 5, 0]
    assert image_grid(imgs).shape == (4, 9, 1)  # ceil(sqrt(5)) = 3 columns
    assert image_grid(imgs, cols=2, rows=1).shape == (2, 6, 1)


def test_save_png_round_trips_and_leaves_no_temp_file(tmp_path):
    rgb = np.random.RandomState(0).randint(0, 256, [4, 5, 3]).astype(np.uint8)
    gray = rgb[:, :, :1]
    assert save_png(rgb, tmp_path / "rgb.png") == str(tmp_path / "rgb.png")
    save_png(gray, tmp_path / "gray.png")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "rgb.png")), rgb)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "gray.png")), gray[:, :, 0])
    assert sorted(os.listdir(tmp_path)) == ["gray.png", "rgb.png"]


def test_save_png_into_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.*cannot write the image"):
        save_png(np.zeros([2, 2, 3], np.uint8), tmp_path / "missing" / "x.png")
