"""The download cache shared by everything sg2ada fetches: metric feature networks and transfer sources.

- `cache_dir(*sub)`: the cache root `$SG2ADA_CACHE`, or `~/.cache/sg2ada` when unset, joined with `sub`
  (`feature-nets`, `transfer-sources`, ...). Nothing is created here.
- `offline()`: true when `SG2ADA_OFFLINE` is 1/true/yes; callers then never touch the network.
- `download_verified(url, dst, verify)`: fetch `url` into a temporary file next to `dst`, check it
  against a pinned SHA-256 when one is given, run `verify(tmp_path)` (which raises on a bad file),
  write the digest of what was verified to `dst + '.sha256'`, and only then `os.replace` it to `dst`.
  The rename is atomic, so a concurrent reader sees the whole file or none, and a failed, interrupted
  or rejected download leaves nothing at `dst`.
- `check_cached_digest(path)`: a cached file whose `.sha256` side file no longer matches was changed
  after it was verified; that is a UserError telling how to fetch it again. A file without side file
  was put there by hand and is trusted as given.

Network errors (`urllib.error.URLError`, `OSError`, `TimeoutError`) propagate to the caller, which knows
what the file is for and so can say what to do; a rejected download raises `DownloadRejected`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable

from sg2ada.errors import UserError

__all__ = ["DownloadRejected", "cache_dir", "check_cached_digest", "download_verified", "offline", "sha256_file"]


class DownloadRejected(UserError):
    """A download arrived but failed its checksum or verification; `detail` says which, for the caller's
    message (the caller adds what the file is and where to put it by hand)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def cache_dir(*sub: str) -> str:
    root = os.environ.get("SG2ADA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sg2ada")
    return os.path.join(root, *sub)


def offline() -> bool:
    return os.environ.get("SG2ADA_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_verified(url: str, dst: str, verify: Callable[[str], object], *, sha256: str | None = None,
                      what: str | None = None, timeout: float = 60) -> None:
    """Download `url` to `dst` so that only a verified, complete file ever appears there.

    `verify(path)` must raise UserError for a file that is not what was asked for (it is then reported
    as `DownloadRejected` naming `what`, default the basename of `dst`).
    """
    name = what or os.path.basename(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    # The temporary file lives in the cache folder itself, so the final os.replace is a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=os.path.basename(dst) + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        digest = sha256_file(tmp)
        if sha256 is not None and digest != sha256:
            raise DownloadRejected(f"the download from {url} failed its SHA-256 check")
        try:
            verify(tmp)  # a truncated or wrong file fails here, before it enters the cache
        except UserError:
            raise DownloadRejected(f"the download from {url} is not a valid {name}") from None
        # The digest of what was verified, so a later change to the cached copy is noticed.
        with open(dst + ".sha256", "w") as f:
            f.write(f"{digest}  {os.path.basename(dst)}\n")
        os.replace(tmp, dst)  # atomic: a concurrent reader sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_cached_digest(path: str) -> None:
    side = path + ".sha256"
    if not os.path.isfile(side):
        return  # placed there by the user: trusted as given
    with open(side) as f:
        fields = f.read().split()
    want = fields[0] if fields else ""
    if want and sha256_file(path) != want:
        raise UserError(
            f"{path} changed since it was downloaded (SHA-256 mismatch): delete it and {side} to fetch it again"
        )
