"""`Store`: files under one prefix of an fsspec location (object store, local path, any fsspec URL).

Object stores (S3, GCS, Azure Blob) publish an object only when its upload completes (a single
PUT, or the final step of a multipart/resumable/block upload), so a file is written in place.
Everywhere else (local paths, file://, other fsspec file systems) a file is written under a
temporary name and renamed. Either way a reader never sees a half-written file.

Credentials and endpoints are left to each backend's standard configuration; `check_access`
writes and deletes a small probe object so that a wrong bucket or missing credentials show up as
one line at start instead of as failed uploads later.
"""

from __future__ import annotations

import logging
import os
import uuid

from sg2ada.errors import UserError

# Whole-object stores: an object becomes visible only once completely uploaded.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs"}
_HINTS = {
    "s3fs": "check the bucket name and the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE; AWS_ENDPOINT_URL for S3-compatible stores such as MinIO, Ceph or R2)",
    "gcsfs": "check the bucket name and the Google credentials (GOOGLE_APPLICATION_CREDENTIALS or "
             "`gcloud auth application-default login`; STORAGE_EMULATOR_HOST for an emulator)",
    "adlfs": "check the container name and the Azure credentials (AZURE_STORAGE_CONNECTION_STRING, or "
             "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN)",
}
PROBE_PREFIX = ".sg2ada-write-check-"


class LocalFileMissing(Exception):
    """A local file to upload no longer exists (e.g. an old checkpoint pruned meanwhile)."""


