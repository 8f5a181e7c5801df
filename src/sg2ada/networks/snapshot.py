"""Our network snapshot format: `save_snapshot`, `load_snapshot`.

A snapshot plays the role of NVIDIA's `network-snapshot-<kimg>.pkl` (stylegan2-ada-pytorch
`training/training_loop.py` pickles `G`, `D`, `G_ema`, `augment_pipe`, `training_set_kwargs`), but
holds no code: a directory with
- `snapshot.json`: format tag and version, `GeneratorConfig`/`DiscriminatorConfig` as dicts, the
  networks it holds (`"networks"`, normally `["G", "D", "G_ema"]`; a converted generator-only
  pickle has just `G_ema` and `"D": null`), the dataset description, kimg, source, creation time,
  sg2ada version;
- `weights.npz`: `G/<name>`, `D/<name>`, `G_ema/<name>` for every `named_variables()` entry (NVIDIA's
  TF1 variable names, TF1 layouts), read back with `allow_pickle=False`.
It is written into a temporary sibling directory and renamed into place, so a reader never sees
a half-written snapshot, and an existing snapshot is never replaced unless asked.

`load_snapshot(path)` reads one back as `Networks(G, D, G_ema, meta)`; `sg2ada.legacy.load.load_network`
also accepts NVIDIA's pickles and returns the same.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import uuid
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from sg2ada.errors import UserError
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig
from sg2ada.networks.discriminator import Discriminator
from sg2ada.networks.generator import Generator
from sg2ada.networks.layers import assign_named
from sg2ada.version import __version__

FORMAT = "sg2ada-network-snapshot"
VERSION = 1
META_FILE = "snapshot.json"
WEIGHTS_FILE = "weights.npz"
NETWORK_KEYS = ("G", "D", "G_ema")


class Networks(NamedTuple):
    """What `load_snapshot` and `sg2ada.legacy.load.load_network` return. A network not asked for (see `load_network(networks=...)`) is None."""

    G: object
    D: object
    G_ema: object
    meta: dict


def build_networks(g_config: GeneratorConfig, d_config: DiscriminatorConfig | None, which=NETWORK_KEYS,
                   source: str | None = None):
    """Fresh (randomly initialised) G, D, G_ema for the configs; those not in `which` are None
    (and D is None without a d_config). With `source` (the file the configs came from), a config
    the networks reject becomes a UserError naming that file."""
    try:
        G = Generator(g_config, name="G") if "G" in which else None
        D = Discriminator(d_config, name="D") if "D" in which and d_config is not None else None
        G_ema = Generator(g_config, name="G_ema") if "G_ema" in which else None
    except ValueError as e:
        if source is None:
            raise
        raise UserError(f"{source}: cannot build networks for its configuration ({e})") from None
    return G, D, G_ema


def save_snapshot(path, G, D, G_ema, dataset=None, kimg=None, source="sg2ada", overwrite=False, extra=None):
    """Write G, D, G_ema as a snapshot directory at `path` (atomically); returns the path.

    `dataset` is a JSON-able description of the training data (or None), `kimg` the training
    progress, `source` where the weights came from. An existing `path` is an error unless
    `overwrite`; `extra` adds JSON-able fields to snapshot.json (never overriding ours).
    G and D may be None (e.g. an NVIDIA generator-only pickle): snapshot.json then lists the
    networks it holds in "networks", and "D" is null without a discriminator."""
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{path}: already exists; choose another destination or pass --force to replace it")
    if G_ema is None:
        raise ValueError("save_snapshot needs G_ema")
    if G is not None and G.config != G_ema.config:
        raise ValueError("G and G_ema have different configurations")
    present = [(k, n) for k, n in (("G", G), ("D", D), ("G_ema", G_ema)) if n is not None]

    meta = dict(extra or {})
    meta.update({
        "format": FORMAT,
        "version": VERSION,
        "G": G_ema.config.to_dict(),
        "D": D.config.to_dict() if D is not None else None,
        "networks": [k for k, _ in present],
        "dataset": dataset,
        "kimg": None if kimg is None else float(kimg),
        "source": str(source),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sg2ada_version": __version__,
    })
    arrays = {}
    for key, net in present:
        for name, value in net.get_tf1_variables().items():
            arrays[f"{key}/{name}"] = value
    try:
        text = json.dumps(meta, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"snapshot metadata is not JSON-serialisable: {e}") from None

    parent = os.path.dirname(path)
    base = os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(tmp)
    try:
        with open(os.path.join(tmp, WEIGHTS_FILE), "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.lexists(path):
            # overwrite: a directory cannot be renamed over a non-empty one, so move the old
            # snapshot aside first; a reader sees the old snapshot, nothing for an instant, or
            # the new one, never a mixture. If the second rename fails, the old one goes back.
            old = os.path.join(parent, f".{base}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.unlink(old)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def clean_interrupted_writes(parent: str) -> None:
    """Undo what a `save_snapshot` killed midway left in `parent`: its temporary folders go, and an
    overwritten snapshot moved aside (`.NAME.old-*`) goes back where its replacement never arrived."""
    for old in glob.glob(os.path.join(glob.escape(parent), ".*.old-*")):
        if not os.path.isdir(old) or os.path.islink(old):
            continue
        base = os.path.basename(old)[1:].rsplit(".old-", 1)[0]
        if os.path.lexists(os.path.join(parent, base)):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, os.path.join(parent, base))
    for tmp in glob.glob(os.path.join(glob.escape(parent), ".*.tmp-*")):
        if os.path.isdir(tmp) and not os.path.islink(tmp):  # a folder: a snapshot's, not a file's temporary
            shutil.rmtree(tmp, ignore_errors=True)


def read_snapshot_meta(path) -> dict:
    """snapshot.json of a snapshot directory, validated (no TensorFlow needed)."""
    path = os.fspath(path)
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isdir(path):
        raise UserError(f"{path}: not a directory; pass a network snapshot directory")
    if not os.path.isfile(meta_path):
        raise UserError(f"{path}: not a network snapshot (no {META_FILE}); pass a directory written by "
                        "`sg2ada convert` or by training, or an NVIDIA .pkl")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{meta_path}: unreadable snapshot metadata ({e}); the snapshot is damaged") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{meta_path}: not an sg2ada network snapshot (format tag missing); pass a directory "
                        "written by `sg2ada convert` or by training")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise UserError(f"{meta_path}: invalid snapshot version {version!r}; the snapshot is damaged")
    if version > VERSION:
        raise UserError(f"{meta_path}: snapshot version {version} was written by a newer sg2ada; upgrade sg2ada "
                        f"(this one reads version {VERSION})")
    return meta


def snapshot_networks(meta: dict, path: str = "?") -> tuple:
    """The networks a snapshot holds ("networks"; all three in snapshots that do not say)."""
    saved = meta.get("networks", list(NETWORK_KEYS))
    if not isinstance(saved, list) or "G_ema" not in saved or any(k not in NETWORK_KEYS for k in saved) or (
            "D" in saved and meta.get("D") is None):
        raise UserError(f"{os.path.join(path, META_FILE)}: invalid \"networks\" list {saved!r}; the snapshot is damaged")
    return tuple(saved)


def snapshot_configs(meta: dict, path: str = "?") -> tuple[GeneratorConfig, DiscriminatorConfig | None]:
    """The generator config and the discriminator config (None if the snapshot has no D)."""
    try:
        g_cfg = GeneratorConfig.from_dict(meta["G"])
        d_cfg = DiscriminatorConfig.from_dict(meta["D"]) if meta["D"] is not None else None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{os.path.join(path, META_FILE)}: invalid network configuration ({type(e).__name__}: "
                        f"{e}); the snapshot is damaged") from None
    return g_cfg, d_cfg


def read_snapshot_weights(path) -> dict[str, np.ndarray]:
    """All arrays of weights.npz, read eagerly so a damaged file fails here with a clear error."""
    wpath = os.path.join(os.fspath(path), WEIGHTS_FILE)
    if not os.path.isfile(wpath):
        raise UserError(f"{path}: snapshot has no {WEIGHTS_FILE}; the snapshot is incomplete")
    try:
        with np.load(wpath, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("not an .npz archive")
            return {k: np.array(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{wpath}: cannot read the weights ({detail[:160]}); the snapshot is damaged, "
                        "write it again") from None


def load_snapshot(path, networks=NETWORK_KEYS) -> Networks:
    path = os.path.abspath(os.fspath(path))
    meta = read_snapshot_meta(path)
    g_cfg, d_cfg = snapshot_configs(meta, path)
    saved = snapshot_networks(meta, path)
    weights = read_snapshot_weights(path)
    per_net: dict[str, dict] = {k: {} for k in saved}
    for key, value in weights.items():
        net_key, _, name = key.partition("/")
        if net_key not in per_net or not name:
            raise UserError(f"{os.path.join(path, WEIGHTS_FILE)}: unexpected entry {key!r}; the snapshot is damaged")
        per_net[net_key][name] = value
    which = tuple(k for k in networks if k in saved)
    built = dict(zip(NETWORK_KEYS, build_networks(g_cfg, d_cfg, which, source=path)))
    for key in which:
        assign_named(built[key], per_net[key], source=f"{path} ({key} weights)")
    meta = dict(meta)
    meta["path"] = path
    return Networks(built["G"], built["D"], built["G_ema"], meta)


__all__ = ["Networks", "build_networks", "save_snapshot", "clean_interrupted_writes", "load_snapshot",
           "read_snapshot_meta", "read_snapshot_weights", "FORMAT", "VERSION"]
