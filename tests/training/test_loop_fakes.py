"""A fake Trainer with the real Trainer's interface, for testing the loop, checkpoints and signals
without the networks; also runnable as a script (`python test_loop_fakes.py RUN_DIR ...`) so the
kill/resume tests can SIGKILL or SIGTERM a real training process.

The fake is deterministic given its checkpointed state: its "networks" are a few variables updated
from the input batches and a stateful tf.random.Generator, with a Keras Adam optimizer, so restoring
a checkpoint must bring back every piece (weights, optimizer slots, RNG, cur_nimg, p, data position)
for a resumed run to end bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

RES = 8
Z_DIM = 4


class FakeG:
    """Stands in for G/G_ema: images = tanh(z @ W) reshaped, plus mapping/synthesis halves."""

    img_resolution = RES
    img_channels = 3
    z_dim = Z_DIM

    def __init__(self, w):
        self.w = w

    def mapping(self, z, c=None):
        import tensorflow as tf

        return tf.matmul(z, self.w)[:, None, :]

    def synthesis(self, ws, noise_mode="const"):
        import tensorflow as tf

        return tf.reshape(tf.tanh(ws[:, 0, :]), [-1, RES, RES, 3])

    def __call__(self, z, c=None, noise_mode="const"):
        return self.synthesis(self.mapping(z, c), noise_mode=noise_mode)


class FakeTrainer:
    """Trainer protocol: build(), step(it) -> stats, cur_nimg, augment_p, checkpoint_items(), G, D, G_ema."""

    def __init__(self, batch=4, seed=0, nan_at_nimg=None, step_sec=0.0):
        import keras
        import tensorflow as tf

        self.batch = batch
        self.nan_at_nimg = nan_at_nimg
        self.step_sec = step_sec
        init = np.random.RandomState(seed).standard_normal([Z_DIM, RES * RES * 3]).astype(np.float32) * 0.1
        self.w = tf.Variable(init, name="G_w")
        self.w_ema = tf.Variable(init, name="G_ema_w")
        self.d = tf.Variable(tf.zeros([RES * RES * 3]), name="D_w")
        self.cur_nimg = tf.Variable(0, dtype=tf.int64, name="cur_nimg")
        self.augment_p = tf.Variable(0.0, dtype=tf.float32, name="augment_p")
        self.rng = tf.random.Generator.from_seed(seed)
        self.opt = keras.optimizers.Adam(1e-2)
        self.G, self.G_ema, self.D = FakeG(self.w), FakeG(self.w_ema), FakeG(self.d)
        self.built = False

    def build(self):
        self.opt.build([self.w, self.d])
        self.built = True

    def checkpoint_items(self):
        return {"G": self.w, "G_ema": self.w_ema, "D": self.d, "opt": self.opt, "cur_nimg": self.cur_nimg,
                "augment_p": self.augment_p, "rng": self.rng}

    def step(self, data_iter):
        import tensorflow as tf

        assert self.built, "build() must come before step()"
        real = tf.reshape(tf.cast(next(data_iter), tf.float32), [self.batch, -1])
        z = self.rng.normal([self.batch, Z_DIM])
        with tf.GradientTape() as tape:
            fake = tf.tanh(z @ self.w)
            g_loss = tf.reduce_mean(tf.square(fake - real)) + tf.reduce_mean(tf.square(self.d))
        grads = tape.gradient(g_loss, [self.w, self.d])
        self.opt.apply_gradients(zip(grads, [self.w, self.d]))
        self.w_ema.assign(0.9 * self.w_ema + 0.1 * self.w)
        self.cur_nimg.assign_add(self.batch)
        signs = tf.reduce_mean(tf.sign(real))
        self.augment_p.assign(tf.clip_by_value(self.augment_p + 0.01 * signs, 0.0, 1.0))
        if self.nan_at_nimg is not None and int(self.cur_nimg.numpy()) >= self.nan_at_nimg:
            g_loss = g_loss * float("nan")
        if self.step_sec:
            time.sleep(self.step_sec)
        return {"Loss/G/loss": g_loss, "Loss/D/loss": -g_loss, "Loss/scores/real": tf.reduce_mean(real, axis=1),
                "Loss/signs/real": signs, "Progress/augment_raw": self.augment_p}


def fake_data_iter(batch=4, seed=0):
    """A checkpointable tf.data iterator over random 'images' (values in [-1, 1])."""
    import tensorflow as tf

    data = np.random.RandomState(seed + 1).uniform(-1, 1, [64, RES, RES, 3]).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(data).shuffle(64, seed=seed).repeat().batch(batch)
    return iter(ds)


def fake_reals(n=8):
    images = np.random.RandomState(5).uniform(-1, 1, [n, RES, RES, 3]).astype(np.float32)
    return images, np.zeros([n, 0], np.float32)


def fake_snapshot(path, trainer, settings, cur_nimg):
    """Writes the G_ema weights, like a network snapshot, atomically."""
    import shutil

    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "G_ema.npy"), trainer.w_ema.numpy())
    shutil.rmtree(path, ignore_errors=True)  # several ticks can share a kimg number when ticks are short
    os.replace(tmp, path)
    return path


def make_loop(run_dir, *, kimg, tick_kimg, snap=1, keep=3, nan_at_nimg=None, step_sec=0.0, backup_uri=None,
              batch=4, checkpoint_data=True):
    from sg2ada.training.training_loop import LoopSettings, TrainingLoop

    trainer = FakeTrainer(batch=batch, nan_at_nimg=nan_at_nimg, step_sec=step_sec)
    settings = LoopSettings(total_kimg=kimg, kimg_per_tick=tick_kimg, snap=snap, keep=keep, backup_uri=backup_uri,
                            grid_max_images=8, progress=False, checkpoint_data=checkpoint_data,
                            options={"cfg": "fake", "kimg": kimg, "batch": batch, "nested": {"a": 1}})
    return TrainingLoop(run_dir, trainer, settings, data_iter=fake_data_iter(batch), reals=fake_reals(),
                        snapshot_fn=fake_snapshot)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--kimg", type=float, default=0.2)
    ap.add_argument("--tick", type=float, default=0.02)
    ap.add_argument("--snap", type=int, default=1000)
    ap.add_argument("--step-sec", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    os.makedirs(a.run_dir, exist_ok=True)
    loop = make_loop(a.run_dir, kimg=a.kimg, tick_kimg=a.tick, snap=a.snap, step_sec=a.step_sec)
    status = loop.run(resume_from=os.path.join(a.run_dir, "checkpoints") if a.resume else None)
    np.save(os.path.join(a.run_dir, "final_G.npy"), loop.trainer.w.numpy())
    np.save(os.path.join(a.run_dir, "final_state.npy"),
            np.array([loop.trainer.cur_nimg.numpy(), loop.trainer.augment_p.numpy()], np.float64))
    return status


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
