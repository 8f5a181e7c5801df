"""Readers for every dataset source the tool accepts, behind one interface (`Source`).

A source lists `Item`s (a name for the report, a label, and a `read()` giving encoded bytes or a
uint8 array) plus the entries it already knows it must skip (non-image files, unsafe zip paths,
images without a label). Sources only ever read: nothing is extracted to disk and source files are
opened read-only. Kinds: builtin:NAME, image folder (recursive), image zip, NVIDIA's PyTorch layout
(folder or zip with dataset.json labels), NVIDIA's TF1 `*-rNN.tfrecords` folder, the CIFAR-10/100
python tarball (restricted unpickler) and MNIST idx files (raw or gz).
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import re
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sg2ada.data.images import is_image_name, probe
from sg2ada.data.safe_pickle import UnsafePickleError, safe_load
from sg2ada.errors import UserError

LABELS_FROM = ("auto", "json", "folders", "none")
_TF1_RE = re.compile(r"^(?P<prefix>.*)-r(?P<lod>\d\d)\.tfrecords$")


@dataclass
class Item:
    name: str
    label: object  # int class, list of floats, or None
    read: Callable[[], object]  # -> encoded bytes or uint8 array; may raise OSError
    probe: Callable[[], object] | None = None  # -> (mode, (w, h)) | None


@dataclass
class Source:
    kind: str
    path: str
    items: Iterable[Item]
    count: int | None
    skipped: list[dict] = field(default_factory=list)
    label_type: str | None = None  # "class" | "vector" | None
    label_dim: int = 0
    label_names: list[str] | None = None
    channels: int | None = None  # known up front for array sources
    size: tuple[int, int] | None = None  # (w, h) known up front for array sources
    notes: list[str] = field(default_factory=list)  # source-wide conversions (e.g. MNIST padding)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self):
        for c in self.closers:
            c()
        self.closers.clear()


def read_file_bytes(path: str) -> bytes:
    """The one place a source file's bytes are read (tests fake unreadable files here or at open)."""
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------------------------- labels


def _parse_labels_json(text: str, where: str) -> dict[str, object] | None:
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise UserError(f"{where} is not valid JSON ({e}); fix or remove it") from None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, list) and len(x) == 2 for x in labels):
        raise UserError(f'{where}: "labels" must be a list of ["relative/path.png", label] pairs (or null)')
    return {str(k).replace("\\", "/"): v for k, v in labels}


def _label_kind(values: Iterable[object], where: str) -> tuple[str | None, int]:
    """Class labels are ints (dim = max+1, NVIDIA's rule); vectors are equal-length number lists."""
    values = [v for v in values if v is not None]
    if not values:
        return None, 0
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "class", max(values) + 1 if max(values) >= 0 else 0
    if all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in values):
        dims = {len(v) for v in values}
        if len(dims) != 1:
            raise UserError(f"{where}: label vectors have different lengths {sorted(dims)}; make them equal")
        return "vector", dims.pop()
    raise UserError(f"{where}: labels must be all integers (classes) or all number lists (vectors)")


def _check_label(label, label_type, label_dim) -> str | None:
    if label_type == "class" and (not isinstance(label, int) or label < 0 or label >= label_dim):
        return f"class label {label!r} is not an integer in [0, {label_dim})"
    return None


# ------------------------------------------------------------------------------- folders and zips


def _is_unsafe_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    parts = name.replace("\\", "/").split("/")
    return ".." in parts


def _finish_file_source(src: Source, entries, labels_from, json_labels, json_where, origin):
    """Shared by folder and zip: decide labels, build the item list, report what is skipped.

    `entries` is [(relative_name, read, probe)] for every image-named file, sorted."""
    if labels_from == "json" and json_labels is None:
        raise UserError(f"--labels-from json: no labels found in {json_where}; add dataset.json or drop the option")
    if labels_from == "folders":
        classes = sorted({n.split("/")[0] for n, _, _ in entries if "/" in n})
        if not classes:
            raise UserError(f"--labels-from folders: {origin} has no class sub-folders; put each class in its own folder")
        index = {c: i for i, c in enumerate(classes)}
        src.label_type, src.label_dim, src.label_names = "class", len(classes), classes
    elif labels_from in ("auto", "json") and json_labels is not None:
        src.label_type, src.label_dim = _label_kind(json_labels.values(), json_where)
    items = []
    for name, read, prb in entries:
        label = None
        if src.label_type is not None:
            if labels_from == "folders":
                if "/" not in name:
                    src.skipped.append({"file": name, "reason": "not inside a class sub-folder"})
                    continue
                label = index[name.split("/")[0]]
            else:
                if name not in json_labels or json_labels[name] is None:
                    src.skipped.append({"file": name, "reason": f"no label for it in {json_where}"})
                    continue
                label = json_labels[name]
                bad = _check_label(label, src.label_type, src.label_dim)
                if bad:
                    src.skipped.append({"file": name, "reason": bad})
                    continue
        items.append(Item(name, label, read, prb))
    src.items, src.count = items, len(items)
    return src


