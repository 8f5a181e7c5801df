"""Image generation from a trained generator: seeds, saved ws, style-mixing grids, interpolations.

Behaviour follows NVIDIA's `generate.py` and `style_mixing.py` (stylegan2-ada-pytorch):
- a seed's latent is `RandomState(seed).randn(1, z_dim)` (`common.seed_to_z`);
- truncation `w = w_avg + psi * (w - w_avg)` happens in `G.mapping`;
- style mixing copies the column seed's ws into the chosen style indices of the row seed's ws; the
  grid has the column sources on the top row, the row sources in the left column and a black corner.
We always synthesise in float32 (`force_fp32=True`): the fp16 blocks of a TF1/PyTorch pickle only
pay off on GPUs, and NVIDIA's float32 images are the reference we are tested against.

Noise: `const` uses the network's fixed noise buffers (NVIDIA's PyTorch default for these tools),
`none` disables noise, `random` draws stateless noise from the image's seed, so unlike NVIDIA's tools
the same seed gives the same image again. `generate` also offers `tf1`: the per-seed noise of
NVIDIA's TF1 generate.py (noise0, noise1, ... drawn from the seed's RandomState after z).
"""

from __future__ import annotations

import numpy as np

from sg2ada.errors import UserError
from sg2ada.images import image_grid, to_uint8
from sg2ada.tools.common import labels_for, noise_seed_for, seed_to_z

NOISE_MODES = ("const", "random", "none")


def _check_noise_mode(noise_mode):
    if noise_mode not in NOISE_MODES:
        raise UserError(f"--noise-mode {noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")


def _mapper(G, truncation_psi, truncation_cutoff):
    import tensorflow as tf

    # psi stays a Python number: psi == 1 then skips truncation exactly as NVIDIA's code does.
    @tf.function(reduce_retracing=True)
    def fn(z, c):
        return G.mapping(z, c if G.c_dim else None, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    return fn


def _synthesizer(G, noise_mode):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def fn(ws, noise_seed):
        return G.synthesis(ws, noise_mode=noise_mode, noise_seed=noise_seed if noise_mode == "random" else None,
                           force_fp32=True)

    return fn


def map_seeds(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None) -> np.ndarray:
    """ws [len(seeds), num_ws, w_dim] of the seeds' latents (one seed at a time, as NVIDIA)."""
    mapping = _mapper(G, truncation_psi, truncation_cutoff)
    c = labels_for(G, class_idx, 1)
    return np.concatenate([np.asarray(mapping(seed_to_z(s, G.z_dim), c)) for s in seeds], 0) if len(seeds) else \
        np.zeros([0, G.num_ws, G.w_dim], np.float32)


def synthesize(G, ws, noise_mode="const", seeds=None) -> np.ndarray:
    """NHWC float images in [-1,1] for ws [N, num_ws, w_dim], one at a time; with noise_mode
    'random', `seeds` (one per row) make the noise reproducible."""
    _check_noise_mode(noise_mode)
    ws = np.asarray(ws, np.float32)
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise UserError(f"ws of shape {list(ws.shape)} do not fit this network, which needs "
                        f"[N, {G.num_ws}, {G.w_dim}]")
    synth = _synthesizer(G, noise_mode)
    out = []
    for i in range(ws.shape[0]):
        seed = seeds[i] if seeds is not None else i
        out.append(np.asarray(synth(ws[i:i + 1], noise_seed_for(seed))))
    return np.concatenate(out, 0) if out else np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels],
                                                       np.float32)


def seed_images(G, seeds, truncation_psi=1.0, truncation_cutoff=None, class_idx=None, noise_mode="const"):
    """Yield (seed, uint8 HWC image) for each seed, as NVIDIA's generate.py computes them.

    noise_mode "tf1" reproduces NVIDIA's TF1 generate.py, which after drawing z from the seed's
    RandomState overwrites the noise inputs noise0, noise1, ... with further draws from the same
    RandomState (the network's own noise buffers are restored afterwards)."""
    if noise_mode != "tf1":
        _check_noise_mode(noise_mode)
    mapping = _mapper(G, truncation_psi, truncation_cutoff)
    synth = _synthesizer(G, "const" if noise_mode == "tf1" else noise_mode)
    c = labels_for(G, class_idx, 1)
    bufs = _noise_buffers(G) if noise_mode == "tf1" else {}
    originals = {k: np.array(v.numpy()) for k, v in bufs.items()}
    try:
        for seed in seeds:
            rnd = np.random.RandomState(int(seed))
            z = rnd.randn(1, G.z_dim).astype(np.float32)  # == seed_to_z(seed, z_dim)
            for name in sorted(bufs, key=lambda n: int(n[len("noise"):])):
                bufs[name].assign(rnd.randn(*bufs[name].shape).astype(np.float32))
            img = synth(mapping(z, c), noise_seed_for(seed))
            yield seed, np.asarray(to_uint8(img))[0]
    finally:
        for k, v in bufs.items():
            v.assign(originals[k])


def _noise_buffers(G) -> dict:
    return {f"noise{layer.noise_index}": layer.noise_const for layer in G.synthesis.noise_layers() if layer.use_noise}