def short_error(e: BaseException) -> str:
    """`Type: first line` of an exception, at most ~200 characters (for one-line messages)."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _protocol(uri: str) -> str:
    import fsspec

    protocol, _ = fsspec.core.split_protocol(uri)
    return protocol or "file"


def _filesystem(protocol: str):
    """The fsspec class for `protocol` and the extra arguments it needs here."""
    import fsspec

    if protocol in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        # gcsfs's default class asks Google's storage-control API for the bucket type, which an
        # emulator does not have: the JSON-API class talks to the emulator only. An emulator takes
        # no credentials, and looking them up would probe the GCE metadata server for seconds.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem, {"token": "anon"}
    return fsspec.get_filesystem_class(protocol), {}


def open_store(uri: str, *, what: str = "--backup-uri") -> Store:
    """A `Store` for `uri` (s3://, gs://, az://, abfs://, file://, a local path, any fsspec URL).

    `what` names the option in error messages. A missing backend package or an unknown protocol
    is a UserError; access is not checked here (see `Store.check_access`).
    """
    protocol = _protocol(uri)
    package = _PACKAGES.get(protocol)
    try:
        cls, kwargs = _filesystem(protocol)
    except ImportError as e:
        need = f"the {package} package" if package else f"a package that is not installed ({short_error(e)})"
        raise UserError(f"{what} {uri}: {protocol}:// needs {need}; pip install 'sg2ada[cloud]'") from e
    except ValueError as e:
        raise UserError(f"{what} {uri}: unknown storage protocol {protocol}://; use s3://, gs://, az://, "
                        "abfs://, file:// or a local path") from e
    if package == "gcsfs" and logging.getLogger("gcsfs").level == logging.NOTSET:
        # gcsfs logs every retry and fallback with tracebacks; its final error reaches the user as
        # one line from here or from the uploader.
        logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    try:
        fs = cls(skip_instance_cache=True, **kwargs, **cls._get_kwargs_from_urls(uri))
        root = cls._strip_protocol(uri).rstrip("/")
    except Exception as e:  # noqa: BLE001  (each backend raises its own types for bad settings)
        raise UserError(f"{what} {uri}: cannot open it ({short_error(e)}); "
                        f"{_HINTS.get(package, 'check the location and its credentials')}") from e
    if not root:
        raise UserError(f"{what} {uri}: give a bucket or directory, e.g. {protocol}://bucket/runs")
    return Store(uri, fs, root, protocol=protocol, what=what)


class Store:
    """Files under `root` of the fsspec file system `fs`; `rel` paths use '/' and are relative to root."""

    def __init__(self, uri: str, fs, root: str, *, protocol: str, what: str = "--backup-uri"):
        self.uri = uri.rstrip("/")
        self.fs = fs
        self.root = root
        self.protocol = protocol
        self.what = what
        self.whole_objects = protocol in _OBJECT_STORES

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def url(self, rel: str = "") -> str:
        return f"{self.uri}/{rel}" if rel else self.uri

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _tmp(self, dst: str) -> str:
        parent = dst.rsplit("/", 1)[0] if "/" in dst else dst
        self.fs.makedirs(parent, exist_ok=True)
        return f"{dst}.tmp-{uuid.uuid4().hex[:12]}"

    def put_file(self, local: str, rel: str) -> None:
        """Upload `local` to `rel`, appearing only complete; LocalFileMissing if `local` is gone."""
        if not os.path.isfile(local):
            raise LocalFileMissing(local)
        self._write(rel, lambda path: self.fs.put_file(local, path))

    def put_bytes(self, data: bytes, rel: str) -> None:
        self._write(rel, lambda path: self.fs.pipe_file(path, data))

    def _write(self, rel: str, upload) -> None:
        """upload(path) in place on an object store, else under a temporary name renamed to `rel`."""
        dst = self._path(rel)
        if self.whole_objects:
            upload(dst)
            return
        tmp = self._tmp(dst)
        try:
            upload(tmp)
            self.fs.mv(tmp, dst)
        except BaseException:
            self._discard(tmp)
            raise

    def put_tree(self, local_dir: str, rel: str, *, last: tuple[str, ...] = ()) -> None:
        """Upload a directory; files named in `last` (e.g. a manifest) go after all the others."""
        first, final = [], []
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            sub = os.path.relpath(root, local_dir).replace(os.sep, "/")
            for name in sorted(files):
                r = f"{rel}/{name}" if sub == "." else f"{rel}/{sub}/{name}"
                (final if name in last else first).append((os.path.join(root, name), r))
        for local, r in first + final:
            self.put_file(local, r)

    def get_file(self, rel: str, local: str) -> None:
        """Download `rel` to `local` (temporary name + rename, so `local` is never half-written)."""
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        tmp = f"{local}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            self.fs.get_file(self._path(rel), tmp)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def exists(self, rel: str) -> bool:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return self.fs.exists(path)

    def list(self, rel: str = "") -> list[str]:
        """Every file under `rel` (recursively), as paths relative to `rel`, sorted."""
        base = self._path(rel)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        prefix = base.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in found if p.startswith(prefix))

    def children(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (files and directories), sorted."""
        base = self._path(rel)
        self.fs.invalidate_cache(base)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in entries}
        names.discard(base.rstrip("/").rsplit("/", 1)[-1])  # some backends list the prefix itself
        return sorted(n for n in names if n)

    def delete(self, rels: list[str]) -> None:
        """Delete these files; ones already gone are fine."""
        for rel in rels:
            try:
                self.fs.rm_file(self._path(rel))
            except FileNotFoundError:
                pass

    def _discard(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except Exception:  # noqa: BLE001  (best effort: the temporary name never counts as a file)
            pass

    def check_access(self) -> None:
        """Write and delete a small probe object; a UserError naming the fix if that fails."""
        rel = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            if not self.whole_objects:
                self.fs.makedirs(self.root, exist_ok=True)
            self.put_bytes(b"sg2ada write check\n", rel)
            self.delete([rel])
        except Exception as e:  # noqa: BLE001  (auth, network and bucket errors differ per backend)
            hint = _HINTS.get(_PACKAGES.get(self.protocol), "check the location and its credentials")
            raise UserError(f"{self.what} {self.uri}: cannot write there ({short_error(e)}); {hint}") from e