def open_folder(root: Path, labels_from: str, exclude: list[Path]) -> Source:
    root = root.resolve()
    excl = [p.resolve() for p in exclude]
    src = Source("folder", str(root), [], 0)
    entries = []
    json_text = None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Never read our own output (or its temp dir) when DEST sits inside SOURCE.
        dirnames[:] = sorted(d for d in dirnames if not any((here / d) == e or (here / d).name.startswith(f".{e.name}.") for e in excl))
        for fn in sorted(filenames):
            full = here / fn
            rel = full.relative_to(root).as_posix()
            if rel == "dataset.json":
                json_text = full
                continue
            if not full.is_file():
                continue
            if not is_image_name(fn):
                src.skipped.append({"file": rel, "reason": "not an image file (unsupported extension)"})
                continue
            p = str(full)
            entries.append((rel, (lambda p=p: read_file_bytes(p)), (lambda p=p: probe(p))))
    entries.sort(key=lambda e: e[0])
    json_labels = None
    if json_text is not None and labels_from in ("auto", "json"):
        try:
            json_labels = _parse_labels_json(read_file_bytes(str(json_text)).decode("utf-8", "replace"), str(json_text))
        except OSError as e:
            raise UserError(f"cannot read {json_text} ({e.strerror or e}); fix its permissions") from None
    return _finish_file_source(src, entries, labels_from, json_labels, str(root / "dataset.json"), str(root))


def open_zip(path: Path, labels_from: str) -> Source:
    try:
        z = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} is not a readable zip archive ({e}); check the file") from None
    lock = threading.Lock()  # one ZipFile shared by the worker threads

    def read(name):
        with lock:
            try:
                return z.read(name)
            except (zipfile.BadZipFile, EOFError, ValueError) as e:
                raise OSError(f"corrupt zip entry ({e})") from None

    def prb(name):
        try:
            return probe(read(name))
        except OSError:
            return None

    src = Source("zip", str(path), [], 0, closers=[z.close])
    entries = []
    json_labels = None
    for info in sorted(z.infolist(), key=lambda i: i.filename):
        name = info.filename
        if info.is_dir():
            continue
        if _is_unsafe_member(name):
            src.skipped.append({"file": name, "reason": "unsafe path in zip (escapes the archive root); not read"})
            continue
        norm = posixpath.normpath(name.replace("\\", "/"))
        if norm == "dataset.json":
            if labels_from in ("auto", "json"):
                json_labels = _parse_labels_json(read(name).decode("utf-8", "replace"), f"{path}:dataset.json")
            continue
        if not is_image_name(name):
            src.skipped.append({"file": name, "reason": "not an image file (unsupported extension)"})
            continue
        entries.append((norm, (lambda n=name: read(n)), (lambda n=name: prb(n))))
    return _finish_file_source(src, entries, labels_from, json_labels, f"{path}:dataset.json", str(path))


# ------------------------------------------------------------------------------------ array sources


def _array_source(kind, path, images, labels, names=None, notes=None, label_from=True) -> Source:
    """images uint8 [N,H,W] or [N,H,W,C]; labels int [N] or None."""
    n = images.shape[0]
    channels = 1 if images.ndim == 3 else images.shape[3]
    src = Source(kind, str(path), [], n, channels=channels, size=(images.shape[2], images.shape[1]), notes=notes or [])
    if labels is not None and label_from:
        labels = np.asarray(labels).astype(np.int64)
        src.label_type = "class"
        src.label_dim = len(names) if names else int(labels.max()) + 1
        src.label_names = list(names) if names else None
    else:
        labels = None
    width = len(str(max(n - 1, 0)))
    src.items = [
        Item(f"{kind}[{i:0{width}d}]", int(labels[i]) if labels is not None else None, (lambda i=i: images[i]))
        for i in range(n)
    ]
    return src


