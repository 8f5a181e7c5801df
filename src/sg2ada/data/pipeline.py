"""The tf.data input pipeline: `open_dataset`, the training stream, `make_dataset`, label sampler.

Reads the dataset tool's output (sharded TFRecords + dataset.json; from a bucket URL through a local
copy made once per process, see `sg2ada.data.remote`) and, for quick starts, anything
the tool can read (an image folder or zip, NVIDIA's layouts, builtin:shapes, ...) decoded straight
into memory. Semantics follow NVIDIA's training set:
- `subset=N`: a seeded choice of N images (NVIDIA's max_size/random_seed: shuffle the index list
  with numpy's RandomState(seed), keep the first N, sorted), fixed for the whole run.
- `mirror=True`: the dataset doubles; every image appears once as stored and once x-flipped.
- labels: class ints become one-hot float32 [label_dim]; vectors stay float32 [label_dim];
  unlabelled datasets give float32 [0] (so `c` is [B, 0], as NVIDIA).
- images: uint8 -> float32 NHWC, x / 127.5 - 1.
Training reads `training_iterator`: a stream that is a pure function of (seed, position), split over
tf.distribute replicas and accumulation rounds without changing what any global batch holds (the
selection in memory when it fits, else record by record from the shards). `make_dataset` serves
metrics, grids and previews: a seeded buffer shuffle (same seed -> same batches, for a given
TensorFlow global seed), the selection cached in memory when it fits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from sg2ada.data.remote import fetch_dataset, is_url
from sg2ada.errors import UserError

DEFAULT_SHUFFLE_MB = 1024  # shuffle buffer budget when the dataset is larger than this
IN_MEMORY_MAX_BYTES = 4 * 2**30  # quick-start sources decoded into memory up to this size


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer and the metrics need to know about a dataset, without reading it."""

    path: str
    name: str
    kind: str  # "tfrecords" (the tool's output) or "memory" (decoded on open)
    resolution: int
    channels: int
    count: int
    label_dim: int
    label_type: str | None = None  # "class" | "vector" | None
    label_names: tuple | None = None
    image_encoding: str | None = None  # "png" | "raw" for tfrecords
    shards: tuple = ()  # absolute local shard paths
    local_dir: str = dataclasses.field(default="", compare=False)  # the files' folder (a copy for a URL)
    meta: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def has_labels(self) -> bool:
        return self.label_dim > 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.resolution, self.resolution, self.channels)

    @property
    def image_nbytes(self) -> int:
        return self.resolution * self.resolution * self.channels

    def to_dict(self) -> dict:
        """JSON-able summary (for snapshot.json's "dataset" and training options)."""
        return {
            "path": self.path, "name": self.name, "kind": self.kind, "resolution": self.resolution,
            "channels": self.channels, "count": self.count, "label_dim": self.label_dim,
            "label_type": self.label_type, "label_names": list(self.label_names) if self.label_names else None,
        }


# ------------------------------------------------------------------------------------ opening


_MEMORY_CACHE: dict = {}


def _memory_arrays(path: str):
    """Decode a non-tool source once per process (open_dataset then make_dataset reuse it)."""
    key = path
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        pass
    if key not in _MEMORY_CACHE:
        from sg2ada.data.tool import load_arrays

        images, labels, src, spec, skipped = load_arrays(path, max_bytes=IN_MEMORY_MAX_BYTES)
        if skipped:
            import sys

            first = skipped[0]
            print(f"warning: {len(skipped)} file(s) in {path} skipped (first: {first['file']}: {first['reason']}); "
                  f"run `sg2ada dataset --source {path} --dest DIR` for a full report", file=sys.stderr)
        _MEMORY_CACHE.clear()  # hold one source at a time: these can be large
        _MEMORY_CACHE[key] = (images, labels, src.label_type, src.label_dim, src.label_names, skipped)
    return _MEMORY_CACHE[key]


