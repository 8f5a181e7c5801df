"""Test doubles for the metric tests (a uniquely named module, so `import` finds it whatever other
test directories hold): a toy generator with the Generator's call signatures, and a DatasetSource over
an .npz file."""

from __future__ import annotations

import numpy as np


class ToyGenerator:
    """Stands in for sg2ada.networks.Generator: same call signatures, NHWC output in [-1,1]."""

    def __init__(self, z_dim=8, c_dim=0, resolution=16, channels=3, num_ws=4, seed=0, ignore_w=False):
        import tensorflow as tf

        rng = np.random.RandomState(seed)
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, z_dim, num_ws
        self.img_resolution, self.img_channels = resolution, channels
        self.A = tf.constant((rng.randn(z_dim + c_dim, z_dim) / np.sqrt(z_dim)).astype(np.float32))
        self.B = tf.constant((rng.randn(z_dim, resolution * resolution * channels) / np.sqrt(z_dim)).astype(np.float32))
        self.ignore_w = ignore_w
        self.calls = 0

    def mapping(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_w_avg=False):
        import tensorflow as tf

        x = z if self.c_dim == 0 else tf.concat([z, c], 1)
        w = tf.tanh(tf.matmul(x, self.A))
        return tf.tile(w[:, None, :], [1, self.num_ws, 1])

    def synthesis(self, ws, noise_mode="random", noise_seed=None, force_fp32=False):
        import tensorflow as tf

        self.calls += 1
        w = ws[:, 0]
        if self.ignore_w:
            w = tf.zeros_like(w) + 0.3
        img = tf.tanh(tf.matmul(w, self.B) * 2)
        return tf.reshape(img, [-1, self.img_resolution, self.img_resolution, self.img_channels])

    def __call__(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode="random", noise_seed=None):
        return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode=noise_mode, noise_seed=noise_seed)


class NpzSource:
    """A DatasetSource over an .npz file holding uint8 `images` [N,H,W,C] and optional `labels`."""

    @staticmethod
    def make(path):
        from sg2ada.metrics import DatasetSource

        class _Src(DatasetSource):
            reads = 0

            def _batches(self, batch_size):
                type(self).reads += 1
                with np.load(self.path) as a:
                    images = a["images"]
                    labels = a["labels"] if "labels" in a else np.zeros([len(images), 0], np.float32)
                for i in range(0, len(images), batch_size):
                    yield images[i : i + batch_size], labels[i : i + batch_size]

        return _Src(str(path))
