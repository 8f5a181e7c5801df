"""Where `--resume` finds the weights of a transfer-learning run: named sources, URLs and local files.

Transfer learning, as in "Training Generative Adversarial Networks with Limited Data" (Karras et al.
2020, section 4.2 "Transfer learning"), starts a new run from a network trained on another
dataset. NVIDIA's `train.py` (stylegan2-ada and stylegan2-ada-pytorch) names its published sources
in `resume_specs`: `ffhq256`, `ffhq512`, `ffhq1024`, `celebahq256` and `lsundog256`, and also accepts a
URL or a local pickle. `resolve_resume_weights(spec)` turns any of these into a local file:

- a name from `TRANSFER_SOURCES`: NVIDIA's TF1 pickle (read by `sg2ada.legacy.tf1_import`, so no
  PyTorch is needed), taken from `<cache>/transfer-sources/<filename>` when it is there, otherwise
  downloaded into it once;
- an http(s) or file URL: cached under its basename in the same folder;
- anything else: a local path (snapshot directory or pickle), returned as given after checking that
  it exists.

A download is verified before it enters the cache: a TF1 pickle is fully unpickled (restricted, no
code runs) and its configuration translated; any other network pickle is loaded with the importer.
The download is atomic (`sg2ada.cache.download_verified`), so a half-written or wrong file is never
left in the cache. Offline (`SG2ADA_OFFLINE=1`) or after a failed download, the one-line UserError
names the URL and the exact path to put the file at by hand (or says to pass a local path).
The transfer settings themselves (ADA adjusting faster, no EMA ramp-up) are `training.options`'.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse

from sg2ada.cache import (
    DownloadRejected,
    cache_dir,
    check_cached_digest,
    download_verified,
    offline,
)
from sg2ada.errors import UserError

__all__ = [
    "TRANSFER_BASE_URL",
    "TRANSFER_SOURCES",
    "check_resume_spec",
    "describe_resume",
    "is_url",
    "resolve_resume_weights",
    "transfer_cache_path",
    "transfer_url",
]

TRANSFER_BASE_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada/pretrained/transfer-learning-source-nets/"

# NVIDIA's stylegan2-ada `train.py` resume_specs (the TF1 pickles; the PyTorch release points at the
# same networks converted).
TRANSFER_SOURCES = {
    "ffhq256": "ffhq-res256-mirror-paper256-noaug.pkl",
    "ffhq512": "ffhq-res512-mirror-stylegan2-noaug.pkl",
    "ffhq1024": "ffhq-res1024-mirror-stylegan2-noaug.pkl",
    "celebahq256": "celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl",
    "lsundog256": "lsundog-res256-paper256-kimg100000-noaug.pkl",
}

CACHE_SUBDIR = "transfer-sources"
_URL_SCHEMES = ("http://", "https://", "file://")


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(_URL_SCHEMES)


def transfer_url(name: str) -> str:
    return urllib.parse.urljoin(TRANSFER_BASE_URL, TRANSFER_SOURCES[name])


def _url_filename(url: str) -> str:
    base = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not base or base in (".", ".."):
        raise UserError(f"--resume {url}: the URL names no file; give the URL of a network pickle")
    return base


def transfer_cache_path(spec: str) -> str:
    """Where the named source or URL `spec` is (or would be) cached."""
    filename = TRANSFER_SOURCES[spec] if spec in TRANSFER_SOURCES else _url_filename(spec)
    return os.path.join(cache_dir(CACHE_SUBDIR), filename)


def _looks_like_name(spec: str) -> bool:
    # A bare word such as `ffhq` or `ffhq128`: no folder, no extension. Such a spec that is not a file
    # was almost certainly meant as a source name, so it is answered with the list of names.
    return os.sep not in spec and "/" not in spec and not os.path.splitext(spec)[1]


def _verify_network_file(path: str) -> None:
    """Raise UserError unless `path` is a complete network pickle the importers read."""
    from sg2ada.legacy import restricted

    fmt = restricted.sniff_format(path)
    if fmt in (restricted.TF1, restricted.OTHER_PICKLE):
        # As load_network: an unrecognised pickle goes to the TF1 reader, which refuses foreign classes.
        # Unpickles every variable (a truncated file fails) and checks the configuration, without
        # building the networks: load_transfer_weights builds them moments later anyway.
        from sg2ada.legacy.tf1_import import tf1_networks_configs

        tf1_networks_configs(path)
    elif fmt == restricted.PYTORCH:
        from sg2ada.legacy.load import load_network

        load_network(path, networks=("G_ema",))
    else:
        raise UserError(f"{path}: not an NVIDIA network pickle")


def _unavailable(url: str, dst: str, detail: str) -> str:
    return (f"--resume: cannot get {os.path.basename(dst)} ({detail}): download {url} and put it at {dst}, "
            "or pass the local path of the pickle to --resume")


def resolve_resume_weights(spec: str, download: bool | None = None) -> str:
    """The local file or directory holding the transfer-learning weights `spec` names.

    `download=None` downloads unless offline; False never touches the network (the cache must have it).
    """
    spec = str(spec)
    if spec in TRANSFER_SOURCES or is_url(spec):
        url = transfer_url(spec) if spec in TRANSFER_SOURCES else spec
        dst = transfer_cache_path(spec)
        if os.path.isfile(dst):
            check_cached_digest(dst)
            return dst
        if download is None:
            download = not offline()
        if not download:
            raise UserError(_unavailable(url, dst, "offline, SG2ADA_OFFLINE=1"))
        print(f"Downloading {url} to {dst}...")
        try:
            download_verified(url, dst, _verify_network_file, what="network pickle")
        except DownloadRejected as e:
            raise UserError(_unavailable(url, dst, e.detail)) from None
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
            # ValueError: urllib's answer to a malformed URL.
            reason = getattr(e, "reason", None) or e
            raise UserError(_unavailable(url, dst, f"download failed: {reason}")) from None
        return dst
    check_resume_spec(spec)
    return spec


def check_resume_spec(spec: str, must_exist: bool = True) -> None:
    """Check `spec` without touching the network: a known name, a URL with a file name, or a local
    path (that must exist when `must_exist`; a bare word that is no file is always an error, listing
    the known names, since it was most likely meant as one)."""
    spec = str(spec)
    if spec in TRANSFER_SOURCES:
        return
    if is_url(spec):
        _url_filename(spec)
        return
    if os.path.exists(spec):
        return
    if _looks_like_name(spec):
        raise UserError(f"--resume {spec}: not a file, run directory or known transfer source; the known names are "
                        f"{', '.join(TRANSFER_SOURCES)} (or give a path or URL)")
    if must_exist:
        raise UserError(f"--resume {spec}: no such run directory, network snapshot or pickle")


def describe_resume(spec: str) -> str:
    """What `--resume spec` would use, without downloading anything (for --dry-run)."""
    spec = str(spec)
    if spec in TRANSFER_SOURCES or is_url(spec):
        url = transfer_url(spec) if spec in TRANSFER_SOURCES else spec
        dst = transfer_cache_path(spec)
        if os.path.isfile(dst):
            return f"{dst} (cached copy of {url})"
        return f"{dst} (not cached yet: would download {url})"
    return os.path.abspath(spec)


def load_transfer_weights(trainer, path: str) -> None:
    """Copy G, D and G_ema weights from a snapshot or NVIDIA pickle into the trainer's networks.

    As NVIDIA's `copy_params_and_buffers(require_all=False)`: every variable whose name and shape
    match is copied, the rest keep their fresh initialisation (a different resolution or label count
    changes a few layers); nothing matching at all is an error.
    """
    from sg2ada.legacy.load import load_network

    print(f"Loading networks for transfer learning from {path}...")
    src = load_network(path)
    copied = total = 0
    for key in ("G", "D", "G_ema"):
        s_net, d_net = getattr(src, key), getattr(trainer, key)
        if s_net is None:
            continue
        s_vars = s_net.named_variables()
        for name, var in d_net.named_variables().items():
            total += 1
            if name in s_vars and tuple(s_vars[name].shape) == tuple(var.shape):
                var.assign(s_vars[name])
                copied += 1
    if copied == 0:
        raise UserError(f"--resume {path}: no weight matches this run's networks (names/shapes); "
                        "check --cfg and the dataset resolution")
    print(f"Copied {copied} of {total} variables; the others keep their initial values.")