def open_dataset(path) -> DatasetInfo:
    """Describe the dataset at PATH (the tool's output dir, its dataset.json, or a raw source)."""
    if isinstance(path, DatasetInfo):
        return path
    path = str(path)
    if is_url(path):
        return _open_remote(path)
    p = Path(path)
    if p.name == "dataset.json" and p.is_file():
        p = p.parent
    meta_path = p / "dataset.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, OSError) as e:
            raise UserError(f"{meta_path} is not readable JSON ({e}); rebuild the dataset with sg2ada dataset") from None
    if meta is not None and meta.get("format") == "sg2ada-dataset":
        shards = tuple(str(p / s["file"]) for s in meta.get("shards", []))
        missing = [s for s in shards if not os.path.isfile(s)]
        if missing:
            raise UserError(f"dataset {p} is incomplete: {missing[0]} is missing; rebuild it with sg2ada dataset")
        return _info_from_meta(str(p.resolve()), p.resolve().name, meta, shards, meta_path)
    if not path.startswith("builtin:") and not p.exists():
        raise UserError(f"dataset {path} does not exist; build one with: sg2ada dataset --source SRC --dest {path}")
    images, labels, label_type, label_dim, label_names, _ = _memory_arrays(path)
    if images.shape[1] != images.shape[2]:
        raise UserError(f"images in {path} are not square; convert with sg2ada dataset --transform center-crop")
    name = path if path.startswith("builtin:") else p.resolve().name
    name = name.replace(":", "-")
    for ext in (".zip", ".tar.gz", ".tgz", ".gz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return DatasetInfo(
        path=path if path.startswith("builtin:") else str(p.resolve()), name=name, kind="memory",
        resolution=int(images.shape[1]), channels=int(images.shape[3]), count=int(images.shape[0]),
        label_dim=int(label_dim if label_type else 0), label_type=label_type,
        label_names=tuple(label_names) if label_names else None,
    )


def _info_from_meta(path: str, name: str, meta: dict, shards: tuple, where) -> DatasetInfo:
    if meta.get("version", 1) > 1:
        raise UserError(f"{where} is a newer dataset format (version {meta['version']}); update sg2ada")
    try:
        return DatasetInfo(
            path=path, name=name, kind="tfrecords", resolution=int(meta["resolution"]),
            channels=int(meta["channels"]), count=int(meta["count"]), label_dim=int(meta.get("label_dim") or 0),
            label_type=meta.get("label_type"),
            label_names=tuple(meta["label_names"]) if meta.get("label_names") else None,
            image_encoding=meta.get("image_encoding", "png"), shards=shards, local_dir=path, meta=meta,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where} lacks or mangles field {e}; rebuild the dataset with sg2ada dataset") from None


def _open_remote(url: str) -> DatasetInfo:
    """A tool-made dataset in a bucket (any fsspec URL), read from its local copy (`sg2ada.data.remote`)."""
    import posixpath

    base, local = fetch_dataset(url)
    return dataclasses.replace(open_dataset(local), path=base, name=posixpath.basename(base))


