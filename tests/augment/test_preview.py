"""Tests of `sg2ada augment-preview` (grid of ADA augmentations, one row per operation)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sg2ada.augment.preview import preview_rows
from sg2ada.cli.main import main


@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        a = np.zeros([16, 16, 3], np.uint8)
        a[4:12, 2 + i : 8 + i] = rng.integers(0, 255, 3)
        Image.fromarray(a).save(d / f"{i:03d}.png")
    return d


def test_preview_writes_grid(image_folder, tmp_path):
    out = tmp_path / "grid.png"
    rc = main(["augment-preview", "--data", str(image_folder), "--pipe", "blit", "--p", "0.5",
               "--out", str(out), "--num", "3", "--seed", "1"])
    assert rc == 0
    with Image.open(out) as im:
        w, h = im.size
        a = np.asarray(im)
    rows = len(preview_rows("blit", 0.5))
    assert rows == 4  # xflip, rotate90, xint, full pipe
    assert (w, h) == (84 + 4 * 64, rows * 64)
    # First column of the first row is the first real image, enlarged 4x.
    with Image.open(image_folder / "000.png") as real:
        expect = np.asarray(real.resize((64, 64), Image.NEAREST))
    np.testing.assert_array_equal(a[:64, 84:148], expect)


@pytest.mark.parametrize("argv,message", [
    (["--p", "1.5"], "--p"),
    (["--num", "0"], "--num"),
    (["--out", "grid.jpg"], "--out"),
])
def test_preview_bad_options(image_folder, tmp_path, capsys, argv, message):
    base = {"--data": str(image_folder), "--out": str(tmp_path / "g.png"), "--p": "0.5", "--num": "2"}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    args = ["augment-preview"] + [x for kv in base.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_preview_missing_data(tmp_path, capsys):
    assert main(["augment-preview", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png")]) == 2
    assert "nope" in capsys.readouterr().err
