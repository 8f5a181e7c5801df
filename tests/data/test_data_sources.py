"""The dataset tool on every source kind: what goes in comes out (pixels, labels, metadata)."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
from sg2ada_data_helpers import (
    nvidia_json,
    png_bytes,
    read_dataset,
    save_png,
    solid,
    write_cifar_tarball,
    write_idx,
    write_tf1_records,
    write_zip,
)

from sg2ada.data.tool import convert_dataset


def _meta(dest):
    return json.loads((dest / "dataset.json").read_text())


def test_folder_recursive_sorted_roundtrip(image_folder, tmp_path):
    dest = tmp_path / "out"
    meta = convert_dataset(str(image_folder), dest)
    assert meta["count"] == 6 and meta["resolution"] == 8 and meta["channels"] == 3
    assert meta["label_type"] is None and meta["label_dim"] == 0
    x, c, _ = read_dataset(dest)
    # a/img0..2 then b/c/img3..5: sorted relative paths
    np.testing.assert_array_equal(x, np.stack([solid(10 * (i + 1)) for i in range(6)]))
    assert c.shape == (6, 0)
    assert sorted(p.name for p in dest.iterdir()) == ["data-00000-of-00001.tfrecords", "dataset.json"]


def test_zip_of_images_and_raw_encoding(tmp_path):
    src = write_zip(tmp_path / "imgs.zip", {f"x/{i}.png": png_bytes(solid(i * 20)) for i in range(4)})
    dest = tmp_path / "out"
    meta = convert_dataset(str(src), dest, encoding="raw")
    assert meta["image_encoding"] == "raw" and meta["count"] == 4 and meta["source"]["kind"] == "zip"
    x, _, _ = read_dataset(dest)
    np.testing.assert_array_equal(x, np.stack([solid(i * 20) for i in range(4)]))


def test_nvidia_pytorch_zip_with_dataset_json(tmp_path):
    names = [f"00000/img{i:08d}.png" for i in range(5)]
    entries = {n: png_bytes(solid(30 + i)) for i, n in enumerate(names)}
    entries["dataset.json"] = nvidia_json([(n, [6, 1, 9, 0, 6][i]) for i, n in enumerate(names)])
    dest = tmp_path / "out"
    meta = convert_dataset(str(write_zip(tmp_path / "nv.zip", entries)), dest)
    assert meta["label_type"] == "class" and meta["label_dim"] == 10  # NVIDIA: max label + 1
    _, c, _ = read_dataset(dest)
    np.testing.assert_array_equal(c.argmax(1), [6, 1, 9, 0, 6])
    assert np.all(c.sum(1) == 1)
    np.testing.assert_array_equal(np.load(dest / "labels.npy"), [6, 1, 9, 0, 6])


def test_nvidia_folder_with_vector_labels(tmp_path):
    root = tmp_path / "nv"
    for i in range(3):
        save_png(root / f"{i}.png", solid(i))
    (root / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", [i, 0.5, -1.0]] for i in range(3)]}))
    dest = tmp_path / "out"
    meta = convert_dataset(str(root), dest)
    assert meta["label_type"] == "vector" and meta["label_dim"] == 3
    _, c, _ = read_dataset(dest)
    np.testing.assert_allclose(c, [[0, 0.5, -1], [1, 0.5, -1], [2, 0.5, -1]])


def test_class_subfolders(tmp_path):
    root = tmp_path / "classes"
    for cls, n in (("cat", 2), ("dog", 3)):
        for i in range(n):
            save_png(root / cls / f"{i}.png", solid(50 * (cls == "dog") + i))
    save_png(root / "stray.png", solid(1))
    dest = tmp_path / "out"
    meta = convert_dataset(str(root), dest, labels_from="folders")
    assert meta["label_names"] == ["cat", "dog"] and meta["count"] == 5
    assert {"file": "stray.png", "reason": "not inside a class sub-folder"} in meta["report"]["skipped"]
    _, c, _ = read_dataset(dest)
    np.testing.assert_array_equal(c.argmax(1), [0, 0, 1, 1, 1])


def test_tf1_multires_tfrecords_takes_highest_resolution(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    onehot = np.eye(4, dtype=np.float32)[[3, 0, 1, 1, 2]]
    src = write_tf1_records(tmp_path / "tf1", imgs, onehot)
    dest = tmp_path / "out"
    meta = convert_dataset(str(src), dest)
    assert meta["resolution"] == 8 and meta["count"] == 5 and meta["label_type"] == "class" and meta["label_dim"] == 4
    x, c, _ = read_dataset(dest)
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(c, onehot)


def test_cifar10_tarball_via_restricted_unpickler(tmp_path):
    src = tmp_path / "cifar-10-python.tar.gz"
    imgs, labels = write_cifar_tarball(src)
    dest = tmp_path / "out"
    meta = convert_dataset(str(src), dest)
    assert meta["count"] == 15 and meta["resolution"] == 32 and meta["label_dim"] == 10
    assert meta["label_names"] == [f"class{i}" for i in range(10)]
    x, c, _ = read_dataset(dest)
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(c.argmax(1), labels)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_padded_to_32(tmp_path, gz):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    src = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", imgs, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([7, 0, 3, 9], np.uint8), gz=gz)
    dest = tmp_path / "out"
    meta = convert_dataset(str(src), dest)
    assert meta["channels"] == 1 and meta["resolution"] == 32 and meta["label_dim"] == 10
    assert any("padded" in n for n in meta["report"]["notes"])
    x, c, _ = read_dataset(dest)
    np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], imgs)
    assert x[:, :2].max() == 0
    np.testing.assert_array_equal(c.argmax(1), [7, 0, 3, 9])


def test_builtin_shapes_deterministic_and_labelled(tmp_path):
    m1 = convert_dataset("builtin:shapes", tmp_path / "a", max_images=64, seed=3)
    convert_dataset("builtin:shapes", tmp_path / "b", max_images=64, seed=3)
    convert_dataset("builtin:shapes", tmp_path / "c", max_images=64, seed=4)
    assert m1["count"] == 64 and m1["resolution"] == 32 and m1["label_names"] == ["disc", "square", "triangle"]
    xa, ca, _ = read_dataset(tmp_path / "a")
    xb, cb, _ = read_dataset(tmp_path / "b")
    xc, _, _ = read_dataset(tmp_path / "c")
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(xa, xc)
    assert xa.std() > 20  # visible structure, not a flat colour
    assert len(set(ca.argmax(1).tolist())) == 3


def test_transforms_center_crop_and_wide(tmp_path):
    root = tmp_path / "wide"
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 200  # centre square region is bright
    save_png(root / "w.png", arr)
    meta = convert_dataset(str(root), tmp_path / "cc", transform="center-crop", resolution=8, resize_filter="box")
    x, _, _ = read_dataset(tmp_path / "cc")
    assert meta["resolution"] == 8 and x.shape == (1, 8, 8, 3) and x.min() >= 190
    assert "center-cropped 40x20->20x20" in meta["report"]["converted"][0]["action"]
    convert_dataset(str(root), tmp_path / "ccw", transform="center-crop-wide", resolution=16, wide_height=8)
    x, _, _ = read_dataset(tmp_path / "ccw")
    assert x.shape == (1, 16, 16, 3)
    assert x[0, :4].max() == 0 and x[0, 12:].max() == 0  # black bars above and below the picture
    assert x[0, 4:12, 6:10].min() > 150


def test_resolution_resize_and_max_images(image_folder, tmp_path):
    meta = convert_dataset(str(image_folder), tmp_path / "out", resolution=4, max_images=2, channels=1)
    assert meta["count"] == 2 and meta["resolution"] == 4 and meta["channels"] == 1
    x, _, _ = read_dataset(tmp_path / "out")
    assert x.shape == (2, 4, 4, 1)


def test_every_image_format(tmp_path):
    root = tmp_path / "fmts"
    root.mkdir()
    ref = solid(120)
    for ext in ("png", "webp", "bmp", "tiff", "jpg"):
        kw = {"lossless": True} if ext == "webp" else {}
        PIL.Image.fromarray(ref).save(root / f"x.{ext}", **kw)
    meta = convert_dataset(str(root), tmp_path / "out")
    assert meta["count"] == 5 and meta["report"]["skipped_count"] == 0
    x, _, _ = read_dataset(tmp_path / "out")
    for k, name in enumerate(sorted(p.name for p in root.iterdir())):
        if name.endswith(".jpg"):
            assert np.abs(x[k].astype(int) - ref).mean() < 12  # lossy
        else:
            np.testing.assert_array_equal(x[k], ref, err_msg=name)


def test_zip_with_class_subfolders(tmp_path):
    entries = {f"{cls}/{i}.png": png_bytes(solid(i)) for cls in ("b_dog", "a_cat") for i in range(2)}
    src = write_zip(tmp_path / "cls.zip", entries)
    meta = convert_dataset(str(src), tmp_path / "out", labels_from="folders")
    assert meta["label_names"] == ["a_cat", "b_dog"]
    _, c, _ = read_dataset(tmp_path / "out")
    np.testing.assert_array_equal(c.argmax(1), [0, 0, 1, 1])


def test_truncated_tf1_records_keep_the_good_part(tmp_path):
    imgs = np.random.default_rng(3).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    src = write_tf1_records(tmp_path / "tf1", imgs)
    rec = src / "ds-r03.tfrecords"
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) - 100])
    meta = convert_dataset(str(src), tmp_path / "out")
    assert 0 < meta["count"] < 6
    assert any(s["file"] == "ds-r03.tfrecords" and "truncated" in s["reason"] for s in meta["report"]["skipped"])
    x, _, _ = read_dataset(tmp_path / "out")
    np.testing.assert_array_equal(x, imgs[: meta["count"]])


def test_cifar100_tarball_fine_labels(tmp_path):
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(4)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    train = {b"data": data, b"fine_labels": [5, 99, 0, 42], b"coarse_labels": [1, 2, 3, 4]}
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
    src = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        for name, obj in (("train", train), ("meta", meta)):
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = convert_dataset(str(src), tmp_path / "out")
    assert out["label_dim"] == 100 and out["label_names"][99] == "f99"
    x, c, _ = read_dataset(tmp_path / "out")
    np.testing.assert_array_equal(x, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(c.argmax(1), [5, 99, 0, 42])
