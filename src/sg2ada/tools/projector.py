"""Projecting an image into W (Karras et al. 2020, Sec. 5 "Projection of images to latent space"),
with the schedule of NVIDIA's `projector.py` (stylegan2-ada and stylegan2-ada-pytorch):

- Start from the mean of `w_avg_samples` (10000) mapped latents drawn from `RandomState(123)`;
  `w_std` is the root of their summed squared deviation per sample.
- Optimise one w (broadcast to all num_ws) and every constant noise buffer with Adam (betas 0.9,
  0.999, eps 1e-8). Learning rate `initial_learning_rate * ramp`, where ramp is a cosine ramp-down
  over the last `lr_rampdown_length` of the steps times a linear ramp-up over the first
  `lr_rampup_length`.
- Gaussian noise of std `w_std * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2` is
  added to w in each step (t = step / num_steps), a form of annealing.
- Loss = perceptual distance (LPIPS, Zhang et al. 2018, on VGG16 features) between the synthesised
  and the target image, both in [0, 255] and box-downsampled to 256x256 when larger, plus
  `regularize_noise_weight` (1e5) times the noise regulariser: for every noise buffer and each level
  of its 2x2-average pyramid down to 8x8, the squared mean of the product of the map with itself
  shifted by one pixel horizontally, plus the same vertically (penalises spatially correlated noise,
  i.e. noise that encodes image content). After each step every noise buffer is renormalised to
  zero mean and unit variance.
- The result is the w after each step; the last one is the projection.

The perceptual distance is pluggable: `feature_net` is any object with `lpips(img0, img1) -> [N]`
(NHWC float32 images in [0, 255]), such as `sg2ada.metrics.feature_nets.VGG16(..., lpips=True)` built
from NVIDIA's `vgg16_zhang_perceptual.pkl`, or a plain callable with that signature. Tests use a
tiny network of their own.

The generator's noise buffers are used as the optimisation variables (NVIDIA optimises those of a
copy); their original values are restored afterwards, so `proj.png` is rendered, as NVIDIA does,
with the network's own constant noise, exactly what `generate --projected-w` will reproduce.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from sg2ada.data import images
from sg2ada.errors import UserError


@dataclasses.dataclass
class ProjectionResult:
    w_steps: np.ndarray  # [num_steps, w_dim] optimised w after each step
    dists: np.ndarray  # [num_steps] perceptual distance in each step (before its update)
    losses: np.ndarray  # [num_steps] total loss
    noise: dict  # optimised noise buffers {TF1 name: [1, 1, H, W]}
    num_ws: int
    seconds: float

    @property
    def w(self) -> np.ndarray:
        """The projection in NVIDIA's projected_w.npz layout: [1, num_ws, w_dim]."""
        return np.tile(self.w_steps[-1][None, None, :], [1, self.num_ws, 1]).astype(np.float32)

    def ws_at(self, step: int) -> np.ndarray:
        return np.tile(self.w_steps[step][None, None, :], [1, self.num_ws, 1]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Inputs


def load_target(path: str, resolution: int, channels: int = 3) -> np.ndarray:
    """The target image as uint8 [res, res, channels]: upright (EXIF), centre-cropped to a square,
    then resized with Lanczos (as NVIDIA's projector prepares it). Decoded by the dataset tool's
    decoder, so a very large photo is decoded downscaled and a decompression bomb is refused."""
    import PIL.Image

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file; pass --target an image (PNG, JPEG, ...)")
    try:
        with open(path, "rb") as f:
            im = images.open_image(f.read(), keep_side=resolution)
        im = im.convert("RGB" if channels == 3 else "L")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); check the file and its permissions") from None
    except (images.SkipImage, ValueError) as e:
        raise UserError(f"{path}: not a readable image: {e}; pass --target a PNG or JPEG") from None
    w, h = im.size
    if min(w, h) < 1:
        raise UserError(f"{path}: empty image")
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    im = im.resize((resolution, resolution), PIL.Image.LANCZOS)
    arr = np.array(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def load_feature_net(path: str | None = None):
    """The LPIPS/VGG16 network from `path` (NVIDIA's vgg16_zhang_perceptual.pkl), or found by
    sg2ada.metrics (environment variable SG2ADA_LPIPS, cache, download unless SG2ADA_OFFLINE=1)."""
    from sg2ada.metrics import feature_nets

    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"--feature-net {path}: no such file; pass NVIDIA's vgg16_zhang_perceptual.pkl")
        return feature_nets.VGG16(path, lpips=True, resize=0)
    return feature_nets.get_feature_net("lpips")


