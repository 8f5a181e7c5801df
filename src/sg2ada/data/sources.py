"""Readers for every dataset source the tool accepts, behind one interface (`Source`).

A source lists `Item`s (a name for the report, a label, and a `read()` giving encoded bytes or a
uint8 array) plus the entries it already knows it must skip (non-image files, unsafe zip paths,
files above the read limit, symlink loops, unreadable folders, images without a label) and the
labels that name no image. Sources only ever read: nothing is extracted to disk and source files are
opened read-only. Kinds: builtin:NAME, image folder (recursive), image zip, NVIDIA's PyTorch layout
(folder or zip with dataset.json labels), NVIDIA's TF1 `*-rNN.tfrecords` folder, the CIFAR-10/100
python tarball (restricted unpickler) and MNIST idx files (raw or gz).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re
import stat
import tarfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sg2ada.data import builtin
from sg2ada.data.images import SkipImage, is_image_name, is_power_of_two, probe
from sg2ada.data.safe_pickle import UnsafePickleError, safe_load
from sg2ada.errors import UserError

LABELS_FROM = ("auto", "json", "folders", "none")
MAX_FILE_BYTES = 512 * 2**20  # largest image file (or zip member) read into memory; bigger ones are skipped unread
MAX_ARCHIVE_BYTES = 2 * 2**30  # largest CIFAR batch or (decompressed) MNIST idx file read into memory
_CIFAR_FILES = {f"data_batch_{i}" for i in range(1, 6)} | {"batches.meta", "train", "meta"}
# Class ids are refused as implausible when there are more than this many and fewer than one in
# SPARSE_CLASS_RATIO of them is used (see check_class_ids).
MANY_CLASSES = 1000
SPARSE_CLASS_RATIO = 10
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
    labels_without_files: list[str] = field(default_factory=list)  # names in dataset.json with no image
    symlink_loops: int = 0  # links back into a folder already walked (also listed in `skipped`)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self):
        for c in self.closers:
            c()
        self.closers.clear()


def read_file_bytes(path: str) -> bytes:
    """A whole small source file: labels, CIFAR batches, MNIST idx (image files go through read_capped)."""
    with open(path, "rb") as f:
        return f.read()


def _bytes_text(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _too_big(size: int) -> str:
    return f"{_bytes_text(size)}, above the {_bytes_text(MAX_FILE_BYTES)} read limit for one image file; not read"


def read_capped(f) -> bytes:
    """Read an open image file or zip member, never holding more than MAX_FILE_BYTES + 1 bytes
    (its declared size was checked before opening; this guards what it really holds)."""
    data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SkipImage(f"holds more than the {_bytes_text(MAX_FILE_BYTES)} read limit for one image file "
                        "(more than its size says); not read")
    return data


def _read_image_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return read_capped(f)


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
    return {posixpath.normpath(str(k).replace("\\", "/")): v for k, v in labels}


def check_class_ids(class_ids, where: str) -> int:
    """-> the number of classes, max id + 1 (NVIDIA's rule: a conditional model gets one input per
    id). Refused when there are more than MANY_CLASSES ids and fewer than one in SPARSE_CLASS_RATIO
    is used: such ids are codes or typos, not class indices (a label of 100000000 would build a
    100000001-class model), while real label sets, even ImageNet-21k or a subset of ImageNet, are
    either small or mostly used."""
    ids = {int(v) for v in (np.unique(class_ids) if isinstance(class_ids, np.ndarray) else class_ids)}
    top = max(ids, default=-1)
    if top < 0:
        return 0
    dim, used = top + 1, sum(v >= 0 for v in ids)
    if dim > MANY_CLASSES and used * SPARSE_CLASS_RATIO < dim:
        raise UserError(f"{where}: class labels go up to {dim - 1} but only {used} distinct classes are used, which would "
                        f"build a {dim}-class model; renumber the classes 0..{used - 1} or pass --labels-from none")
    return dim


def _label_kind(values: Iterable[object], where: str) -> tuple[str | None, int]:
    """Class labels are ints (dim = max+1, NVIDIA's rule); vectors are equal-length number lists."""
    values = [v for v in values if v is not None]
    if not values:
        return None, 0
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "class", check_class_ids(values, where)
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
    if json_labels is not None and labels_from in ("auto", "json"):
        src.labels_without_files = sorted(set(json_labels) - {n for n, _, _ in entries})
    return src


def _walk_error(src: Source, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        src.symlink_loops += 1
        return "symlink loop (the link leads back to itself); not followed"
    if isinstance(e, FileNotFoundError):
        return "broken symlink (its target does not exist)"
    return f"unreadable ({e.strerror or e})"


def open_folder(root: Path, labels_from: str, exclude: list[Path]) -> Source:
    """Every image below ROOT, symlinked folders included; a link back into a folder already
    walked (a loop) and a link that cannot be resolved are reported, never followed."""
    root = root.resolve()
    excl = [p.resolve() for p in exclude]
    src = Source("folder", str(root), [], 0)
    entries = []
    json_text = None
    seen = {_inode(root): "."}  # every folder walked, by identity, so a symlink loop is walked once
    def unreadable(e: OSError):
        rel = Path(e.filename).relative_to(root).as_posix() if e.filename else str(root)
        src.skipped.append({"file": rel, "reason": f"unreadable folder ({e.strerror or e}); not read"})

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            full = here / d
            rel = full.relative_to(root).as_posix()
            # Never read our own output (or its temp dir) when DEST sits inside SOURCE.
            if any(full == e or full.name.startswith(f".{e.name}.") for e in excl):
                continue
            try:
                key = _inode(full)
            except OSError as e:
                src.skipped.append({"file": rel, "reason": _walk_error(src, e)})
                continue
            if key in seen:
                first = seen[key]
                if first == "." or rel.startswith(first + "/"):
                    why = f"symlink loop (leads back to {first}); not followed"
                    src.symlink_loops += 1
                else:
                    why = f"the same folder as {first} (a symlink); read once, there"
                src.skipped.append({"file": rel, "reason": why})
                continue
            seen[key] = rel
            keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            full = here / fn
            rel = full.relative_to(root).as_posix()
            if rel == "dataset.json":
                json_text = full
                continue
            try:
                st = full.stat()
            except OSError as e:
                src.skipped.append({"file": rel, "reason": _walk_error(src, e)})
                continue
            if not stat.S_ISREG(st.st_mode):
                src.skipped.append({"file": rel, "reason": "not a regular file; not read"})
                continue
            if not is_image_name(fn):
                src.skipped.append({"file": rel, "reason": "not an image file (unsupported extension)"})
                continue
            if st.st_size > MAX_FILE_BYTES:
                src.skipped.append({"file": rel, "reason": _too_big(st.st_size)})
                continue
            p = str(full)
            entries.append((rel, (lambda p=p: _read_image_file(p)), (lambda p=p: probe(p))))
    entries.sort(key=lambda e: e[0])
    json_labels = None
    if json_text is not None and labels_from in ("auto", "json"):
        try:
            json_labels = _parse_labels_json(read_file_bytes(str(json_text)).decode("utf-8", "replace"), str(json_text))
        except OSError as e:
            raise UserError(f"cannot read {json_text} ({e.strerror or e}); fix its permissions") from None
    return _finish_file_source(src, entries, labels_from, json_labels, str(root / "dataset.json"), str(root))


def _inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def open_zip(path: Path, labels_from: str) -> Source:
    try:
        z = zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} is not a readable zip archive ({e}); check the file") from None
    lock = threading.Lock()  # one ZipFile shared by the worker threads

    def read(info):
        with lock:
            try:
                with z.open(info) as f:
                    return read_capped(f)
            except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as e:
                raise OSError(f"corrupt zip entry ({e})") from None

    def prb(info):
        try:
            return probe(read(info))
        except (OSError, SkipImage):
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
                try:
                    text = read(info).decode("utf-8", "replace")
                except (OSError, SkipImage) as e:
                    raise UserError(f"{path}:dataset.json cannot be read ({e}); fix or remove it") from None
                json_labels = _parse_labels_json(text, f"{path}:dataset.json")
            continue
        if not is_image_name(name):
            src.skipped.append({"file": name, "reason": "not an image file (unsupported extension)"})
            continue
        if info.file_size > MAX_FILE_BYTES:
            src.skipped.append({"file": name, "reason": _too_big(info.file_size)})
            continue
        entries.append((norm, (lambda i=info: read(i)), (lambda i=info: prb(i))))
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
        src.label_dim = len(names) if names else check_class_ids(labels, str(path))
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


def _check_archive_size(where: str, size: int) -> None:
    if size > MAX_ARCHIVE_BYTES:
        raise UserError(f"{where} is {_bytes_text(size)}, more than the {_bytes_text(MAX_ARCHIVE_BYTES)} any CIFAR "
                        "or MNIST file holds; not read, check the source")


def open_cifar_tar(path: Path, labels_from: str) -> Source:
    blobs = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = posixpath.basename(m.name)
                if m.isfile() and base in _CIFAR_FILES:
                    _check_archive_size(f"{path}:{m.name}", m.size)
                    f = tar.extractfile(m)  # read into memory only; nothing is extracted to disk
                    blobs[base] = f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable tar archive ({e}); re-download cifar-10-python.tar.gz") from None
    return _cifar_from_blobs(path, blobs, labels_from)


def open_cifar_folder(path: Path, labels_from: str) -> Source:
    blobs = {}
    for name in sorted(_CIFAR_FILES):
        p = path / name
        if p.is_file():
            _check_archive_size(str(p), p.stat().st_size)
            blobs[name] = read_file_bytes(str(p))
    return _cifar_from_blobs(path, blobs, labels_from)


def _read_maybe_gz(path: Path) -> bytes:
    _check_archive_size(str(path), path.stat().st_size)
    data = read_file_bytes(str(path))
    if data[:2] == b"\x1f\x8b":
        gz = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = gz.decompress(data, MAX_ARCHIVE_BYTES + 1)  # a gzip bomb stops here
        except zlib.error as e:
            raise UserError(f"{path} is a damaged gzip file ({e}); re-download it") from None
        if len(data) > MAX_ARCHIVE_BYTES:
            raise UserError(f"{path} decompresses to more than the {_bytes_text(MAX_ARCHIVE_BYTES)} any MNIST file "
                            "holds (a gzip bomb?); not read, check the source")
        if not gz.eof:
            raise UserError(f"{path} is a damaged gzip file (truncated); re-download it")
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
            src.label_type, src.label_dim = "class", check_class_ids(labels, str(label_files[0]))
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


def open_builtin(name: str, *, count=None, resolution=None, seed: int = 0, labels: bool = True) -> Source:
    if name not in builtin.BUILTINS:
        raise UserError(f"unknown built-in dataset builtin:{name}; available: "
                        + ", ".join(f"builtin:{b}" for b in builtin.BUILTINS))
    count = builtin.DEFAULT_COUNT if count is None else int(count)
    resolution = builtin.DEFAULT_RESOLUTION if resolution is None else int(resolution)
    if count < 1:
        raise UserError("--max-images must be at least 1 for a built-in dataset")
    if resolution < 4 or not is_power_of_two(resolution):
        raise UserError(f"--resolution {resolution}: built-in datasets need a power of two >= 4")
    images, cls = builtin.generate_shapes(count, resolution, seed)
    return _array_source("builtin", f"builtin:{name}", images, cls if labels else None, builtin.SHAPE_NAMES)


# ----------------------------------------------------------------------------------------- dispatch


def open_source(source: str, *, labels_from: str = "auto", exclude: list[Path] = (), builtin_count=None,
                builtin_resolution=None, seed: int = 0) -> Source:
    """Recognise SOURCE's kind and open it; a UserError says what was expected."""
    if labels_from not in LABELS_FROM:
        raise UserError(f"--labels-from must be one of {', '.join(LABELS_FROM)}")
    if source.startswith("builtin:"):
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
