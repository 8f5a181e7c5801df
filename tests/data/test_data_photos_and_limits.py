"""What real photo folders bring: EXIF orientation, photos above PIL's bomb limit, files too large to
read, symlink loops, labels naming missing files and implausible class ids. Each is applied or
reported by name in dataset.json; nothing is dropped without a word."""

from __future__ import annotations

import ast
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from sg2ada_data_helpers import png_bytes, read_dataset, save_png, solid, write_zip

from sg2ada.cli.main import main
from sg2ada.data import images as im
from sg2ada.data import sources
from sg2ada.data.tool import convert_dataset
from sg2ada.errors import UserError


def _reasons(meta):
    return {s["file"]: s["reason"] for s in meta["report"]["skipped"]}


def _actions(meta):
    return {s["file"]: s["action"] for s in meta["report"]["converted"]}


def _with_orientation(arr, fmt, orientation) -> bytes:
    buf = io.BytesIO()
    img = PIL.Image.fromarray(arr)
    if fmt == "TIFF":
        img.save(buf, format=fmt, tiffinfo={0x0112: orientation})
    else:
        exif = PIL.Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


# ------------------------------------------------------------------------------------ EXIF orientation


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_exif_orientation_is_applied_and_counted(tmp_path, fmt):
    root = tmp_path / "phone"
    root.mkdir()
    stored = solid(90)  # left half differs from the right: a rotation is visible
    expect = {"a_upright": (1, stored), "b_cw": (6, np.rot90(stored, -1)), "c_180": (3, np.rot90(stored, 2)),
              "d_ccw": (8, np.rot90(stored, 1)), "e_mirror": (2, stored[:, ::-1])}
    ext = {"PNG": "png", "JPEG": "jpg", "TIFF": "tif"}[fmt]
    for name, (o, _) in expect.items():
        (root / f"{name}.{ext}").write_bytes(_with_orientation(stored, fmt, o))
    meta = convert_dataset(str(root), tmp_path / "out")
    assert meta["count"] == 5 and meta["report"]["rotated_count"] == 4
    acts = _actions(meta)
    assert f"a_upright.{ext}" not in acts
    assert acts[f"b_cw.{ext}"] == "EXIF orientation 6 applied (rotated 90 clockwise)"
    x, _, _ = read_dataset(tmp_path / "out")
    for k, (_, want) in enumerate(expect.values()):
        if fmt == "JPEG":
            assert np.abs(x[k].astype(int) - want).mean() < 6, k
        else:
            np.testing.assert_array_equal(x[k], want, err_msg=str(k))


def test_probe_reports_the_displayed_size(tmp_path):
    tall = np.zeros((16, 8, 3), np.uint8)  # stored 8 wide, 16 high; displayed turned on its side
    assert im.probe(_with_orientation(tall, "JPEG", 6)) == ("RGB", (16, 8))
    assert im.probe(_with_orientation(tall, "PNG", 1)) == ("RGB", (8, 16))
    assert im.probe(_with_orientation(tall, "TIFF", 8)) == ("RGB", (16, 8))


def test_cli_summary_counts_rotations(tmp_path, capsys):
    root = tmp_path / "p"
    root.mkdir()
    (root / "x.png").write_bytes(_with_orientation(solid(1), "PNG", 6))
    (root / "y.png").write_bytes(png_bytes(solid(2)))
    assert main(["dataset", "--source", str(root), "--dest", str(tmp_path / "o")]) == 0
    assert "rotated 1 by EXIF orientation" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ large photos