def distance_fn(feature_net):
    fn = getattr(feature_net, "lpips", None)
    if fn is None:
        if not callable(feature_net):
            raise TypeError("feature_net must have an lpips(img0, img1) method or be callable")
        fn = feature_net
    return fn


# ---------------------------------------------------------------------------------------------------
# Schedules (pure functions, tested against NVIDIA's numbers)


def learning_rate(step: int, num_steps: int, initial_learning_rate=0.1, lr_rampdown_length=0.25,
                  lr_rampup_length=0.05) -> float:
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
    ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
    ramp = ramp * min(1.0, t / lr_rampup_length)
    return float(initial_learning_rate * ramp)


def w_noise_scale(step: int, num_steps: int, w_std: float, initial_noise_factor=0.05, noise_ramp_length=0.75) -> float:
    t = step / num_steps
    return float(w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2)


def noise_regularization(noise_maps):
    """Sum over buffers and pyramid levels of squared one-pixel-shift autocorrelations ([1,1,H,W] each)."""
    import tensorflow as tf

    reg = 0.0
    for v in noise_maps:
        n = tf.reshape(tf.convert_to_tensor(v), [1, v.shape[-2], v.shape[-1], 1])
        while True:
            reg += tf.square(tf.reduce_mean(n * tf.roll(n, shift=1, axis=2)))
            reg += tf.square(tf.reduce_mean(n * tf.roll(n, shift=1, axis=1)))
            if n.shape[1] <= 8:
                break
            n = tf.nn.avg_pool2d(n, 2, 2, "VALID")
    return reg


def downsample_to_256(images):
    """Box-filter NHWC images larger than 256x256 down to 256x256 (NVIDIA: area interpolation)."""
    import tensorflow as tf

    size = images.shape[1]
    if size is None or size <= 256:
        return images
    factor = size // 256
    return tf.nn.avg_pool2d(images, factor, factor, "VALID")


def w_stats(G, w_avg_samples=10000, batch=1000):
    """Mean w [1, w_dim] of `w_avg_samples` latents from RandomState(123), and NVIDIA's w_std."""
    z = np.random.RandomState(123).randn(w_avg_samples, G.z_dim).astype(np.float32)
    ws = []
    for i in range(0, w_avg_samples, batch):
        zb = z[i:i + batch]
        # NVIDIA passes no labels (c=None); for a conditional network that means all-zero labels.
        cb = None if G.c_dim == 0 else np.zeros([zb.shape[0], G.c_dim], np.float32)
        ws.append(np.asarray(G.mapping(zb, cb))[:, 0, :])
    w = np.concatenate(ws, 0).astype(np.float32)
    w_avg = w.mean(0, keepdims=True)
    w_std = float((np.sum((w - w_avg) ** 2) / w_avg_samples) ** 0.5)
    return w_avg, w_std


# ---------------------------------------------------------------------------------------------------


def noise_buffers(G) -> dict:
    """TF1 name -> the synthesis layer's constant noise variable ([1, 1, H, W])."""
    return {f"noise{layer.noise_index}": layer.noise_const for layer in G.synthesis.noise_layers() if layer.use_noise}


