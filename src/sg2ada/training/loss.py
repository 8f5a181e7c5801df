"""StyleGAN2-ADA losses: non-saturating logistic GAN loss, R1 and path-length regularisation,
style mixing, with reals and fakes passed through the augmentation pipe before D.

Karras et al. 2020 "Analyzing and Improving the Image Quality of StyleGAN" (R1 gamma/2, lazy
regularisation, path-length regularisation with pl_batch_shrink and an EMA `pl_mean`), Karras et
al. 2020 "Training GANs with Limited Data" (every image D sees is augmented, and G's gradient flows
through the pipe). Behaviour follows stylegan2-ada-pytorch `training/loss.py: StyleGAN2Loss`: the
phases `Gmain`, `Greg`, `Dmain`, `Dreg` (and `Gboth`/`Dboth` when the lazy interval is None).

All functions here are per-replica and traceable under `tf.function(jit_compile=True)`; they
return *per-sample* terms and leave reduction (division by the global batch) and the gain of lazy
regularisation to the caller, the Trainer.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def r1_penalty(D_fn, real_img, real_c):
    """Per-sample R1 penalty `sum((d sum(D(x)) / dx)^2)` and the logits, x being the image fed to
    `D_fn` (which may augment). Call inside an outer GradientTape to differentiate the penalty
    (the inner tape is second-order-differentiable)."""
    real_img = tf.convert_to_tensor(real_img)
    with tf.GradientTape() as tape:
        tape.watch(real_img)
        logits = D_fn(real_img, real_c)
        total = tf.reduce_sum(tf.cast(logits, tf.float32))
    grads = tape.gradient(total, real_img)
    return tf.reduce_sum(tf.square(tf.cast(grads, tf.float32)), axis=[1, 2, 3]), logits


def path_lengths(synthesis_fn, ws, pl_noise):
    """Per-sample path lengths `sqrt(mean_ws(sum_w(g^2)))`, `g = d sum(img * pl_noise) / d ws`, and
    the image. `pl_noise` is already scaled by 1/sqrt(H*W) (NVIDIA's normalisation)."""
    ws = tf.convert_to_tensor(ws)
    with tf.GradientTape() as tape:
        tape.watch(ws)
        img = tf.cast(synthesis_fn(ws), tf.float32)
        total = tf.reduce_sum(img * tf.cast(pl_noise, tf.float32))
    g = tf.cast(tape.gradient(total, ws), tf.float32)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(g), axis=2), axis=1)), img


def pl_noise_scale(img_shape) -> float:
    """NVIDIA divides the path-length probe noise by sqrt(H*W) so lengths do not grow with resolution."""
    return 1.0 / float(np.sqrt(img_shape[1] * img_shape[2]))


def mix_styles(ws, ws2, cutoff):
    """Style mixing: layers >= cutoff take their w from the second latent (cutoff == num_ws: none)."""
    idx = tf.range(tf.shape(ws)[1])[tf.newaxis, :, tf.newaxis]
    return tf.where(idx < cutoff, ws, ws2)


class StyleGAN2Loss:
    """The loss terms of one accumulation round on one replica.

    `augment(img, seed)` is the pipe (or None); `noise_seed`s make G's noise inputs stateless.
    Methods return dicts of per-sample tensors; `loss` entries are what is differentiated (before the
    caller's `gain / global_count` scaling).
    """

    def __init__(self, G, D, augment=None, r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=2.0):
        self.G = G
        self.D = D
        self.augment = augment
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)

    # ---- network passes ----
    def run_G(self, z, c, mix_z=None, cutoff=None, noise_seed=None):
        """Returns (img float32 NHWC, ws, w) where w is the un-mixed mapping output [N, w_dim]."""
        ws = self.G.mapping(z, c)
        w = ws[:, 0]
        if self.style_mixing_prob > 0 and mix_z is not None:
            ws2 = self.G.mapping(mix_z, c)
            ws = mix_styles(ws, ws2, cutoff)
        img = self.G.synthesis(ws, noise_mode="random", noise_seed=noise_seed, training=True)
        return tf.cast(img, tf.float32), ws, w

    def run_D(self, img, c, aug_seed=None):
        if self.augment is not None:
            img = self.augment(img, aug_seed)
        return tf.cast(self.D(img, c), tf.float32)

    # ---- phases ----
    def G_main(self, z, c, mix_z, cutoff, noise_seed, aug_seed):
        img, _ws, w = self.run_G(z, c, mix_z, cutoff, noise_seed)
        logits = self.run_D(img, c, aug_seed)
        loss = tf.nn.softplus(-logits[:, 0])  # -log(sigmoid(logits))
        return {"loss": loss, "Loss/G/loss": loss, "Loss/scores/fake": logits[:, 0],
                "Loss/signs/fake": tf.sign(logits[:, 0]), "w": w}

    def G_pl_lengths(self, z, c, mix_z, cutoff, noise_seed, pl_noise):
        """Path lengths of the (already shrunk) batch; the penalty needs pl_mean (see G_pl)."""
        def synth(ws):
            return self.G.synthesis(ws, noise_mode="random", noise_seed=noise_seed, training=True)
        ws = self.G.mapping(z, c)
        if self.style_mixing_prob > 0 and mix_z is not None:
            ws = mix_styles(ws, self.G.mapping(mix_z, c), cutoff)
        lengths, img = path_lengths(synth, ws, pl_noise)
        return lengths, img

    def G_pl(self, lengths, pl_mean_new):
        penalty = tf.square(lengths - tf.stop_gradient(pl_mean_new))
        loss = penalty * self.pl_weight
        return {"loss": loss, "Loss/pl_penalty": penalty, "Loss/G/reg": loss}

    def D_gen(self, z, c, mix_z, cutoff, noise_seed, aug_seed):
        img, _, _ = self.run_G(z, c, mix_z, cutoff, noise_seed)
        logits = self.run_D(tf.stop_gradient(img), c, aug_seed)
        loss = tf.nn.softplus(logits[:, 0])  # -log(1 - sigmoid(logits))
        return {"loss": loss, "Loss/scores/fake": logits[:, 0], "Loss/signs/fake": tf.sign(logits[:, 0])}

    def D_real(self, real_img, real_c, aug_seed, do_main, do_r1):
        if do_r1:
            r1, logits = r1_penalty(lambda x, c: self.run_D(x, c, aug_seed), real_img, real_c)
        else:
            logits = self.run_D(real_img, real_c, aug_seed)
        logits = logits[:, 0]
        out = {"Loss/scores/real": logits, "Loss/signs/real": tf.sign(logits)}
        loss = tf.zeros_like(logits)
        if do_main:
            loss_real = tf.nn.softplus(-logits)
            out["loss_Dreal"] = loss_real
            loss += loss_real
        if do_r1:
            loss_r1 = r1 * (self.r1_gamma / 2)
            out["Loss/r1_penalty"] = r1
            out["Loss/D/reg"] = loss_r1
            loss += loss_r1
        out["loss"] = loss
        return out