def test_100_megapixel_jpeg_is_decoded_downscaled(tmp_path):
    root = tmp_path / "camera"
    root.mkdir()
    photo = PIL.Image.linear_gradient("L").resize((10240, 10240))  # 105 MP, above PIL's 89.5 MP limit
    photo.save(root / "big.jpg", quality=50)
    del photo
    meta = convert_dataset(str(root), tmp_path / "out", resolution=32)
    assert meta["count"] == 1, meta["report"]
    assert "decoded downscaled 10240x10240->" in _actions(meta)["big.jpg"]
    x, _, _ = read_dataset(tmp_path / "out")
    column = x[0, :, 16, 0].astype(int)
    assert column[0] < 20 and column[-1] > 235 and np.all(np.diff(column) >= -2)  # the gradient survives


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_images_above_pils_limit_decode_downscaled(tmp_path, monkeypatch, fmt):
    # PIL's limit and ours shrunk together, so a 256x256 image stands for a 100 MP photo.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 64 * 64)
    monkeypatch.setattr(im, "LARGE_IMAGE_PIXELS", 32 * 32)
    root = tmp_path / "big"
    root.mkdir()
    rng = np.random.default_rng(0)
    arr = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 4x4 flat tiles
    PIL.Image.fromarray(arr).save(root / f"a.{fmt}")
    save_png(root / "small.png", solid(7, size=8))
    meta = convert_dataset(str(root), tmp_path / "out", resolution=8, resize_filter="box")
    assert meta["count"] == 2, meta["report"]
    assert "decoded downscaled 256x256->16x16 (large image)" in _actions(meta)[f"a.{fmt}"]
    assert "decoded downscaled" not in _actions(meta).get("small.png", "")
    x, _, _ = read_dataset(tmp_path / "out")
    tile_means = arr.reshape(4, 64, 4, 64, 3).mean((1, 3))
    got = x[0].reshape(4, 2, 4, 2, 3).mean((1, 3))
    assert np.abs(got - tile_means).max() < (12 if fmt == "jpg" else 2)
    assert PIL.Image.MAX_IMAGE_PIXELS == 64 * 64  # PIL's own setting is restored


def test_decode_cap_refuses_a_real_image_above_it(tmp_path, monkeypatch):
    monkeypatch.setattr(im, "MAX_DECODE_PIXELS", 16 * 16)
    root = tmp_path / "r"
    save_png(root / "a.png", solid(3, size=32))
    save_png(root / "b.png", solid(4, size=8))
    meta = convert_dataset(str(root), tmp_path / "out", resolution=8)
    assert meta["count"] == 1 and "declares 32x32 pixels, more than the" in _reasons(meta)["a.png"]


# ------------------------------------------------------------------------------ files too large to read


def test_zip_member_above_the_read_limit_is_skipped_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert len(big) > 1000
    src = write_zip(tmp_path / "z.zip", {"big.png": big, "ok.png": png_bytes(solid(1))})
    reads = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: reads.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    meta = convert_dataset(str(src), tmp_path / "out")
    assert meta["count"] == 1
    assert _reasons(meta)["big.png"] == f"{len(big)} bytes, above the 1000 bytes read limit for one image file; not read"
    assert "big.png" not in reads


def test_zip_member_with_a_lying_size_header_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    src = write_zip(tmp_path / "z.zip", {"big.png": big, "ok.png": png_bytes(solid(1))})
    data = bytearray(src.read_bytes())
    # Claim 500 bytes uncompressed in both the local header and the central directory.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig)
        data[at + off: at + off + 4] = struct.pack("<I", 500)
    src.write_bytes(bytes(data))
    meta = convert_dataset(str(src), tmp_path / "out")
    assert meta["count"] == 1 and "corrupt zip entry" in _reasons(meta)["big.png"]


