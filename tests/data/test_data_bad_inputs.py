"""Bad input to the dataset tool: each file is skipped and reported by name, or the tool stops
with one clear line; nothing half-written is left behind; sources are never modified."""

from __future__ import annotations

import builtins
import hashlib
import json
import os

import numpy as np
import PIL.Image
import pytest
from sg2ada_data_helpers import png_bytes, read_dataset, save_png, solid, write_cifar_tarball, write_idx, write_zip

from sg2ada.data import images as im
from sg2ada.data.tool import convert_dataset
from sg2ada.errors import UserError


def _reasons(meta):
    return {s["file"]: s["reason"] for s in meta["report"]["skipped"]}


def _actions(meta):
    return {s["file"]: s["action"] for s in meta["report"]["converted"]}


def test_corrupt_truncated_and_non_image_files_are_skipped(image_folder, tmp_path):
    (image_folder / "garbage.png").write_bytes(b"this is not a png at all")
    good = png_bytes(solid(99, size=8))
    (image_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_folder / "notes.txt").write_text("hello")
    meta = convert_dataset(str(image_folder), tmp_path / "out")
    r = _reasons(meta)
    assert meta["count"] == 6
    assert "not a decodable image" in r["garbage.png"]
    assert "truncated" in r["truncated.png"] or "corrupt" in r["truncated.png"]
    assert "not an image file" in r["notes.txt"]
    assert meta["report"]["skipped_count"] == 3


def test_size_mismatch_skipped_or_resized(image_folder, tmp_path):
    save_png(image_folder / "big.png", solid(5, size=16))
    meta = convert_dataset(str(image_folder), tmp_path / "a")
    assert meta["count"] == 6 and "differs from the dataset's 8x8" in _reasons(meta)["big.png"]
    meta = convert_dataset(str(image_folder), tmp_path / "b", resolution=8)
    assert meta["count"] == 7 and "resized 16x16->8x8" in _actions(meta)["big.png"]


def test_modes_are_converted_and_recorded(tmp_path):
    root = tmp_path / "modes"
    save_png(root / "0_rgb.png", solid(40))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :4, 3] = 255  # left half opaque, right half transparent
    PIL.Image.fromarray(rgba, "RGBA").save(root / "1_rgba.png")
    PIL.Image.fromarray(solid(80)).convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=4).save(root / "2_palette.png")
    PIL.Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(root / "3_gray16.png")
    PIL.Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(root / "4_cmyk.jpg")
    PIL.Image.fromarray(np.full((8, 8), 77, np.uint8), "L").save(root / "5_gray.png")
    meta = convert_dataset(str(root), tmp_path / "out")
    assert meta["channels"] == 3 and meta["count"] == 6, meta["report"]
    a = _actions(meta)
    assert "RGBA->RGB (alpha composited over black)" in a["1_rgba.png"]
    assert "palette->RGB" in a["2_palette.png"]
    assert "16-bit->8-bit (scaled)" in a["3_gray16.png"] and "grayscale->RGB" in a["3_gray16.png"]
    assert "CMYK->RGB" in a["4_cmyk.jpg"]
    assert a["5_gray.png"] == "grayscale->RGB"
    assert "0_rgb.png" not in a
    x, _, _ = read_dataset(tmp_path / "out")
    assert x[1, :, :4].min() == 200 and x[1, :, 4:].max() == 0
    np.testing.assert_array_equal(x[2], solid(80))
    assert x[3].min() == 255
    assert x[4].min() >= 250  # CMYK all-zero ink is white
    assert np.all(x[5] == 77)


