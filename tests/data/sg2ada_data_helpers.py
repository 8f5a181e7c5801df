"""Builders for the dataset tests: tiny sources of every kind, made by the tests themselves.

Each builder writes a handful of small images (8x8 or 16x16) with known pixel values, so tests can
check that what comes out of the tool and the pipeline is exactly what went in.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image


def solid(value, size=8, channels=3) -> np.ndarray:
    """A uint8 image whose pixels encode `value` (and a left-right gradient, so flips show)."""
    img = np.zeros((size, size, channels), np.uint8)
    img[...] = value
    img[:, : size // 2, 0] = (value + 100) % 256  # left half differs: an x-flip is visible
    return img


def save_png(path: Path, arr: np.ndarray, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    PIL.Image.fromarray(a, mode).save(path)
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="png")
    return buf.getvalue()


def write_cifar_tarball(path: Path, per_batch=3, protocol=2, hostile=False, replace=None):
    """A CIFAR-10 python tarball; `replace` maps member names (data_batch_1, batches.meta) to the
    bytes to store instead, `hostile` puts HOSTILE_PICKLE in data_batch_1."""
    replace = dict(replace or {})
    if hostile:
        replace["data_batch_1"] = HOSTILE_PICKLE
    rng = np.random.default_rng(0)
    names = [f"class{i}".encode() for i in range(10)]
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj_bytes):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(obj_bytes)
            tar.addfile(info, io.BytesIO(obj_bytes))

        all_imgs, all_labels = [], []
        for b in range(1, 6):
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.integers(0, 10, per_batch)]
            all_imgs.append(data)
            all_labels += labels
            d = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
                 b"filenames": [b"f%d.png" % i for i in range(per_batch)]}
            add(f"data_batch_{b}", replace.get(f"data_batch_{b}") or pickle.dumps(d, protocol=protocol))
        add("batches.meta", replace.get("batches.meta") or pickle.dumps({b"label_names": names, b"num_vis": 3072},
                                                                        protocol=protocol))
    imgs = np.concatenate(all_imgs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return imgs, np.array(all_labels)


class Calls:
    """Pickles as a call of `func(*args)`: what a hostile pickle runs on load unless refused."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


HOSTILE_PICKLE = pickle.dumps({b"data": Calls(os.system, ("touch /tmp/sg2ada-pwned-by-pickle",))}, protocol=2)


def write_idx(path: Path, arr: np.ndarray, gz=True, truncate=0):
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    blob = head + arr.astype(np.uint8).tobytes()
    if truncate:
        blob = blob[:-truncate]
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def write_tf1_records(folder: Path, images_nhwc: np.ndarray, labels_onehot=None, prefix="ds"):
    """NVIDIA's TF1 layout: one *-rNN.tfrecords per lod (here the full size and half size)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    res = images_nhwc.shape[1]
    lod = int(np.log2(res))
    for k, r in ((lod, res), (lod - 1, res // 2)):
        with tf.io.TFRecordWriter(str(folder / f"{prefix}-r{k:02d}.tfrecords")) as w:
            for img in images_nhwc:
                small = img if r == res else img.reshape(r, 2, r, 2, -1).mean((1, 3)).astype(np.uint8)
                chw = small.transpose(2, 0, 1)
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(chw.shape))),
                    "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[chw.tobytes()])),
                }))
                w.write(ex.SerializeToString())
    if labels_onehot is not None:
        with open(folder / f"{prefix}-rxx.labels", "wb") as f:
            np.save(f, labels_onehot.astype(np.float32))
    return folder


def write_zip(path: Path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def nvidia_json(pairs) -> bytes:
    return json.dumps({"labels": [[n, l] for n, l in pairs]}).encode()


def read_dataset(dest, **kw):
    """All images (uint8) and labels of a dataset, in index order, via the real pipeline."""
    from sg2ada.data import make_dataset

    ds = make_dataset(dest, 1000, shuffle=False, repeat=False, as_uint8=True, with_index=True, **kw)
    xs, cs, idx = [], [], []
    for x, c, i in ds:
        xs.append(x.numpy())
        cs.append(c.numpy())
        idx.append(i.numpy())
    x, c, i = np.concatenate(xs), np.concatenate(cs), np.concatenate(idx)
    order = np.argsort(i, kind="stable")
    return x[order], c[order], i[order]