def _load_cifar_pickle(data: bytes, where: str) -> dict:
    try:
        obj = safe_load(data)
    except UnsafePickleError as e:
        raise UserError(f"{where}: {e}; this is not a genuine CIFAR batch") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure means a damaged batch
        raise UserError(f"{where} is not a readable CIFAR batch ({type(e).__name__}: {e}); re-download it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a CIFAR batch (expected a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_from_blobs(path, blobs: dict[str, bytes], labels_from: str) -> Source:
    """blobs: basename -> bytes for the batch/meta files found."""
    if "data_batch_1" in blobs:
        batches, label_key, meta_name, names_key = [f"data_batch_{i}" for i in range(1, 6)], "labels", "batches.meta", "label_names"
    elif "train" in blobs:
        batches, label_key, meta_name, names_key = ["train"], "fine_labels", "meta", "fine_label_names"
    else:
        raise UserError(f"{path} holds no CIFAR training batches (data_batch_1..5 or train); use cifar-10-python.tar.gz")
    images, labels = [], []
    for b in batches:
        if b not in blobs:
            raise UserError(f"{path} lacks the CIFAR batch {b}; the archive is incomplete, re-download it")
        d = _load_cifar_pickle(blobs[b], f"{path}:{b}")
        data, lab = d.get("data"), d.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"{path}:{b}: 'data' is not a uint8 [N, 3072] array; not a CIFAR batch")
        lab = np.asarray(lab)
        if lab.shape != (data.shape[0],) or lab.dtype.kind not in "iu":
            raise UserError(f"{path}:{b}: '{label_key}' does not match the images; not a CIFAR batch")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    names = None
    if meta_name in blobs:
        meta = _load_cifar_pickle(blobs[meta_name], f"{path}:{meta_name}")
        raw = meta.get(names_key)
        if isinstance(raw, list):
            names = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in raw]
    lab = np.concatenate(labels)
    if names is not None and lab.max() >= len(names):
        names = None
    return _array_source("cifar", path, np.concatenate(images), lab, names, label_from=labels_from != "none")


def open_cifar_tar(path: Path, labels_from: str) -> Source:
    wanted = {f"data_batch_{i}" for i in range(1, 6)} | {"batches.meta", "train", "meta"}
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = posixpath.basename(m.name)
                if m.isfile() and base in wanted:
                    f = tar.extractfile(m)  # read into memory only; nothing is extracted to disk
                    blobs[base] = f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable tar archive ({e}); re-download cifar-10-python.tar.gz") from None
    return _cifar_from_blobs(path, blobs, labels_from)


def open_cifar_folder(path: Path, labels_from: str) -> Source:
    blobs = {p.name: read_file_bytes(str(p)) for p in path.iterdir() if p.is_file()}
    return _cifar_from_blobs(path, blobs, labels_from)


def _read_maybe_gz(path: Path) -> bytes:
    data = read_file_bytes(str(path))
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UserError(f"{path} is a damaged gzip file ({e}); re-download it") from None
    return data


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (MNIST's format): magic 0,0,type,ndim; big-endian int32 dims; data."""
    data = _read_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path} is not an idx file (bad magic number)")
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        raise UserError(f"{path}: unknown idx element type 0x{data[2]:02x}")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise UserError(f"{path} is truncated (header); re-download it")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dt = np.dtype(types[data[2]])
    need = int(np.prod(dims)) * dt.itemsize
    if len(data) - head < need:
        raise UserError(f"{path} is truncated ({len(data) - head} of {need} data bytes); re-download it")
    return np.frombuffer(data, dtype=dt, count=int(np.prod(dims)), offset=head).reshape(dims)


def open_mnist(images_path: Path, labels_from: str) -> Source:
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"{images_path} does not hold uint8 images [N, H, W]")
    labels = None
    if labels_from != "none":
        cand = [images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))]
        cand += [c.with_name(c.name[:-3]) if c.name.endswith(".gz") else c.with_name(c.name + ".gz") for c in list(cand)]
        found = [c for c in cand if c != images_path and c.is_file()]
        if found:
            labels = read_idx(found[0])
            if labels.shape != (images.shape[0],):
                raise UserError(f"{found[0]} has {labels.shape[0] if labels.ndim else 0} labels for {images.shape[0]} images; use the matching file")
        elif labels_from in ("json", "folders"):
            raise UserError(f"no MNIST labels file beside {images_path} (expected {cand[0].name})")
    notes = []
    if images.shape[1:] == (28, 28):
        # NVIDIA pads MNIST to 32x32 so the resolution is a power of two.
        images = np.pad(images, [(0, 0), (2, 2), (2, 2)])
        notes.append("MNIST 28x28 zero-padded to 32x32 (as NVIDIA)")
    names = [str(i) for i in range(10)] if labels is not None and int(labels.max()) < 10 else None
    return _array_source("mnist", images_path, images, labels, names, notes)


def find_tf1_records(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.iterdir():
        m = _TF1_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group("lod")), p))
    return sorted(out)


