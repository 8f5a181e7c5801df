"""Perceptual Path Length (Karras et al. 2019, "A Style-Based Generator Architecture for Generative
Adversarial Networks", Sec. 4.1; the StyleGAN2 paper's `ppl2_wend` variant without the face crop).

For each sample: two latents z0, z1 and an interpolation position t (uniform in [0,1] for `full`
sampling, 0 for `end`); the points at t and t+epsilon are taken by linear interpolation of the mapped
w (space `w`) or spherical interpolation of z (space `z`); both images are synthesised with the same
noise (NVIDIA randomises its constant noise buffers once per batch; here each pair shares one
stateless noise seed) in float32, optionally centre-cropped (the legacy face crop: rows 3/8..7/8,
columns 2/8..6/8), box-downsampled to 256x256 when larger, scaled to [0,255], and compared with
LPIPS (VGG16). The distance divided by epsilon^2 is one sample; the metric is the mean after
dropping samples outside the 1st..99th percentiles (`formulas.ppl_from_distances`).
"""

from __future__ import annotations

import numpy as np

from sg2ada.metrics.common import fake_labels, report_progress, run_replicated
from sg2ada.metrics.feature_nets import get_feature_net

__all__ = ["compute_ppl_distances", "slerp"]


def _normalize(v):
    import tensorflow as tf

    return v / tf.sqrt(tf.reduce_sum(tf.square(v), axis=-1, keepdims=True))


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b (unit-length result)."""
    import tensorflow as tf

    a = _normalize(a)
    b = _normalize(b)
    d = tf.reduce_sum(a * b, axis=-1, keepdims=True)
    p = t * tf.math.acos(tf.clip_by_value(d, -1.0, 1.0))
    c = _normalize(b - d * a)
    return _normalize(a * tf.math.cos(p) + c * tf.math.sin(p))


def _prepare_for_vgg(img, crop: bool):
    """NHWC [-1,1] -> NHWC [0,255], 3 channels, at most 256x256, as NVIDIA prepares PPL images."""
    import tensorflow as tf

    img = tf.cast(img, tf.float32)
    if crop:
        c = int(img.shape[1]) // 8
        img = img[:, c * 3 : c * 7, c * 2 : c * 6, :]
    h, w, ch = int(img.shape[1]), int(img.shape[2]), int(img.shape[3])
    factor = h // 256
    if factor > 1:
        img = tf.reduce_mean(tf.reshape(img, [-1, h // factor, factor, w // factor, factor, ch]), axis=[2, 4])
    img = (img + 1) * (255 / 2)
    if ch == 1:
        img = tf.tile(img, [1, 1, 1, 3])
    return img


def compute_ppl_distances(opts, spec, p) -> np.ndarray:
    """The scaled LPIPS distances of `num_samples` interpolation steps (before outlier rejection)."""
    import tensorflow as tf

    space, sampling, crop, eps = p["space"], p["sampling"], bool(p["crop"]), float(p["epsilon"])
    if space not in ("z", "w") or sampling not in ("full", "end"):
        raise ValueError(f"PPL space must be z|w and sampling full|end, got {space}, {sampling}")
    lpips = get_feature_net("lpips", opts.feature_net, opts.download)
    G = opts.G
    z_dim = int(G.z_dim)
    rng = np.random.RandomState(opts.seed)
    labels = fake_labels(opts, opts.seed)
    psi = opts.G_kwargs.get("truncation_psi", 1)

    @tf.function(reduce_retracing=True)
    def run(z0, z1, t, c, seeds):
        n = tf.shape(z0)[0]
        if space == "w":
            w = G.mapping(tf.concat([z0, z1], 0), tf.concat([c, c], 0), truncation_psi=psi)
            w0, w1 = w[:n], w[n:]
            tt = t[:, None, None]
            wt0 = w0 + (w1 - w0) * tt
            wt1 = w0 + (w1 - w0) * (tt + eps)
        else:
            zt0 = slerp(z0, z1, t[:, None])
            zt1 = slerp(z0, z1, t[:, None] + eps)
            w = G.mapping(tf.concat([zt0, zt1], 0), tf.concat([c, c], 0), truncation_psi=psi)
            wt0, wt1 = w[:n], w[n:]
        # One noise seed for both ends of a pair, so only the latent moves between them.
        seed = seeds[0]
        img0 = G.synthesis(wt0, noise_mode="random", noise_seed=seed, force_fp32=True)
        img1 = G.synthesis(wt1, noise_mode="random", noise_seed=seed, force_fp32=True)
        d = lpips.lpips(_prepare_for_vgg(img0, crop), _prepare_for_vgg(img1, crop))
        return d * (1.0 / eps**2)

    num = int(p["num_samples"])
    b = opts.batch_size
    dist = []
    state: dict = {}
    done = 0
    while done < num:
        z0 = rng.randn(b, z_dim).astype(np.float32)
        z1 = rng.randn(b, z_dim).astype(np.float32)
        t = (rng.uniform(size=b) * (1.0 if sampling == "full" else 0.0)).astype(np.float32)
        c = labels(b)
        # Per-sample rows so each replica gets one; the seed of a replica's first row is used.
        seeds = np.repeat(rng.randint(0, 2**31 - 1, size=[1, 2]), b, axis=0).astype(np.int32)
        dist.append(run_replicated(opts, run, z0, z1, t, c, seeds).numpy())
        done += b
        report_progress(opts, min(done, num), num, "ppl sampling", state)
    return np.concatenate(dist)[:num]