def project(G, target, *, feature_net, num_steps=1000, w_avg_samples=10000, initial_learning_rate=0.1,
            initial_noise_factor=0.05, lr_rampdown_length=0.25, lr_rampup_length=0.05, noise_ramp_length=0.75,
            regularize_noise_weight=1e5, seed=303, progress=None) -> ProjectionResult:
    """Project `target` (uint8 or float [H, W, C] in [0, 255], H = W = G's resolution) into W.
    `progress(step, num_steps, dist, loss)` is called after every step."""
    import tensorflow as tf

    target = np.asarray(target, np.float32)
    res, ch = G.img_resolution, G.img_channels
    if target.shape != (res, res, ch):
        raise ValueError(f"target must have shape [{res}, {res}, {ch}], got {list(target.shape)}")
    if num_steps < 1:
        raise UserError(f"--num-steps {num_steps}: must be at least 1")
    start = time.perf_counter()
    distance = distance_fn(feature_net)

    w_avg, w_std = w_stats(G, w_avg_samples)
    target_t = downsample_to_256(tf.constant(target[None]))

    def rgb(x):  # VGG wants 3 channels
        return tf.tile(x, [1, 1, 1, 3]) if ch == 1 else x

    target_t = rgb(target_t)

    bufs = noise_buffers(G)
    originals = {k: np.array(v.numpy()) for k, v in bufs.items()}
    rng = np.random.RandomState(seed)
    for v in bufs.values():
        v.assign(rng.randn(*v.shape).astype(np.float32))
    noise_vars = [v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v for v in bufs.values()]

    w_opt = tf.Variable(w_avg[None], dtype=tf.float32, name="w_opt")  # [1, 1, w_dim]
    params = [w_opt] + noise_vars
    m = [tf.Variable(tf.zeros_like(p)) for p in params]
    v2 = [tf.Variable(tf.zeros_like(p)) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    num_ws = G.num_ws

    @tf.function
    def train_step(step, lr, noise_scale):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            w_noise = tf.random.stateless_normal(tf.shape(w_opt), seed=tf.stack([tf.cast(seed, tf.int32), step]))
            ws = tf.tile(w_opt + w_noise * noise_scale, [1, num_ws, 1])
            synth = G.synthesis(ws, noise_mode="const", force_fp32=True, fused_modconv=False)
            synth = downsample_to_256((synth + 1) * (255 / 2))
            dist = tf.reduce_sum(distance(rgb(synth), target_t))
            reg = noise_regularization(noise_vars)
            loss = dist + reg * regularize_noise_weight
        grads = tape.gradient(loss, params)
        t = tf.cast(step + 1, tf.float32)
        bc1 = 1 - tf.pow(beta1, t)
        bc2 = 1 - tf.pow(beta2, t)
        for p, g, mm, vv in zip(params, grads, m, v2):
            if g is None:
                continue
            mm.assign(beta1 * mm + (1 - beta1) * g)
            vv.assign(beta2 * vv + (1 - beta2) * tf.square(g))
            p.assign_sub((lr / bc1) * mm / (tf.sqrt(vv) / tf.sqrt(bc2) + eps))
        for nv in noise_vars:
            centred = nv - tf.reduce_mean(nv)
            nv.assign(centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred))))
        return dist, loss

    w_steps = np.zeros([num_steps, G.w_dim], np.float32)
    dists = np.zeros([num_steps], np.float64)
    losses = np.zeros([num_steps], np.float64)
    try:
        for step in range(num_steps):
            lr = learning_rate(step, num_steps, initial_learning_rate, lr_rampdown_length, lr_rampup_length)
            scale = w_noise_scale(step, num_steps, w_std, initial_noise_factor, noise_ramp_length)
            dist, loss = train_step(tf.constant(step, tf.int32), tf.constant(lr, tf.float32),
                                    tf.constant(scale, tf.float32))
            dists[step], losses[step] = float(dist), float(loss)
            w_steps[step] = w_opt.numpy()[0, 0]
            if progress is not None:
                progress(step + 1, num_steps, dists[step], losses[step])
        noise = {k: np.array(v.numpy()) for k, v in bufs.items()}
    finally:
        for k, v in bufs.items():
            v.assign(originals[k])
    return ProjectionResult(w_steps=w_steps, dists=dists, losses=losses, noise=noise, num_ws=num_ws,
                            seconds=time.perf_counter() - start)


def perceptual_distance(G, ws, target, feature_net, noise_mode="const") -> float:
    """LPIPS distance between G.synthesis(ws) (ws [1, num_ws, w_dim]) and the uint8 target, measured
    as the projector measures it (for reporting and tests)."""
    import tensorflow as tf

    distance = distance_fn(feature_net)
    img = G.synthesis(tf.constant(np.asarray(ws, np.float32)), noise_mode=noise_mode, force_fp32=True)
    img = downsample_to_256((img + 1) * (255 / 2))
    tgt = downsample_to_256(tf.constant(np.asarray(target, np.float32)[None]))
    if G.img_channels == 1:
        img, tgt = tf.tile(img, [1, 1, 1, 3]), tf.tile(tgt, [1, 1, 1, 3])
    return float(tf.reduce_sum(distance(img, tgt)))


def synth_uint8(G, ws) -> np.ndarray:
    """The projector's rendering of ws: const noise, `(x + 1) * 127.5` clipped and truncated (NVIDIA)."""
    img = np.asarray(G.synthesis(np.asarray(ws, np.float32), noise_mode="const", force_fp32=True))
    return np.clip((img + 1) * (255 / 2), 0, 255).astype(np.uint8)


__all__ = [
    "ProjectionResult",
    "downsample_to_256",
    "learning_rate",
    "load_feature_net",
    "load_target",
    "noise_buffers",
    "noise_regularization",
    "perceptual_distance",
    "project",
    "synth_uint8",
    "w_noise_scale",
    "w_stats",
]