def _raw_labels(info: DatasetInfo) -> np.ndarray | None:
    """Every image's label in index order: int64 [N] (class), float32 [N, D] (vector) or None."""
    if not info.has_labels:
        return None
    if info.kind == "tfrecords":
        fname = info.meta.get("labels_file")
        if not fname:
            return None
        where = f"{info.path}/{fname}"
        try:
            return np.load(Path(info.local_dir) / fname, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any failure here means a damaged or missing file
            raise UserError(f"{where} is unreadable ({type(e).__name__}); rebuild the dataset") from None
    _, labels, label_type, *_ = _memory_arrays(info.path)
    return np.asarray(labels, np.int64) if label_type == "class" else np.asarray(labels, np.float32)


def raw_labels(info) -> np.ndarray | None:
    """Public name for every image's label in index order (int64 [N] classes or float32 [N, D])."""
    return _raw_labels(open_dataset(info))


def select_subset(count: int, subset, seed: int, val: int = 0) -> np.ndarray:
    """Indices training uses (sorted int64): NVIDIA's rule for `subset` (all indices when None/large),
    without the `val` images held out for validation (`select_val`)."""
    return _select(count, subset, seed, val)[0]


def select_val(count: int, subset, seed: int, val: int) -> np.ndarray:
    """The `val` images (sorted indices) held out of training: a seeded choice among the subset's, whose
    D outputs against the training images' show overfitting (the ADA paper's validation set, Fig. 1)."""
    return _select(count, subset, seed, val)[1]


def _select(count: int, subset, seed: int, val: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(count, dtype=np.int64)
    if subset is not None and subset < count:
        if subset < 1:
            raise UserError(f"--subset must be at least 1, not {subset}")
        np.random.RandomState(seed % (1 << 32)).shuffle(idx)
        idx = np.sort(idx[:subset])
    if not val:
        return idx, idx[:0]
    if not 0 < val < len(idx):
        raise UserError(f"--val {val} must hold out fewer than the {len(idx)} images training would use")
    held = np.sort(np.random.RandomState((seed + 1) % (1 << 32)).choice(idx, val, replace=False))
    return np.setdiff1d(idx, held), held


def _cache_budget() -> int:
    env = os.environ.get("SG2ADA_DATA_CACHE_MB")
    if env:
        return int(float(env) * 2**20)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return int(min(16 * 2**30, total // 4))


# --------------------------------------------------------------------------------- the pipeline


def _element_dataset(info: DatasetInfo, keep: np.ndarray | None, shuffle_files: bool, seed: int):
    """(uint8 image [H,W,C], float32 label [max(D,1)], int64 index) per selected image, decoded.

    Unlabelled datasets carry a 1-wide placeholder label that `make_dataset` slices to [B, 0] at
    the end: TF 2.21's unbatch crashes (segfault) on zero-size components, which mirror uses."""
    import tensorflow as tf

    h = w = info.resolution
    c, d = info.channels, info.label_dim

    keep_t = tf.constant(keep) if keep is not None else None
    autotune = tf.data.AUTOTUNE

    if info.kind == "memory":
        images, labels, label_type, *_ = _memory_arrays(info.path)
        if label_type == "class":
            lab = np.eye(d, dtype=np.float32)[np.asarray(labels, np.int64)]
        elif label_type == "vector":
            lab = np.asarray(labels, np.float32).reshape(len(labels), d)
        else:
            lab = np.zeros((len(images), 1), np.float32)  # placeholder, see _element_dataset
        sel = np.arange(len(images))
        if keep is not None:
            sel = sel[keep]
        # Only the selection becomes a tensor, so a subset of a big folder stays small.
        return tf.data.Dataset.from_tensor_slices((images[sel], lab[sel], sel.astype(np.int64)))

    files = tf.data.Dataset.from_tensor_slices(list(info.shards))
    if shuffle_files and len(info.shards) > 1:
        files = files.shuffle(len(info.shards), seed=seed, reshuffle_each_iteration=True)
    read = functools.partial(tf.data.TFRecordDataset, buffer_size=1 << 20)
    if len(info.shards) > 1:
        ds = files.interleave(read, cycle_length=min(8, len(info.shards)), num_parallel_calls=autotune,
                              deterministic=True)
    else:
        ds = files.flat_map(read)

    features = {"image": tf.io.FixedLenFeature([], tf.string), "index": tf.io.FixedLenFeature([], tf.int64)}
    if info.label_type == "class":
        features["label"] = tf.io.FixedLenFeature([1], tf.int64)
    elif info.label_type == "vector":
        features["label"] = tf.io.FixedLenFeature([d], tf.float32)

    ds = ds.map(lambda r: tf.io.parse_single_example(r, features), num_parallel_calls=autotune, deterministic=True)
    if keep is not None:
        ds = ds.filter(lambda ex: tf.gather(keep_t, ex["index"]))

    def decode(ex):
        if info.image_encoding == "raw":
            img = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [h, w, c])
        else:
            img = tf.io.decode_png(ex["image"], channels=c)
            img = tf.ensure_shape(img, [h, w, c])
        if info.label_type == "class":
            lab = tf.one_hot(ex["label"][0], d, dtype=tf.float32)
        elif info.label_type == "vector":
            lab = ex["label"]
        else:
            lab = tf.zeros([1], tf.float32)  # placeholder, see above
        return img, lab, ex["index"]

    return ds.map(decode, num_parallel_calls=autotune, deterministic=True)


def _add_flag(value: bool):
    def add(img, lab, idx):
        return img, lab, idx, value

    return add


def make_dataset(path, batch_size: int, *, mirror: bool = False, subset=None, seed: int = 0,
                 shuffle: bool = True, cache=None, repeat: bool = True, drop_remainder=None,
                 subset_seed=None, shuffle_mb=None, as_uint8: bool = False, with_index: bool = False,
                 prefetch: bool = True, val: int = 0, held_out: bool = False):
    """tf.data.Dataset of `(images [B,H,W,C] float32 in [-1,1], labels [B, label_dim] float32)`.

    For metrics, image grids and previews; training reads `training_iterator`'s stream.

    batch_size: images per element.
    mirror:     also yield every image x-flipped (dataset size doubles), as NVIDIA's --mirror.
    subset:     keep a seeded choice of this many images (seeded by `subset_seed`, default `seed`).
    val:        without the `val` images held out of training (`select_val`); `held_out`: only those.
    shuffle:    seeded buffer shuffle, reshuffled each epoch; files are shuffled too when not cached.
    cache:      None = in memory if the decoded selection fits the budget (a quarter of RAM, at
                most 16 GiB; env SG2ADA_DATA_CACHE_MB overrides); True/False force; a string is a
                cache file path (tf.data file cache).
    repeat:     infinite; drop_remainder defaults to `repeat` (finite passes keep the last batch).
    as_uint8:   keep images uint8 [0, 255] (for feature networks) instead of float.
    with_index: append the images' dataset indices [B] int64 (mirrored copies share the index).
    """
    import tensorflow as tf

    info = open_dataset(path)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, not {batch_size}")
    keep_idx = (select_val if held_out else select_subset)(info.count, subset,
                                                          seed if subset_seed is None else subset_seed, val)
    keep = None
    if len(keep_idx) < info.count:
        keep = np.zeros(info.count, bool)
        keep[keep_idx] = True
    n_sel = len(keep_idx)
    sel_bytes = n_sel * info.image_nbytes
    if cache is None:
        cache = info.kind == "tfrecords" and sel_bytes <= _cache_budget()
    elif info.kind == "memory":
        cache = False  # already in memory

    ds = _element_dataset(info, keep, shuffle_files=shuffle and not cache, seed=seed)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")

    in_memory = (bool(cache) and not isinstance(cache, str)) or info.kind == "memory"
    if mirror:
        # Each image once as stored and once with a flip flag; the flip itself happens after the
        # shuffle, per image (a per-batch tf.where is ~10x slower on CPU).
        if cache or info.kind == "memory":
            # Two passes over the cache (no second decode): in memory, elements share the cached
            # image buffers, so even a full shuffle buffer costs pointers, not copies (map+unbatch
            # would copy every image).
            ds = ds.map(_add_flag(False)).concatenate(ds.map(_add_flag(True)))
        else:
            # Streaming: decode once, emit both versions.
            def both(img, lab, idx):
                return (tf.stack([img, img]), tf.stack([lab, lab]), tf.stack([idx, idx]),
                        tf.constant([False, True]))

            ds = ds.map(both, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

    if shuffle:
        n_items = n_sel * (2 if mirror else 1)
        if in_memory and shuffle_mb is None:
            buf = n_items  # a perfect shuffle: the buffer holds references to cached images
        else:
            budget = (DEFAULT_SHUFFLE_MB if shuffle_mb is None else shuffle_mb) * 2**20
            buf = int(max(1, min(n_items, budget // max(1, info.image_nbytes))))
        ds = ds.shuffle(buf, seed=seed, reshuffle_each_iteration=True)
    if mirror:
        def flip(img, lab, idx, flag):
            return tf.cond(flag, lambda: tf.reverse(img, axis=[1]), lambda: img), lab, idx

        ds = ds.map(flip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=repeat if drop_remainder is None else drop_remainder,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def finish(img, lab, idx):
        img = img if as_uint8 else tf.cast(img, tf.float32) * (1 / 127.5) - 1
        lab = lab[:, : info.label_dim]
        return (img, lab, idx) if with_index else (img, lab)

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    opts = tf.data.Options()
    opts.deterministic = True
    return ds.with_options(opts)


# ------------------------------------------------------------------------------ training stream
#
# The training input is a pure function of (seed, stream position): position q = iteration * B +
# position in the global batch. Items are the selected images (then, with mirror, the same images
# x-flipped: item k >= n is image k - n flipped); epoch e = q // M covers all M items in the order
# of a stateless random-access permutation seeded by (seed, e). Each input pipeline computes only
# the positions of the replicas it feeds, so the global batches, and every image's place in them,
# are the same for any number of hosts, devices and accumulation rounds.
#
# Placement: within a round, replica rid holds positions rid * batch_gpu + [0, batch_gpu), and
# round r of an iteration starts at r * batch_gpu * R (R replicas in sync), as the trainer numbers
# its samples. `distribute_datasets_from_function` pulls a worker's dataset once per local replica,
# in local replica order (MirroredStrategy on two devices: elements 0, 2, ... go to replica 0,
# elements 1, 3, ... to replica 1; tests/data/test_data_stream.py), and the L local replicas of
# input pipeline w are global replicas w * L ... w * L + L - 1 (MultiWorkerMirroredStrategy numbers
# both by the worker's id in the cluster); the dataset's element e belongs to local replica e % L.

_STORE_CACHE: dict = {}
_SHUFFLE_KEY = 0x5EED_DA7A  # first word of the permutation's seed, the run seed is the second


def _label_rows(info: DatasetInfo, raw, n: int) -> np.ndarray:
    """float32 [n, label_dim] training labels from raw labels (class ints or vectors)."""
    if not info.has_labels:
        return np.zeros((n, 0), np.float32)
    if raw is None:
        raise UserError(f"dataset {info.path} has labels but no labels file; rebuild it with sg2ada dataset")
    if info.label_type == "class":
        return np.eye(info.label_dim, dtype=np.float32)[np.asarray(raw, np.int64)]
    return np.asarray(raw, np.float32).reshape(n, info.label_dim)


def _decoded_selection(info: DatasetInfo, keep: np.ndarray):
    """Host tensors uint8 [n, H, W, C] and float32 [n, D]: the selected images and their labels in
    index order, decoded once per process and kept while the same selection is asked for."""
    import tensorflow as tf

    key = (info.path, info.count, hash(keep.tobytes()))
    if key in _STORE_CACHE:
        return _STORE_CACHE[key]
    _STORE_CACHE.clear()  # one selection at a time: it can take gigabytes
    if info.kind == "memory":
        images, raw, *_ = _memory_arrays(info.path)
        whole = len(keep) == len(images)
        store = (images if whole else images[keep], _label_rows(info, None if raw is None else np.asarray(raw)[keep],
                                                                len(keep)))
    else:
        images = np.empty((len(keep), *info.image_shape), np.uint8)
        labels = np.zeros((len(keep), max(info.label_dim, 1)), np.float32)
        sel = None if len(keep) == info.count else np.zeros(info.count, bool)
        if sel is not None:
            sel[keep] = True
        try:
            for img, lab, idx in _element_dataset(info, sel, shuffle_files=False, seed=0).batch(256):
                at = np.searchsorted(keep, idx.numpy())
                images[at] = img.numpy()
                labels[at] = lab.numpy()
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise _damaged_dataset(info, e) from None
        store = (images, labels[:, : info.label_dim])
    with tf.device("/cpu:0"):  # captured by the pipeline as host tensors, never as graph constants
        _STORE_CACHE[key] = tuple(tf.constant(a) for a in store)
    return _STORE_CACHE[key]


def _damaged_dataset(info: DatasetInfo, error) -> UserError:
    """The one-line error for a dataset whose shards do not read back: names the first bad shard."""
    import tensorflow as tf

    for shard in info.shards:
        try:
            for _ in tf.data.TFRecordDataset(shard):
                pass
        except tf.errors.OpError as e:
            what = re.search(r"corrupted record at \d+|truncated record at \d+", str(e))
            return UserError(f"{shard}: {what[0] if what else 'unreadable'}: the dataset is damaged; rebuild it "
                             f"with `sg2ada dataset --source ... --dest {info.path}`")
    detail = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*", "", str(getattr(error, "message", error)))
    return UserError(f"{info.path}: an image does not decode ({detail.splitlines()[0][:160]}); rebuild the dataset "
                     "with `sg2ada dataset`")


class _RecordReader:
    """Random access to the records of a tool-made dataset by image index, for selections larger
    than the in-memory budget: a byte-offset index built once by reading the record headers (the
    tool writes images in index order, shard after shard), then one read per record."""

    def __init__(self, info: DatasetInfo, keep: np.ndarray):
        import threading

        import tensorflow as tf

        self.info = info
        with tf.device("/cpu:0"):
            self._keep_t = tf.constant(keep)
        shard_of, offset, length = [], [], []
        for s, shard in enumerate(info.shards):
            offs, lens = self._scan(shard)
            shard_of.append(np.full(len(offs), s, np.int64))
            offset.append(offs)
            length.append(lens)
        total = sum(len(o) for o in offset)
        if total != info.count:
            raise UserError(f"dataset {info.path} holds {total} records, its dataset.json says {info.count}; "
                            "rebuild it with sg2ada dataset")
        self.shard = np.concatenate(shard_of)[keep]
        self.offset = np.concatenate(offset)[keep]
        self.length = np.concatenate(length)[keep]
        self._lock = threading.Lock()
        self._files: dict = {}  # shard number -> os file descriptor

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            os.close(fd)

    @staticmethod
    def _scan(shard: str):
        import struct

        import tensorflow as tf

        offs, lens = [], []
        with tf.io.gfile.GFile(shard, "rb") as f:
            pos = 0
            while True:
                head = f.read(12)  # uint64 length, uint32 masked CRC of the length
                if len(head) < 12:
                    break
                (n,) = struct.unpack("<Q", head[:8])
                offs.append(pos + 12)
                lens.append(n)
                pos += 12 + n + 4  # data, uint32 masked CRC of the data
                f.seek(pos)
        return np.asarray(offs, np.int64), np.asarray(lens, np.int64)

    def read(self, items: np.ndarray) -> np.ndarray:
        """The serialized records of selection items (object array of bytes)."""
        out = np.empty(len(items), object)
        for j, k in enumerate(items):
            s, off, n = int(self.shard[k]), int(self.offset[k]), int(self.length[k])
            fd = self._files.get(s)
            if fd is None:
                with self._lock:
                    fd = self._files.get(s) or self._files.setdefault(s, os.open(self.info.shards[s], os.O_RDONLY))
            out[j] = os.pread(fd, n, off)
        return out

    def gather(self, items):
        """uint8 [b, H, W, C] images of selection items (int64 [b]), read and decoded in graph."""
        import tensorflow as tf

        info = self.info
        records = tf.numpy_function(self.read, [items], tf.string, stateful=False)
        ex = tf.io.parse_example(tf.reshape(records, [-1]), {"image": tf.io.FixedLenFeature([], tf.string),
                                                             "index": tf.io.FixedLenFeature([], tf.int64)})
        check = tf.debugging.assert_equal(ex["index"], tf.gather(self._keep_t, items),
                                          message=f"dataset {info.path}: records out of index order; rebuild it")
        with tf.control_dependencies([check]):
            if info.image_encoding == "raw":
                img = tf.io.decode_raw(ex["image"], tf.uint8)
            else:
                img = tf.map_fn(lambda b: tf.io.decode_png(b, channels=info.channels), ex["image"],
                                fn_output_signature=tf.uint8)
        return tf.reshape(img, [-1, *info.image_shape])


def training_dataset_fn(path, *, batch_size: int, batch_gpu: int, mirror: bool = False, subset=None,
                        seed: int = 0, skip_images: int = 0, val: int = 0):
    """The `dataset_fn(input_context)` of `training_iterator` (see there); usable directly with a
    hand-built `tf.distribute.InputContext`. Reads (or decodes) the selected images now, once."""
    import tensorflow as tf

    info = open_dataset(path)
    if batch_size < 1 or batch_gpu < 1 or batch_size % batch_gpu:
        raise UserError(f"batch size {batch_size} is not a positive multiple of the per-device batch {batch_gpu}; "
                        "pass --batch a multiple of --batch-gpu")
    if skip_images < 0:
        raise ValueError(f"skip_images must be >= 0, not {skip_images}")
    keep = select_subset(info.count, subset, seed, val)
    n = len(keep)
    items = n * (2 if mirror else 1)
    if info.kind == "memory" or n * info.image_nbytes <= _cache_budget():
        images_t, labels_t = _decoded_selection(info, keep)

        def gather(k):
            return tf.gather(images_t, k), tf.gather(labels_t, k)
    else:
        reader = _RecordReader(info, keep)
        with tf.device("/cpu:0"):
            raw = _raw_labels(info)
            labels_t = tf.constant(_label_rows(info, None if raw is None else raw[keep], n))

        def gather(k):
            return reader.gather(k), tf.gather(labels_t, k)

    def dataset_fn(ctx):
        replicas, pipelines = ctx.num_replicas_in_sync, ctx.num_input_pipelines
        if replicas % pipelines:
            raise ValueError(f"{replicas} replicas cannot be split evenly over {pipelines} input pipelines")
        if batch_size % (batch_gpu * replicas):
            raise UserError(f"batch size {batch_size} is not divisible by {batch_gpu} images x {replicas} replicas; "
                            "pass --batch a multiple of --batch-gpu times the device count")
        local = replicas // pipelines
        rounds = batch_size // (batch_gpu * replicas)
        first_replica = ctx.input_pipeline_id * local

        def element(e):
            it = e // (rounds * local)
            r = (e // local) % rounds
            rid = first_replica + e % local
            q = (skip_images + it * batch_size + r * (batch_gpu * replicas) + rid * batch_gpu
                 + tf.range(batch_gpu, dtype=tf.int64))
            epoch = q // items
            perm_seed = tf.stack([tf.fill([batch_gpu], tf.constant(_SHUFFLE_KEY, tf.int64)),
                                  tf.fill([batch_gpu], tf.constant(seed, tf.int64)), epoch], axis=1)
            item = tf.raw_ops.RandomIndexShuffle(index=q % items, seed=perm_seed,
                                                 max_index=tf.fill([batch_gpu], tf.constant(items - 1, tf.int64)))
            img, lab = gather(item % n)
            img = tf.where((item >= n)[:, None, None, None], tf.reverse(img, axis=[2]), img)
            return tf.cast(img, tf.float32) * (1 / 127.5) - 1, lab

        ds = tf.data.Dataset.counter(dtype=tf.int64).map(element, num_parallel_calls=tf.data.AUTOTUNE,
                                                           deterministic=True)
        opts = tf.data.Options()
        opts.deterministic = True
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        # The static rewrites gain nothing on counter -> map, and they copy the captured image store
        # (measured: 8 s for 2 GiB).
        opts.experimental_optimization.apply_default_optimizations = False
        return ds.prefetch(tf.data.AUTOTUNE).with_options(opts)

    return dataset_fn


def training_iterator(strategy, path, *, batch_size: int, batch_gpu: int, mirror: bool = False, subset=None,
                      seed: int = 0, skip_images: int = 0, val: int = 0):
    """Iterator over the training set for `strategy` (any tf.distribute strategy, including the
    default one): each next() gives every replica its (images float32 [batch_gpu, H, W, C] in
    [-1, 1], labels float32 [batch_gpu, label_dim]) of the current accumulation round, so one
    training iteration takes batch_size // (batch_gpu * replicas) calls.

    The global stream depends only on (seed, position): batch i holds the same images in the same
    places for any cluster shape. mirror adds x-flipped copies (NVIDIA's --mirror), subset keeps a
    seeded choice of images (`select_subset`, seeded by `seed`), val holds that many of them out
    (`select_val`), skip_images starts the stream at that position without reading what is skipped
    (resume: the images already trained on). The selection
    is held in memory when it fits `_cache_budget()` (SG2ADA_DATA_CACHE_MB); a larger tool-made
    dataset is read record by record from its shards.
    """
    fn = training_dataset_fn(path, batch_size=batch_size, batch_gpu=batch_gpu, mirror=mirror, subset=subset,
                             seed=seed, skip_images=skip_images, val=val)
    return iter(strategy.distribute_datasets_from_function(fn))


# ---------------------------------------------------------------------------- label sampling


class LabelSampler:
    """Draws fake-image labels from the training set's label distribution (NVIDIA: c of a random
    training image). Stores the distinct label rows and their cumulative counts, so memory is
    O(distinct labels), and samples statelessly so it works inside tf.function / replicas."""

    def __init__(self, rows: np.ndarray, counts: np.ndarray):
        self.label_dim = int(rows.shape[1])
        self.rows = rows.astype(np.float32)
        self.counts = counts.astype(np.int64)
        self._cum = np.cumsum(self.counts)
        self.total = int(self._cum[-1]) if len(self._cum) else 0

    @classmethod
    def of_rows(cls, labels) -> "LabelSampler":
        """The sampler of a label array [count, label_dim] (one row per image)."""
        labels = np.asarray(labels, np.float32)
        return cls(*np.unique(labels.reshape(len(labels), -1), axis=0, return_counts=True))

    @functools.cached_property
    def _tensors(self):
        import tensorflow as tf

        with tf.init_scope():  # eager constants, even when first used inside a tf.function
            return tf.constant(self.rows), tf.constant(self._cum)

    def __call__(self, batch_size, seed):
        """float32 [batch_size, label_dim]; `seed` is an int32/int64 [2] stateless seed."""
        import tensorflow as tf

        if self.label_dim == 0 or self.total == 0:
            return tf.zeros([batch_size, self.label_dim], tf.float32)
        rows, cum = self._tensors
        u = tf.random.stateless_uniform([batch_size], seed=seed, minval=0, maxval=self.total, dtype=tf.int64)
        # Row j is chosen when cum[j-1] <= u < cum[j]; a compare-and-count (not searchsorted) so
        # the sampler also compiles under XLA (jit_compile=True).
        which = tf.reduce_sum(tf.cast(u[:, None] >= cum[None, :], tf.int32), axis=1)
        return tf.gather(rows, which)

    def per_sample(self, seed, sample_index, num_samples):
        """float32 [len(sample_index), label_dim]: the labels of samples `sample_index` of a batch of
        `num_samples` (`sg2ada.ops.random.per_sample_uniform`), the same however the batch is split."""
        import tensorflow as tf

        from sg2ada.ops.random import per_sample_uniform  # here: keeps TensorFlow out of `sg2ada --help`

        n = tf.shape(sample_index)[0]
        if self.label_dim == 0 or self.total == 0:
            return tf.zeros([n, self.label_dim], tf.float32)
        rows, cum = self._tensors
        u = tf.cast(tf.floor(per_sample_uniform(seed, sample_index, num_samples) * self.total), tf.int64)
        u = tf.minimum(u, self.total - 1)  # float32 rounding of u * total can reach total
        which = tf.reduce_sum(tf.cast(u[:, None] >= cum[None, :], tf.int32), axis=1)
        return tf.gather(rows, which)

    def sample_numpy(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or np.random.default_rng()
        if self.label_dim == 0 or self.total == 0:
            return np.zeros((n, self.label_dim), np.float32)
        which = np.searchsorted(self._cum, rng.integers(0, self.total, n), side="right")
        return self.rows[which]


def label_sampler(path, *, subset=None, seed: int = 0, val: int = 0) -> LabelSampler:
    """Sampler over the labels of the images training uses (the same `subset` and `val` choice)."""
    info = open_dataset(path)
    if not info.has_labels:
        return LabelSampler(np.zeros((0, 0), np.float32), np.zeros((0,), np.int64))
    raw = _raw_labels(info)
    if raw is None:
        raise UserError(f"dataset {info.path} has labels but no labels file; rebuild it with sg2ada dataset")
    raw = raw[select_subset(info.count, subset, seed, val)]
    if info.label_type == "class":
        counts = np.bincount(raw, minlength=info.label_dim)
        present = np.nonzero(counts)[0]
        return LabelSampler(np.eye(info.label_dim, dtype=np.float32)[present], counts[present])
    return LabelSampler.of_rows(raw)