def load_projected_ws(path: str, G) -> np.ndarray:
    """The `w` array of a projector output (`projected_w.npz`, NVIDIA's format [N, num_ws, w_dim])."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files") or "w" not in f.files:
                raise UserError(f"{path}: no array 'w' inside; pass a projected_w.npz written by `sg2ada project` "
                                "or NVIDIA's projector")
            ws = np.asarray(f["w"], np.float32)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot read it as .npz ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
                        ) from None
    if ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise UserError(f"{path}: w has shape {list(ws.shape)}, this network needs [N, {G.num_ws}, {G.w_dim}]; "
                        "was it projected with another network?")
    if not np.all(np.isfinite(ws)):
        raise UserError(f"{path}: w holds NaN or infinite values")
    return ws


def parse_styles(text: str, num_ws: int) -> list[int]:
    from sg2ada.tools.common import parse_num_range

    styles = parse_num_range(text, "--styles")
    bad = [s for s in styles if s >= num_ws]
    if bad:
        raise UserError(f"--styles {text!r}: style index {bad[0]} out of range; this network has styles 0..{num_ws - 1}")
    return styles


def style_mix(G, row_seeds, col_seeds, col_styles, truncation_psi=1.0, noise_mode="const", class_idx=None):
    """NVIDIA's style-mixing figure. Returns (grid uint8 [(R+1)H, (C+1)W, ch], {(row, col): uint8 image})
    where (s, s) keys are the unmixed source images."""
    _check_noise_mode(noise_mode)
    all_seeds = list(dict.fromkeys(list(row_seeds) + list(col_seeds)))
    all_w = map_seeds(G, all_seeds, truncation_psi, None, class_idx)
    w_of = dict(zip(all_seeds, all_w))
    images = {}
    for seed, img in zip(all_seeds, np.asarray(to_uint8(synthesize(G, all_w, noise_mode, all_seeds)))):
        images[(seed, seed)] = img
    for r in row_seeds:
        mixed = []
        for q in col_seeds:
            w = w_of[r].copy()
            w[list(col_styles)] = w_of[q][list(col_styles)]
            mixed.append(w)
        mixed_images = np.asarray(to_uint8(synthesize(G, np.stack(mixed), noise_mode, [r] * len(col_seeds))))
        for q, img in zip(col_seeds, mixed_images):
            images[(r, q)] = img
    cells = []
    for r in [None] + list(row_seeds):
        for q in [None] + list(col_seeds):
            if r is None and q is None:
                cells.append(np.zeros_like(images[(all_seeds[0], all_seeds[0])]))  # the black corner
            else:
                cells.append(images[(q, q) if r is None else (r, r) if q is None else (r, q)])
    return image_grid(np.stack(cells), cols=len(col_seeds) + 1), images


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation along the great circle between the directions of a and b, with the
    norm interpolated linearly (Gaussian latents live near a sphere; lerp would cut through it)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua, ub = a / max(na, 1e-12), b / max(nb, 1e-12)
    omega = np.arccos(np.clip(np.dot(ua, ub), -1.0, 1.0))
    if omega < 1e-6:
        u = (1 - t) * ua + t * ub
    else:
        u = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    return (u * ((1 - t) * na + t * nb)).astype(np.float32)


def interpolation_latents(G, seeds, frames_per_transition: int, space="z", truncation_psi=1.0, class_idx=None):
    """ws [F, num_ws, w_dim] of a closed loop seeds[0] -> seeds[1] -> ... -> seeds[0]; F =
    frames_per_transition * len(seeds) (the first seed appears once). slerp in Z, lerp in W."""
    if space not in ("z", "w"):
        raise UserError(f"--space {space!r}: choose z or w")
    seeds = list(seeds)
    if len(seeds) < 2:
        raise UserError("--seeds: give at least two seeds to interpolate between")
    if frames_per_transition < 1:
        raise UserError(f"--frames {frames_per_transition}: must be at least 1")
    ts = np.arange(frames_per_transition) / frames_per_transition
    pairs = list(zip(seeds, seeds[1:] + seeds[:1]))
    if space == "z":
        import tensorflow as tf  # noqa: F401 - mapping below

        mapping = _mapper(G, truncation_psi, None)
        c = labels_for(G, class_idx, 1)
        out = []
        for a, b in pairs:
            za, zb = seed_to_z(a, G.z_dim)[0], seed_to_z(b, G.z_dim)[0]
            for t in ts:
                out.append(np.asarray(mapping(slerp(za, zb, t)[None], c)))
        return np.concatenate(out, 0)
    w = dict(zip(seeds, map_seeds(G, seeds, truncation_psi, None, class_idx)))
    return np.stack([w[a] + (w[b] - w[a]) * np.float32(t) for a, b in pairs for t in ts]).astype(np.float32)


def interpolation_frames(G, seeds, frames_per_transition: int, space="z", truncation_psi=1.0, class_idx=None,
                         noise_mode="const"):
    """Yield uint8 HWC frames of the interpolation loop (constant noise keeps it smooth)."""
    ws = interpolation_latents(G, seeds, frames_per_transition, space, truncation_psi, class_idx)
    _check_noise_mode(noise_mode)
    synth = _synthesizer(G, noise_mode)
    for i in range(ws.shape[0]):
        # One noise seed for the whole loop: per-frame noise would flicker.
        yield np.asarray(to_uint8(synth(ws[i:i + 1], noise_seed_for(seeds[0]))))[0]


__all__ = [
    "NOISE_MODES",
    "seed_images",
    "interpolation_frames",
    "interpolation_latents",
    "load_projected_ws",
    "map_seeds",
    "parse_styles",
    "slerp",
    "style_mix",
    "synthesize",
]
