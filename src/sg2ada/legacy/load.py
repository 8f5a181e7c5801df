"""`load_network`, the one entry point for trained networks: our snapshot directories
(sg2ada.networks.snapshot), NVIDIA's TF1 pickles (tf1_import) and NVIDIA's PyTorch pickles
(pytorch_pickle), told apart by content rather than by name (restricted.sniff_format).
"""

from __future__ import annotations

import os

from sg2ada.errors import UserError
from sg2ada.legacy import restricted
from sg2ada.legacy.pytorch_pickle import import_pytorch_pickle
from sg2ada.legacy.tf1_import import import_tf1_pickle
from sg2ada.networks.snapshot import META_FILE, NETWORK_KEYS, WEIGHTS_FILE, Networks, load_snapshot


def load_network(path, networks=NETWORK_KEYS) -> Networks:
    """Load trained networks from our snapshot directory, an NVIDIA TF1 pickle or an NVIDIA PyTorch
    pickle (recognised by content, not by name). `networks` picks which of G, D, G_ema to build
    (the rest are None) to save time and memory when only G_ema is needed; a source without G or D
    (a generator-only pickle or snapshot) also gives None for those."""
    path = os.fspath(path)
    networks = tuple(networks)
    unknown = [n for n in networks if n not in NETWORK_KEYS]
    if unknown:
        raise ValueError(f"networks must be a subset of {NETWORK_KEYS}, got {unknown}")
    fmt = restricted.sniff_format(path)
    if fmt == restricted.SNAPSHOT:
        return load_snapshot(path, networks)
    if fmt == restricted.ZIP and os.path.basename(path) == WEIGHTS_FILE:
        return load_snapshot(os.path.dirname(os.path.abspath(path)), networks)
    if os.path.basename(path) == META_FILE and os.path.isfile(path):
        return load_snapshot(os.path.dirname(os.path.abspath(path)), networks)
    if fmt in (restricted.TF1, restricted.OTHER_PICKLE):
        # Unrecognised pickles go through the TF1 reader too: it refuses foreign classes by name
        # and explains what it expected.
        return import_tf1_pickle(path, networks)
    if fmt == restricted.PYTORCH:
        return import_pytorch_pickle(path, networks)
    if fmt == restricted.ZIP:
        raise UserError(f"{path}: is a zip archive (a torch.save checkpoint or an .npz?), not a network snapshot or "
                        "an NVIDIA network pickle; pass a snapshot directory or NVIDIA's .pkl")
    raise UserError(f"{path}: neither a network snapshot directory nor an NVIDIA network pickle (unrecognised or "
                    "truncated content); check the path")


__all__ = ["load_network"]
