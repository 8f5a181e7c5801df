"""Hostile sources the dataset tool refuses, kept as tests so none regresses: zip members that
escape the archive, decompression bombs, and CIFAR pickles that try to run code. Nothing outside
the source is read, nothing is written outside DEST, no payload runs."""

from __future__ import annotations

import io
import os
import pickle
import posixpath
import struct
import subprocess
import tarfile
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest
from sg2ada_data_helpers import Calls, png_bytes, save_png, solid, write_cifar_tarball, write_idx, write_zip

from sg2ada.cli.main import main
from sg2ada.data import sources
from sg2ada.data.tool import convert_dataset
from sg2ada.errors import UserError


def _reasons(meta):
    return {s["file"]: s["reason"] for s in meta["report"]["skipped"]}


# ------------------------------------------------------------------------------------ zip traversal


@pytest.mark.parametrize("name", ["../evil.png", "/abs.png", "a/../../evil.png", "./../evil.png", "..\\evil.png",
                                  "a\\..\\..\\evil.png", "\\abs.png", "C:/evil.png", "C:\\evil.png"])
def test_zip_member_escaping_the_archive_is_never_read(tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    src = write_zip(tmp_path / "evil.zip", {"ok/0.png": png_bytes(solid(1)), name: png_bytes(solid(2))})
    before = sorted(p.name for p in tmp_path.iterdir())
    meta = convert_dataset(str(src), work / "out")
    assert meta["count"] == 1
    assert _reasons(meta)[name] == "unsafe path in zip (escapes the archive root); not read"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_zip_symlink_member_is_not_followed(tmp_path):
    src = tmp_path / "links.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("ok.png", png_bytes(solid(1)))
        link = zipfile.ZipInfo("passwd.png")
        link.external_attr = (0o120777 << 16)  # a symlink to /etc/passwd, as `zip --symlinks` stores it
        z.writestr(link, "/etc/passwd")
    meta = convert_dataset(str(src), tmp_path / "out")
    assert meta["count"] == 1 and "not a decodable image" in _reasons(meta)["passwd.png"]


# ------------------------------------------------------------------------------- decompression bombs


def _png_claiming(width, height) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header claims width x height."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def _jpeg_claiming(width, height) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(solid(5)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_decompression_bombs_are_skipped_unread(tmp_path, capsys, kind):
    bombs = {"bomb.png": _png_claiming(50000, 50000), "wide.png": _png_claiming(2**31 - 1, 1),
             "bomb.jpg": _jpeg_claiming(65000, 65000)}
    files = {**bombs, "ok.png": png_bytes(solid(9))}
    if kind == "zip":
        src = write_zip(tmp_path / "b.zip", files)
    else:
        src = tmp_path / "b"
        src.mkdir()
        for n, data in files.items():
            (src / n).write_bytes(data)
    dest = tmp_path / "out"
    assert main(["dataset", "--source", str(src), "--dest", str(dest)]) == 0
    out, err = capsys.readouterr()
    assert "wrote 1 images 8x8x3" in out and "skipped 3" in out
    for name in bombs:
        lines = [ln for ln in err.splitlines() if ln.startswith(f"skipped {name}: ")]
        assert len(lines) == 1 and "decompression bomb" in lines[0], err


def test_bomb_beside_a_large_photo_with_resolution(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "bomb.png").write_bytes(_png_claiming(50000, 50000))
    save_png(root / "ok.png", solid(9, size=16))
    meta = convert_dataset(str(root), tmp_path / "out", resolution=8)
    assert meta["count"] == 1
    assert _reasons(meta)["bomb.png"].startswith("declares 50000x50000 pixels, more than the 268 MP this tool decodes")


def test_gzip_bomb_posing_as_mnist_stops_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", 1000)
    src = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))  # 2368 bytes inflated
    assert src.stat().st_size < 1000
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz decompresses to more than the 1000 bytes"):
        convert_dataset(str(src), tmp_path / "out")


def test_oversized_cifar_members_are_refused_and_strays_never_read(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", 20_000)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, replace={"data_batch_2": b"\0" * 30_000})
    with pytest.raises(UserError, match=r"data_batch_2 is 30000 bytes, more than the 20000 bytes"):
        convert_dataset(str(tarball), tmp_path / "out")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_tarball(tmp_path / "ok.tar.gz")
    with tarfile.open(tmp_path / "ok.tar.gz") as tar:
        for m in tar:
            (folder / posixpath.basename(m.name)).parent.mkdir(exist_ok=True)
            (folder / posixpath.basename(m.name)).write_bytes(tar.extractfile(m).read())
    (folder / "huge.bin").write_bytes(b"\0" * 100_000)  # not a CIFAR file: never read
    assert convert_dataset(str(folder), tmp_path / "out")["count"] == 15


# ------------------------------------------------------------------------------------ hostile pickles


def _payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": {b"data": Calls(os.system, (f"touch {marker}",))},
        "subprocess.Popen": {b"data": Calls(subprocess.Popen, (["touch", str(marker)],))},
        "builtins.exec": {b"data": Calls(exec, (touch,))},
        "builtins.eval": {b"data": Calls(eval, (touch,))},
        "builtins.getattr": {b"data": Calls(getattr, (Calls(__import__, ("os",)), "system"))},
        "object array": {b"data": np.array([Calls(os.system, (f"touch {marker}",))], dtype=object),
                         b"labels": [0]},
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("kind", ["os.system", "subprocess.Popen", "builtins.exec", "builtins.eval",
                                  "builtins.getattr", "object array"])
def test_hostile_cifar_batch_is_refused_without_running_code(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_payloads(marker)[kind], protocol=protocol)
    src = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(src, replace={"data_batch_1": blob})
    with pytest.raises(UserError) as e:
        convert_dataset(str(src), tmp_path / "out")
    msg = str(e.value)
    assert f"{src}:data_batch_1: " in msg and "\n" not in msg
    assert ("refusing to load" in msg) if kind != "object array" else ("object arrays are not allowed" in msg)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_hostile_cifar_meta_and_folder_layout_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_payloads(marker)["os.system"], protocol=2)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, replace={"batches.meta": blob})
    with pytest.raises(UserError, match=r"batches.meta: refusing to load (posix|os)\.system"):
        convert_dataset(str(tarball), tmp_path / "out")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(blob)
    with pytest.raises(UserError, match=r"data_batch_1: refusing to load (posix|os)\.system"):
        convert_dataset(str(folder), tmp_path / "out")
    assert not marker.exists()


def test_pickle_with_persistent_ids_is_refused(tmp_path):
    class _Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, bytes) and obj == b"x" else None

    buf = io.BytesIO()
    _Persistent(buf, protocol=2).dump({b"data": b"x"})
    src = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(src, replace={"data_batch_1": buf.getvalue()})
    with pytest.raises(UserError, match="data_batch_1 is not a readable CIFAR batch"):
        convert_dataset(str(src), tmp_path / "out")