def test_all_grayscale_gives_one_channel(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    for i in range(3):
        PIL.Image.fromarray(np.full((8, 8), 10 * i, np.uint8), "L").save(root / f"{i}.png")
    meta = convert_dataset(str(root), tmp_path / "out")
    assert meta["channels"] == 1 and meta["report"]["converted_count"] == 0


def test_empty_folder_stops_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images") as e:
        convert_dataset(str(tmp_path / "empty"), tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_only_bad_files_stops(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="no usable images .*a.png"):
        convert_dataset(str(root), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temp dir left


def test_unreadable_file_is_skipped(image_folder, tmp_path, monkeypatch):
    # Tests run as root, where chmod 000 does not stop reads: fail the open of that one file instead.
    target = str(image_folder / "a" / "img1.png")
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    meta = convert_dataset(str(image_folder), tmp_path / "out")
    assert meta["count"] == 5
    assert _reasons(meta)["a/img1.png"] == "unreadable (Permission denied)"


def test_zip_path_traversal_is_skipped_and_nothing_written_outside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    src = write_zip(tmp_path / "evil.zip", {
        "ok/0.png": png_bytes(solid(1)),
        "../evil.png": png_bytes(solid(2)),
        "/abs.png": png_bytes(solid(3)),
        "a/../../evil2.png": png_bytes(solid(4)),
    })
    before = sorted(p.name for p in tmp_path.iterdir())
    meta = convert_dataset(str(src), work / "out")
    r = _reasons(meta)
    assert meta["count"] == 1
    for name in ("../evil.png", "/abs.png", "a/../../evil2.png"):
        assert "unsafe path" in r[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_existing_dataset_refused_unless_force(image_folder, tmp_path):
    dest = tmp_path / "out"
    convert_dataset(str(image_folder), dest, max_images=2)
    with pytest.raises(UserError, match="already holds a dataset; pass --force"):
        convert_dataset(str(image_folder), dest)
    assert json.loads((dest / "dataset.json").read_text())["count"] == 2
    meta = convert_dataset(str(image_folder), dest, force=True)
    assert meta["count"] == 6 and json.loads((dest / "dataset.json").read_text())["count"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out"]


def test_non_dataset_folder_never_replaced(image_folder, tmp_path):
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(UserError, match="not an sg2ada dataset"):
            convert_dataset(str(image_folder), dest, force=force)
    assert (dest / "keep.txt").read_text() == "mine"


def test_interrupted_conversion_leaves_nothing(image_folder, tmp_path, monkeypatch):
    real = im.process
    calls = []

    def flaky(src, spec):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(src, spec)

    monkeypatch.setattr(im, "process", flaky)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(str(image_folder), tmp_path / "out", workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]


def test_sources_are_never_modified(image_folder, tmp_path):
    (image_folder / "dataset.json").write_text(json.dumps({"labels": None}))

    def snapshot():
        return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                for p in sorted(image_folder.rglob("*")) if p.is_file()}

    before = snapshot()
    convert_dataset(str(image_folder), tmp_path / "out", resolution=4, channels=1)
    assert snapshot() == before


def test_hostile_cifar_pickle_is_refused_without_running_code(tmp_path):
    marker = "/tmp/sg2ada-pwned-by-pickle"
    if os.path.exists(marker):
        os.remove(marker)
    src = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(src, hostile=True)
    with pytest.raises(UserError, match="refusing to load posix.system|refusing to load os.system"):
        convert_dataset(str(src), tmp_path / "out")
    assert not os.path.exists(marker)
    assert not (tmp_path / "out").exists()


def test_truncated_mnist_stops_with_one_line(tmp_path):
    src = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8), truncate=100)
    with pytest.raises(UserError, match="truncated"):
        convert_dataset(str(src), tmp_path / "out")


def test_missing_label_in_dataset_json_is_skipped(image_folder, tmp_path):
    pairs = [["a/img0.png", 0], ["a/img1.png", 1], ["a/img2.png", 1], ["b/c/img3.png", 0], ["b/c/img4.png", 2]]
    (image_folder / "dataset.json").write_text(json.dumps({"labels": pairs}))
    meta = convert_dataset(str(image_folder), tmp_path / "out")
    assert meta["count"] == 5 and "no label" in _reasons(meta)["b/c/img5.png"]


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 24}, "not a power of two"),
    ({"transform": "center-crop-wide"}, "needs --resolution"),
    ({"max_images": 0}, "at least 1"),
    ({"labels_from": "json"}, "no labels found"),
])
def test_bad_options(image_folder, tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        convert_dataset(str(image_folder), tmp_path / "out", **kwargs)


def test_non_square_source_needs_resolution(tmp_path):
    save_png(tmp_path / "r" / "x.png", np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(UserError, match="not a square power of two; pass --resolution N --transform center-crop"):
        convert_dataset(str(tmp_path / "r"), tmp_path / "out")