def test_folder_file_above_the_read_limit_and_one_that_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 1000)
    root = tmp_path / "f"
    big = png_bytes(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    root.mkdir()
    (root / "big.png").write_bytes(big)
    (root / "grows.png").write_bytes(png_bytes(solid(1)))
    src = sources.open_source(str(root))
    assert {"file": "big.png", "reason": f"{len(big)} bytes, above the 1000 bytes read limit for one image file; "
                                        "not read"} in src.skipped
    (root / "grows.png").write_bytes(big)  # grown after listing: the read itself stops at the limit
    (item,) = src.items
    with pytest.raises(im.SkipImage, match="more than the 1000 bytes read limit"):
        item.read()


# ------------------------------------------------------------------------------------------ symlinks


def test_symlink_loops_are_reported_and_linked_folders_followed(image_folder, tmp_path, capsys):
    other = tmp_path / "other"
    save_png(other / "x.png", solid(200))
    os.symlink(other, image_folder / "linked")  # a folder elsewhere: followed
    os.symlink(image_folder, image_folder / "a" / "up")  # back to the root: a loop
    os.symlink("self.png", image_folder / "self.png")  # a link to itself
    os.symlink("missing.png", image_folder / "dangling.png")
    os.symlink(image_folder / "a", image_folder / "z_again")  # the same folder twice
    dest = tmp_path / "out"
    assert main(["dataset", "--source", str(image_folder), "--dest", str(dest)]) == 0
    meta = json.loads((dest / "dataset.json").read_text())
    r = _reasons(meta)
    assert meta["count"] == 7  # 6 images + linked/x.png
    assert r["a/up"] == "symlink loop (leads back to .); not followed"
    assert r["self.png"] == "symlink loop (the link leads back to itself); not followed"
    assert r["dangling.png"] == "broken symlink (its target does not exist)"
    assert r["z_again"] == "the same folder as a (a symlink); read once, there"
    assert meta["report"]["symlink_loop_count"] == 2
    assert "2 symlink loop(s) not followed" in capsys.readouterr().out


def test_unreadable_folder_is_reported(image_folder, tmp_path, monkeypatch):
    # Tests run as root, where chmod 000 does not stop reads: fail the listing of that one folder instead.
    target, real_scandir = str(image_folder / "b" / "c"), os.scandir

    def scandir(path="."):
        if os.fspath(path) == target:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    meta = convert_dataset(str(image_folder), tmp_path / "out")
    assert meta["count"] == 3 and _reasons(meta)["b/c"] == "unreadable folder (Permission denied); not read"


# --------------------------------------------------------------------------------------------- labels


def test_labels_for_missing_files_are_reported(image_folder, tmp_path, capsys):
    pairs = [[f"{'a' if i < 3 else 'b/c'}/img{i}.png", i % 2] for i in range(6)]
    pairs += [["gone/1.png", 0], ["gone/2.png", 1], ["./gone/3.png", 1], ["gone/4.png", 0]]
    (image_folder / "dataset.json").write_text(json.dumps({"labels": pairs}))
    dest = tmp_path / "out"
    assert main(["dataset", "--source", str(image_folder), "--dest", str(dest)]) == 0
    rep = json.loads((dest / "dataset.json").read_text())["report"]
    assert rep["labels_without_files_count"] == 4
    assert rep["labels_without_files"] == ["gone/1.png", "gone/2.png", "gone/3.png", "gone/4.png"]
    assert "4 label(s) for files not in the source (first: gone/1.png, gone/2.png, gone/3.png)" in capsys.readouterr().out


def test_implausible_class_label_is_refused_in_one_line(image_folder, tmp_path):
    pairs = [[f"{'a' if i < 3 else 'b/c'}/img{i}.png", [0, 1, 2, 1, 0, 100000000][i]] for i in range(6)]
    (image_folder / "dataset.json").write_text(json.dumps({"labels": pairs}))
    with pytest.raises(UserError) as e:
        convert_dataset(str(image_folder), tmp_path / "out")
    msg = str(e.value)
    assert "\n" not in msg and str(image_folder / "dataset.json") in msg
    assert "class labels go up to 100000000 but only 4 distinct classes are used" in msg
    assert "renumber the classes 0..3 or pass --labels-from none" in msg
    assert not (tmp_path / "out").exists()


def test_implausible_class_label_in_a_cifar_batch_is_refused(tmp_path):
    import pickle
    import tarfile

    train = {b"data": np.zeros((3, 3072), np.uint8), b"fine_labels": [5, 100000000, 0]}
    src = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        blob = pickle.dumps(train, protocol=2)
        info = tarfile.TarInfo("cifar-100-python/train")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(UserError, match="class labels go up to 100000000 but only 3 distinct"):
        convert_dataset(str(src), tmp_path / "out")


def test_class_id_rule():
    assert sources.check_class_ids([0, 999], "x") == 1000  # a small label space, however sparse
    assert sources.check_class_ids(np.arange(5000), "x") == 5000  # many classes, all used
    assert sources.check_class_ids(list(range(200)) + [1999], "x") == 2000  # one in ten used
    assert sources.check_class_ids([-1, -2], "x") == 0
    with pytest.raises(UserError, match="x: class labels go up to 5000 but only 2 distinct"):
        sources.check_class_ids([0, 5000], "x")


# ---------------------------------------------------------------------------------------------- layout


def test_no_import_cycle_inside_sg2ada_data():
    """Function-level imports included: data modules import each other one way only."""
    folder = Path(sources.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")}
    edges = {}
    for m in modules:
        tree = ast.parse((folder / f"{m}.py").read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "sg2ada.data":
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sg2ada.data."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("sg2ada.data.")}
        edges[m] = deps - {m}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in edges.get(start, ()))

    assert edges["sources"] >= {"builtin", "images"}
    cycles = sorted(m for m in modules if reaches(m, m))
    assert not cycles, f"import cycle through {cycles}: {edges}"
