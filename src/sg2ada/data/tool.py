"""The dataset tool: any supported source -> sharded TFRecords + `labels.npy` + `dataset.json`.

Output layout (DEST/):
    data-00000-of-0000K.tfrecords   tf.train.Example per image: `image` (PNG bytes, or raw uint8
                                    HWC bytes), `shape` int64 [H, W, C], `index` int64 (position in
                                    the dataset), `label` (int64 [1] class or float [D] vector;
                                    absent without labels)
    labels.npy                      every image's label in index order (int64 [N] or float32
                                    [N, D]), so samplers need not scan the records
    dataset.json                    written last: format, resolution, channels, count, labels,
                                    shards, source, options and the per-file report
Everything is written into a hidden temp dir beside DEST and renamed into place at the end, so an
interrupted run never leaves something that looks like a finished dataset. A bucket DEST (s3://,
gs://, az://, any fsspec URL) gets a local conversion uploaded with dataset.json last
(`sg2ada.data.remote`). Source files are only
read. Images are processed in a thread pool (decode, convert, crop/resize, encode) and written in
source order, so a conversion is deterministic.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import shutil
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sg2ada.data import images as im
from sg2ada.data.remote import COPY_PREFIX, is_url, open_dest, upload_dataset
from sg2ada.data.sources import Source, open_source
from sg2ada.errors import UserError
from sg2ada.version import __version__

FORMAT = "sg2ada-dataset"
VERSION = 1
ENCODINGS = ("png", "raw")
_REPORT_CAP = 100_000  # list entries kept in dataset.json; the counts stay exact


def is_dataset_dir(path: Path) -> bool:
    meta = Path(path) / "dataset.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def check_dest(dest: Path, force: bool, source: str) -> None:
    """Refuse early (before any work) when DEST cannot or must not be replaced."""
    if not source.startswith("builtin:") and Path(source).exists() and dest.resolve() == Path(source).resolve():
        raise UserError(f"--dest {dest} is the source itself; choose another folder (sources are never modified)")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UserError(f"--dest {dest} is an existing file; choose a folder path")
    if not any(dest.iterdir()):
        return
    if is_dataset_dir(dest):
        if not force:
            raise UserError(f"--dest {dest} already holds a dataset; pass --force to replace it or choose another folder")
        return
    raise UserError(f"--dest {dest} is a non-empty folder that is not an sg2ada dataset; choose a new or empty folder")


# ------------------------------------------------------------------------------------ decisions


def decide_spec(src: Source, *, channels, resolution, transform, wide_height, resize_filter) -> im.Spec:
    """Pick the output channels and size: from the options, else from the source (for files: the
    majority of a sample of image headers)."""
    if transform not in im.TRANSFORMS:
        raise UserError(f"--transform must be center-crop or center-crop-wide, not {transform}")
    if resize_filter not in im.RESIZE_FILTERS:
        raise UserError(f"--resize-filter must be lanczos or box, not {resize_filter}")
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, not {channels}")
    if resolution is not None and (resolution < 4 or not im.is_power_of_two(resolution)):
        raise UserError(f"--resolution {resolution} is not a power of two >= 4 (StyleGAN needs e.g. 32, 64, 256, 1024)")
    if transform == "center-crop-wide":
        if resolution is None:
            raise UserError("--transform center-crop-wide needs --resolution (the canvas width)")
        wide_height = int(round(resolution * 3 / 4)) if wide_height is None else int(wide_height)
        if not 1 <= wide_height <= resolution:
            raise UserError(f"--wide-height {wide_height} must be between 1 and --resolution {resolution}")

    probed = []
    if (channels is None and src.channels is None) or (resolution is None and src.size is None):
        items = src.items if isinstance(src.items, list) else []
        step = max(1, len(items) // 256)
        for it in items[::step][:256]:
            p = it.probe() if it.probe else None
            if p is not None and p[1][0] * p[1][1] <= im.MAX_DECODE_PIXELS:  # a bomb gets no vote
                probed.append(p)
    if channels is None:
        if src.channels is not None:
            channels = 1 if src.channels == 1 else 3
        else:
            channels = 1 if probed and all(m in im.GRAY_MODES for m, _ in probed) else 3
    size = None
    if resolution is None:
        if src.size is not None:
            size = tuple(src.size)
        elif probed:
            size = collections.Counter(s for _, s in probed).most_common(1)[0][0]
        if size is not None:
            w, h = size
            if transform == "center-crop":
                resolution = min(w, h)
                if not im.is_power_of_two(resolution):
                    raise UserError(f"images are {w}x{h}; center-crop gives {resolution}x{resolution}, not a power of "
                                    "two: pass --resolution N (e.g. 256)")
            elif w != h or not im.is_power_of_two(w) or w < 4:
                hint = " --transform center-crop" if w != h else ""
                raise UserError(f"most images in {src.path} are {w}x{h}, not a square power of two; pass "
                                f"--resolution N{hint} (e.g. --resolution {1 << max(2, min(w, h).bit_length() - 1)})")
    return im.Spec(channels=channels, resolution=resolution, size=size, transform=transform,
                   resize_filter=resize_filter, wide_height=wide_height)


# ------------------------------------------------------------------------------------ processing


def iter_processed(src: Source, spec: im.Spec, *, max_images=None, workers=None, encode=None, progress=False):
    """Yield ("ok", item, array, encoded_or_None, notes) / ("skip", item, reason) in source order.

    Work runs in a thread pool with a bounded window, so memory stays flat on big sources. The
    first good image fixes the output shape; a later image of another shape (possible only when
    the source's size was guessed from a sample) is skipped."""
    from tqdm import tqdm

    workers = max(1, workers or min(8, os.cpu_count() or 1))
    total = src.count if max_images is None or src.count is None else min(src.count, max_images)

    def work(item):
        try:
            arr, notes = im.process(item.read(), spec)
        except im.SkipImage as e:  # from process, or from a read over the size limit
            return ("skip", item, str(e))
        except OSError as e:
            return ("skip", item, f"unreadable ({e.strerror or e})")
        return ("ok", item, arr, encode(arr) if encode else None, notes)

    written = 0
    shape = None
    window = collections.deque()
    it = iter(src.items)
    bar = tqdm(total=total, unit="img", disable=None if progress else True, file=sys.stderr, dynamic_ncols=True)
    with ThreadPoolExecutor(workers) as pool:
        try:
            exhausted = False
            while True:
                while not exhausted and len(window) < 4 * workers:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                    else:
                        window.append(pool.submit(work, nxt))
                if not window:
                    break
                res = window.popleft().result()
                if res[0] == "ok":
                    if shape is None:
                        shape = res[2].shape
                    if res[2].shape != shape:
                        h, w = shape[:2]
                        res = ("skip", res[1], f"size {res[2].shape[1]}x{res[2].shape[0]} differs from the dataset's "
                                               f"{w}x{h} (pass --resolution to resize)")
                    else:
                        written += 1
                bar.update(1)
                yield res
                if max_images is not None and written >= max_images:
                    break
        finally:
            for f in window:
                f.cancel()
            bar.close()


# ---------------------------------------------------------------------------------------- writing


class _ShardWriter:
    """Appends serialized examples, starting a new shard once the current one passes the size cap."""

    def __init__(self, folder: Path, shard_bytes: int):
        import tensorflow as tf

        self._tf = tf
        self.folder, self.shard_bytes = folder, shard_bytes
        self.shards: list[list] = []  # [tmp_name, count, bytes]
        self._w = None

    def write(self, record: bytes):
        if self._w is None or self.shards[-1][2] >= self.shard_bytes:
            self._roll()
        self._w.write(record)
        self.shards[-1][1] += 1
        self.shards[-1][2] += len(record)

    def _roll(self):
        if self._w is not None:
            self._w.close()
        name = f"part-{len(self.shards):05d}.tfrecords"
        self._w = self._tf.io.TFRecordWriter(str(self.folder / name))
        self.shards.append([name, 0, 0])

    def close(self) -> list[dict]:
        if self._w is not None:
            self._w.close()
            self._w = None
        out = []
        k = len(self.shards)
        for i, (name, count, _) in enumerate(self.shards):
            final = f"data-{i:05d}-of-{k:05d}.tfrecords"
            os.replace(self.folder / name, self.folder / final)
            out.append({"file": final, "count": count})
        return out


def _example(tf, data: bytes, shape, index: int, label, label_type) -> bytes:
    f = tf.train.Feature
    feats = {
        "image": f(bytes_list=tf.train.BytesList(value=[data])),
        "shape": f(int64_list=tf.train.Int64List(value=list(shape))),
        "index": f(int64_list=tf.train.Int64List(value=[index])),
    }
    if label_type == "class":
        feats["label"] = f(int64_list=tf.train.Int64List(value=[int(label)]))
    elif label_type == "vector":
        feats["label"] = f(float_list=tf.train.FloatList(value=[float(x) for x in label]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _swap_into_place(tmp: Path, dest: Path, force: bool):
    old = None
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        elif force and is_dataset_dir(dest):
            old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(dest, old)
        else:
            raise UserError(f"--dest {dest} appeared while converting; choose another folder")
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_dataset(source: str, dest, *, force=False, log=None, **options) -> dict:
    """Convert SOURCE into an sg2ada dataset at DEST (a folder, or a bucket URL: s3://, gs://, az://,
    any fsspec URL); returns the dataset.json content. `options` are `_convert`'s."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if is_url(dest):
        store = open_dest(str(dest), force)  # before any work: credentials, and what is there
        work = tempfile.mkdtemp(prefix=COPY_PREFIX)
        try:
            meta = _convert(source, Path(work) / "dataset", log=log, **options)
            upload_dataset(os.path.join(work, "dataset"), store)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report = store.url("dataset.json")
    else:
        meta = _convert(source, Path(dest), force=force, log=log, **options)
        report = Path(dest) / "dataset.json"
    skipped = meta["report"]["skipped"]
    for s in skipped[:20]:
        log(f"skipped {s['file']}: {s['reason']}")
    if meta["report"]["skipped_count"] > 20:
        log(f"... and {meta['report']['skipped_count'] - 20} more skipped (see {report})")
    return meta


def _convert(source: str, dest: Path, *, transform=None, resolution=None, wide_height=None,
             resize_filter="lanczos", max_images=None, channels=None, labels_from="auto",
             encoding="png", force=False, shard_mb=256, workers=None, seed=0, progress=False, log) -> dict:
    """Convert SOURCE into an sg2ada dataset in the local folder DEST."""
    import tensorflow as tf

    if encoding not in ENCODINGS:
        raise UserError(f"--encoding must be png or raw, not {encoding}")
    if max_images is not None and max_images < 1:
        raise UserError(f"--max-images must be at least 1, not {max_images}")
    if shard_mb <= 0:
        raise UserError("--shard-mb must be positive")
    check_dest(dest, force, source)
    if dest.parent.is_dir():
        for stale in sorted(dest.parent.glob(f".{dest.name}.tmp-*")):
            # Left by a killed run (or one running elsewhere on a shared disk): never a dataset.
            log(f"note: {stale} is a partial conversion from another run; delete it if none is running")

    src = open_source(source, labels_from=labels_from, exclude=[dest], builtin_count=max_images,
                      builtin_resolution=resolution, seed=seed)
    tmp = None
    try:
        if src.count == 0 and not src.skipped:
            raise UserError(f"--source {source} holds no images (png, jpeg, webp, bmp, tiff); "
                            "point it at the folder that contains them")
        spec = decide_spec(src, channels=channels, resolution=resolution, transform=transform,
                           wide_height=wide_height, resize_filter=resize_filter)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        writer = _ShardWriter(tmp, int(shard_mb * 2**20))
        encode = im.encode_png if encoding == "png" else (lambda a: a.tobytes())
        labels, skipped, converted = [], list(src.skipped), []
        n_early = len(src.skipped)
        n_conv = n_rotated = 0
        for res in iter_processed(src, spec, max_images=max_images, workers=workers, encode=encode, progress=progress):
            if res[0] == "skip":
                skipped.append({"file": res[1].name, "reason": res[2]})
                continue
            _, item, arr, data, notes = res
            if arr.shape[0] != arr.shape[1]:
                raise UserError(f"{item.name} is {arr.shape[1]}x{arr.shape[0]}, not square; pass --resolution N "
                                "--transform center-crop")
            out_shape = arr.shape
            writer.write(_example(tf, data, arr.shape, len(labels), item.label, src.label_type))
            labels.append(item.label)
            if notes:
                n_conv += 1
                n_rotated += any(n.startswith(im.EXIF_NOTE) for n in notes)
                if len(converted) < _REPORT_CAP:
                    converted.append({"file": item.name, "action": "; ".join(notes)})
        skipped += src.skipped[n_early:]  # generator sources (TF1 records) report as they go
        shards = writer.close()
        if not labels:
            first = f" (first: {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
            for s in skipped[:10]:
                log(f"skipped {s['file']}: {s['reason']}")
            raise UserError(f"no usable images in {source}: {len(skipped)} skipped{first}; fix the files or the options")

        label_type = src.label_type if labels and labels[0] is not None else None
        labels_file = None
        if label_type == "class":
            np.save(tmp / "labels.npy", np.asarray(labels, np.int64), allow_pickle=False)
            labels_file = "labels.npy"
        elif label_type == "vector":
            np.save(tmp / "labels.npy", np.asarray(labels, np.float32).reshape(len(labels), -1), allow_pickle=False)
            labels_file = "labels.npy"
        res_out = int(out_shape[0])
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "resolution": res_out,
            "width": res_out,
            "height": res_out,
            "channels": int(out_shape[2]),
            "count": len(labels),
            "image_encoding": encoding,
            "label_type": label_type,
            "label_dim": src.label_dim if label_type else 0,
            "label_names": src.label_names if label_type == "class" else None,
            "labels_file": labels_file,
            "shards": shards,
            "source": {"path": source if source.startswith("builtin:") else str(Path(source).resolve()), "kind": src.kind},
            "options": {"transform": transform, "resolution": resolution, "wide_height": spec.wide_height,
                        "resize_filter": resize_filter, "max_images": max_images, "channels": channels,
                        "labels_from": labels_from, "seed": seed if src.kind == "builtin" else None},
            "report": {
                "written": len(labels),
                "skipped_count": len(skipped),
                "converted_count": n_conv,
                "rotated_count": n_rotated,
                "symlink_loop_count": src.symlink_loops,
                "labels_without_files_count": len(src.labels_without_files),
                "labels_without_files": src.labels_without_files[:_REPORT_CAP],
                "notes": src.notes,
                "skipped": skipped[:_REPORT_CAP],
                "converted": converted,
            },
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sg2ada_version": __version__,
        }
        # dataset.json last: its presence is what marks a dataset as finished.
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))
        _swap_into_place(tmp, dest, force)
        tmp = None
        return meta
    finally:
        src.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_arrays(source: str, *, labels_from="auto", max_bytes=None, seed=0):
    """Decode a source straight into memory (no resizing): for quick starts on a folder, a zip or a
    builtin without running the tool. -> (images uint8 [N,H,W,C], labels list, Source, Spec, skipped)."""
    src = open_source(source, labels_from=labels_from, seed=seed)
    try:
        if src.count == 0 and not src.skipped:
            raise UserError(f"{source} holds no images; point it at the folder that contains them")
        spec = decide_spec(src, channels=None, resolution=None, transform=None, wide_height=None, resize_filter="lanczos")
        w, h = spec.size or (0, 0)
        per = h * w * spec.channels
        if max_bytes is not None and src.count and src.count * per > max_bytes:
            raise UserError(f"{source} is too large to load in memory ({src.count * per / 2**30:.1f} GiB); "
                            f"convert it first: sg2ada dataset --source {source} --dest DIR")
        arrays, labels, skipped = [], [], list(src.skipped)
        for res in iter_processed(src, spec):
            if res[0] == "skip":
                skipped.append({"file": res[1].name, "reason": res[2]})
                continue
            arrays.append(res[2])
            labels.append(res[1].label)
        if not arrays:
            raise UserError(f"no usable images in {source} ({len(skipped)} skipped); run sg2ada dataset for a report")
        return np.stack(arrays), labels, src, spec, skipped
    finally:
        src.close()