def open_tf1(folder: Path, labels_from: str) -> Source:
    records = find_tf1_records(folder)
    lod, rec = records[-1]  # the highest resolution holds the full-size images
    src = Source("tf1-tfrecords", str(folder), [], None)
    labels = None
    label_files = sorted(folder.glob("*.labels"))
    if label_files and labels_from != "none":
        try:
            labels = np.load(label_files[0], allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UserError(f"{label_files[0]} is not a numpy label array ({e}); fix or remove it") from None
        if labels.ndim == 2 and labels.size and np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(1) == 1):
            src.label_type, src.label_dim = "class", labels.shape[1]  # NVIDIA stores one-hot rows
            labels = labels.argmax(1)
        elif labels.ndim == 1 and labels.dtype.kind in "iu":
            src.label_type, src.label_dim = "class", int(labels.max()) + 1
        elif labels.ndim == 2:
            src.label_type, src.label_dim = "vector", labels.shape[1]
        else:
            raise UserError(f"{label_files[0]}: labels must be [N] classes or [N, D] vectors")
    import tensorflow as tf

    try:  # the first record tells channels and size, so nothing needs guessing
        first = next(iter(tf.data.TFRecordDataset(str(rec)).take(1).as_numpy_iterator()), None)
        shape = list(tf.train.Example.FromString(first).features.feature["shape"].int64_list.value) if first else []
    except (tf.errors.OpError, ValueError, TypeError) as e:
        raise UserError(f"{rec} is not a readable TF1 tfrecords file ({type(e).__name__}); re-create it") from None
    if len(shape) == 3:
        src.channels, src.size = int(shape[0]), (int(shape[2]), int(shape[1]))
    src.items = _tf1_items(rec, labels, src)
    src.count = len(labels) if labels is not None else None
    return src


def _tf1_items(rec: Path, labels, src: Source):
    import tensorflow as tf

    def gen():
        i = -1
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(str(rec)).as_numpy_iterator()):
                name = f"{rec.name}[{i}]"
                try:
                    ex = tf.train.Example.FromString(raw)
                    shape = list(ex.features.feature["shape"].int64_list.value)
                    data = ex.features.feature["data"].bytes_list.value[0]
                    c, h, w = shape
                    arr = np.frombuffer(data, np.uint8).reshape(c, h, w).transpose(1, 2, 0)
                except Exception as e:  # noqa: BLE001 - one malformed record is skipped, not fatal
                    src.skipped.append({"file": name, "reason": f"malformed TF1 record ({type(e).__name__})"})
                    continue
                label = None
                if labels is not None:
                    if i >= len(labels):
                        src.skipped.append({"file": name, "reason": "no label (labels file is shorter)"})
                        continue
                    label = int(labels[i]) if src.label_type == "class" else [float(x) for x in labels[i]]
                yield Item(name, label, (lambda a=arr: a))
        except tf.errors.DataLossError as e:
            src.skipped.append({"file": rec.name, "reason": f"corrupt or truncated after record {i + 1} ({e.message.splitlines()[0]})"})

    return gen()


# ----------------------------------------------------------------------------------------- dispatch


def open_source(source: str, *, labels_from: str = "auto", exclude: list[Path] = (), builtin_count=None,
                builtin_resolution=None, seed: int = 0) -> Source:
    """Recognise SOURCE's kind and open it; a UserError says what was expected."""
    if labels_from not in LABELS_FROM:
        raise UserError(f"--labels-from must be one of {', '.join(LABELS_FROM)}")
    if source.startswith("builtin:"):
        from sg2ada.data.builtin import open_builtin

        return open_builtin(source[len("builtin:") :], count=builtin_count, resolution=builtin_resolution,
                            seed=seed, labels=labels_from != "none")
    p = Path(source)
    if not p.exists():
        raise UserError(f"--source {source} does not exist; give an image folder, a zip, a TF1 tfrecords folder, "
                        "cifar-10-python.tar.gz, an MNIST idx file or builtin:shapes")
    if p.is_dir():
        if find_tf1_records(p):
            return open_tf1(p, labels_from)
        if (p / "data_batch_1").is_file() or ((p / "train").is_file() and (p / "meta").is_file()):
            return open_cifar_folder(p, labels_from)
        for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"):
            if (p / name).is_file():
                return open_mnist(p / name, labels_from)
        if (p / "dataset.json").is_file():
            try:
                if json.loads((p / "dataset.json").read_text()).get("format") == "sg2ada-dataset":
                    raise UserError(f"--source {source} is already an sg2ada dataset; train on it directly")
            except (ValueError, AttributeError, OSError):
                pass
        return open_folder(p, labels_from, list(exclude))
    name = p.name.lower()
    if _TF1_RE.match(p.name):
        return open_tf1(p.parent, labels_from)
    if name.endswith(".zip") or zipfile.is_zipfile(p):
        return open_zip(p, labels_from)
    if "idx3" in name:
        return open_mnist(p, labels_from)
    if name.endswith((".tar.gz", ".tgz", ".tar")) or tarfile.is_tarfile(p):
        return open_cifar_tar(p, labels_from)
    raise UserError(f"--source {source}: unknown kind of file; give an image folder, a zip, a TF1 tfrecords folder, "
                    "cifar-10-python.tar.gz, an MNIST idx file or builtin:shapes")
