"""Datasets in a bucket: the dataset tool's output at an s3://, gs://, az:// or any fsspec URL.

Reading (`fetch_dataset`): the files dataset.json names are copied once per process into a private
temporary directory (`tempfile.mkdtemp`, mode 0700, prefix `sg2ada-data-`) and read from there as
a local dataset. The copy is removed by `remove_copies`, which the CLI runs when a command ends and
`atexit` runs when the process ends (the CLI turns SIGTERM and SIGINT into normal exits); a fetch
that fails or is interrupted removes its partial copy itself. A SIGKILL leaves the copy behind.
Writing (`open_dest`, `upload_dataset`): the tool converts into a local temporary folder, then the
shards and labels are uploaded and dataset.json last, so a reader never takes a half-written
dataset for a finished one.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import posixpath
import re
import shutil
import tempfile

from sg2ada.errors import UserError
from sg2ada.storage import Store, open_store, short_error

COPY_PREFIX = "sg2ada-data-"
META = "dataset.json"
# The files of a dataset (and an upload's temporary names): what --dest may replace.
_DATASET_FILE = re.compile(r"^(data-\d+-of-\d+\.tfrecords|labels\.npy|dataset\.json)(\.tmp-[0-9a-f]+)?$")

_COPIES: dict[str, str] = {}  # dataset URL -> its local copy
_TEMP_DIRS: dict[str, int] = {}  # every copy on disk (finished or being fetched) -> pid that made it


def is_url(path) -> bool:
    path = str(path)
    return "://" in path and not path.startswith("builtin:")


def dataset_url(url: str) -> str:
    """The dataset's folder URL (a trailing /dataset.json or / dropped)."""
    url = str(url).rstrip("/")
    return url[: -len("/" + META)] if url.endswith("/" + META) else url


def _read_error(url: str, e: Exception) -> UserError:
    return UserError(f"--data {url}: cannot read it ({short_error(e)}); check the URL and the credentials (AWS "
                     "variables, GOOGLE_APPLICATION_CREDENTIALS or AZURE_STORAGE_CONNECTION_STRING; docs/training.md)")


def fetch_dataset(url: str) -> tuple[str, str]:
    """(dataset URL, local folder): the dataset at `url`, copied on the first call of the process."""
    base = dataset_url(url)
    if base in _COPIES and os.path.isdir(_COPIES[base]):
        return base, _COPIES[base]
    store = open_store(base, what="--data")
    try:
        raw = store.read_bytes(META)
    except UserError:  # Stopped: SIGTERM or SIGINT
        raise
    except FileNotFoundError:
        raise UserError(f"--data {base}: no dataset there (no {META}); write one with: "
                        f"sg2ada dataset --source SRC --dest {base}") from None
    except Exception as e:  # noqa: BLE001  (auth, network and bucket errors differ per backend)
        raise _read_error(base, e) from e
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise UserError(f"--data {base}/{META} is not readable JSON ({e}); rebuild the dataset with sg2ada dataset") \
            from None
    names = _file_names(meta, base)
    local = tempfile.mkdtemp(prefix=COPY_PREFIX)
    _TEMP_DIRS[local] = os.getpid()
    try:
        for name in names:
            try:
                store.get_file(name, os.path.join(local, name))
            except UserError:  # Stopped: SIGTERM or SIGINT
                raise
            except FileNotFoundError:
                raise UserError(f"--data {base} is incomplete: {name} is missing; rebuild it with sg2ada dataset") \
                    from None
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise UserError(f"--data {base}: no space for a copy of the dataset in {tempfile.gettempdir()}; "
                                    "free disk space or point TMPDIR at a larger disk") from None
                raise _read_error(base, e) from e
            except Exception as e:  # noqa: BLE001  (as above)
                raise _read_error(base, e) from e
        tmp = os.path.join(local, f".{META}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
        os.replace(tmp, os.path.join(local, META))
    except BaseException:  # an error, or SIGTERM/SIGINT mid-download: no partial copy stays behind
        _remove(local)
        raise
    _COPIES[base] = local
    return base, local


def _file_names(meta, base: str) -> list[str]:
    """The shard and label files dataset.json names: plain file names only (none may leave the copy)."""
    if not isinstance(meta, dict) or meta.get("format") != "sg2ada-dataset":
        raise UserError(f"--data {base}/{META} is not an sg2ada dataset; convert the images with sg2ada dataset first")
    try:
        names = [s["file"] for s in meta.get("shards") or []]
        if meta.get("labels_file"):
            names.append(meta["labels_file"])
    except (KeyError, TypeError) as e:
        raise UserError(f"--data {base}/{META} lacks or mangles field {e}; rebuild the dataset with sg2ada dataset") \
            from None
    for name in names:
        if not isinstance(name, str) or not _DATASET_FILE.match(name) or name == META:
            raise UserError(f"--data {base}/{META} names a file {name!r} that the dataset tool never writes; "
                            "rebuild the dataset with sg2ada dataset")
    return names


def _remove(local: str) -> None:
    shutil.rmtree(local, ignore_errors=True)
    if not os.path.exists(local):  # a file created during the removal keeps it listed for a retry
        _TEMP_DIRS.pop(local, None)


def remove_copies() -> None:
    """Delete every local copy of a bucket dataset this process made (a later open fetches again)."""
    for local, pid in list(_TEMP_DIRS.items()):
        if pid == os.getpid():  # a forked child must not delete its parent's copy
            _remove(local)
    for base, local in list(_COPIES.items()):
        if local not in _TEMP_DIRS:
            del _COPIES[base]


atexit.register(remove_copies)


# ------------------------------------------------------------------------------------- writing


def open_dest(url: str, force: bool) -> Store:
    """The store for `--dest URL`, checked before any work: writable, and not holding a dataset
    unless --force, nor files that are not a dataset's."""
    store = open_store(dataset_url(url), what="--dest")
    store.check_access()
    present = _present(store)
    if META in present and not force:
        raise UserError(f"--dest {store.uri} already holds a dataset; pass --force to replace it or choose another "
                        "location")
    foreign = [n for n in present if not _DATASET_FILE.match(n)]
    if foreign:
        raise UserError(f"--dest {store.uri} holds files that are not an sg2ada dataset (e.g. {foreign[0]}); "
                        "choose a new or empty location")
    return store


def _present(store: Store) -> list[str]:
    try:
        return store.list()
    except Exception as e:  # noqa: BLE001  (auth, network and bucket errors differ per backend)
        raise UserError(f"--dest {store.uri}: cannot list it ({short_error(e)}); check the URL and the "
                        "credentials") from e


def upload_dataset(local_dir: str, store: Store) -> None:
    """Upload the tool's output folder `local_dir`: a dataset.json already there is removed first,
    the shards and labels go next, dataset.json last; files of a replaced dataset are removed after."""
    old = _present(store)
    new = sorted(os.listdir(local_dir))
    try:
        if META in old:
            store.delete([META])  # from here on no reader takes the location for a finished dataset
        for name in [n for n in new if n != META] + [META]:
            store.put_file(os.path.join(local_dir, name), name)
        store.delete([n for n in old if n not in new])
    except UserError:  # Stopped: SIGTERM or SIGINT
        raise
    except Exception as e:  # noqa: BLE001  (as above)
        raise UserError(f"--dest {store.uri}: upload failed ({short_error(e)}); nothing there counts as a dataset "
                        "until it is complete: run the command again") from e
