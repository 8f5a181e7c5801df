"""Pieces shared by the inference tools (generate, style-mix, interpolate, project, export).

- `parse_num_range("0-35,40,50-52")`: NVIDIA's seed-list syntax (its tools accept either one `a-b`
  range or a comma list; we accept any comma list of numbers and inclusive ranges).
- `seed_to_z(seed, z_dim)`: NVIDIA's rule `numpy.random.RandomState(seed).randn(1, z_dim)`, so a
  seed gives the same latent (and, for an imported network, the same image) as NVIDIA's tools.
- `load_generator(path)`: G_ema of a snapshot dir or NVIDIA pickle, via `load_network`.
- argument checks that turn bad input into one-line `UserError`s.

Nothing here imports TensorFlow at module import time, so CLI modules can use the parsers.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from sg2ada.errors import UserError

MAX_ABS_PSI = 2.0  # beyond this truncation extrapolates far outside the learned W distribution
MAX_SEEDS = 100_000
_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_num_range(text: str, what: str = "--seeds", lo: int = 0, hi: int = 2**32 - 1) -> list[int]:
    """'0-35,40,50-52' -> [0..35, 40, 50, 51, 52] (ranges inclusive, order kept, duplicates kept)."""
    if text is None or not str(text).strip():
        raise UserError(f"{what}: empty list; give numbers and ranges like 0-35,40,50-52")
    out: list[int] = []
    for part in str(text).split(","):
        m = _RANGE.match(part)
        if not m:
            raise UserError(f"{what} {text!r}: cannot read {part.strip()!r}; give numbers and inclusive ranges "
                            "like 0-35,40,50-52")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise UserError(f"{what} {text!r}: range {a}-{b} runs backwards; write it as {b}-{a}")
        if a < lo or b > hi:
            raise UserError(f"{what} {text!r}: {part.strip()} is outside {lo}..{hi}")
        if len(out) + (b - a + 1) > MAX_SEEDS:
            raise UserError(f"{what} {text!r}: more than {MAX_SEEDS} numbers; split the job")
        out.extend(range(a, b + 1))
    return out


def check_psi(psi: float, what: str = "--trunc") -> float:
    psi = float(psi)
    if not math.isfinite(psi) or abs(psi) > MAX_ABS_PSI:
        raise UserError(f"{what} {psi:g}: truncation psi must be between -{MAX_ABS_PSI:g} and {MAX_ABS_PSI:g} "
                        "(1 = no truncation, 0.5-0.7 = typical, 0 = the average image)")
    return psi


def check_cutoff(cutoff, num_ws: int) -> int | None:
    if cutoff is None:
        return None
    cutoff = int(cutoff)
    if cutoff < 0:
        raise UserError(f"--trunc-cutoff {cutoff}: must be >= 0 (the number of leading ws truncated)")
    return min(cutoff, num_ws)


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """[1, z_dim] float32 latent of `seed`, exactly as NVIDIA's generate.py draws it."""
    return np.random.RandomState(int(seed)).randn(1, int(z_dim)).astype(np.float32)


def noise_seed_for(seed: int):
    """Stateless noise seed ([2] int32) for noise_mode='random': reproducible per image seed."""
    seed = int(seed)
    return np.array([seed & 0x7FFFFFFF, 0x5EED], np.int32)


def labels_for(G, class_idx, n: int = 1) -> np.ndarray:
    """One-hot [n, c_dim] labels ([n, 0] for an unconditional network), checked like NVIDIA does."""
    c_dim = int(G.c_dim)
    if c_dim == 0:
        if class_idx is not None:
            raise UserError(f"--class {class_idx}: this network is unconditional (it has no classes); "
                            "leave out --class")
        return np.zeros([n, 0], np.float32)
    if class_idx is None:
        raise UserError(f"this network is conditional ({c_dim} classes): pass --class 0..{c_dim - 1}")
    if not 0 <= int(class_idx) < c_dim:
        raise UserError(f"--class {class_idx}: out of range, this network has classes 0..{c_dim - 1}")
    c = np.zeros([n, c_dim], np.float32)
    c[:, int(class_idx)] = 1
    return c


def prepare_outdir(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path}: exists and is not a directory; choose another output directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the output directory ({e.strerror or e})") from None
    return path


def check_network_path(path: str) -> str:
    path = os.fspath(path)
    if "://" in path:
        raise UserError(f"{path}: URLs are not fetched; download the file first and pass its local path to --network")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory; pass --network a snapshot directory or an NVIDIA .pkl")
    return path


def load_generator(path: str):
    """G_ema of a snapshot directory, NVIDIA TF1 pickle or NVIDIA PyTorch pickle."""
    from sg2ada.legacy.load import load_network

    nets = load_network(check_network_path(path), networks=("G_ema",))
    if nets.G_ema is None:
        raise UserError(f"{path}: holds no generator (G_ema)")
    return nets.G_ema


__all__ = [
    "MAX_ABS_PSI",
    "check_cutoff",
    "check_network_path",
    "check_psi",
    "labels_for",
    "load_generator",
    "noise_seed_for",
    "parse_num_range",
    "prepare_outdir",
    "seed_to_z",
]
