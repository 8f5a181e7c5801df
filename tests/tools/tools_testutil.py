"""Helpers for the tool tests: tiny generators saved as snapshots, a tiny LPIPS-style feature
network standing in for NVIDIA's VGG16 (the projector only needs `lpips(img0, img1) -> [N]`), and a
runner for exported .tflite files."""

from __future__ import annotations

import numpy as np


def tiny_config(c_dim=0, res=16, z_dim=16, channels=3):
    from sg2ada.networks.config import GeneratorConfig, MappingConfig

    return GeneratorConfig(z_dim=z_dim, w_dim=z_dim, c_dim=c_dim, img_resolution=res, img_channels=channels,
                           channel_base=128, channel_max=16, mapping=MappingConfig(num_layers=2))


def tiny_generator(seed=0, noise_strength=0.3, **kw):
    """A tiny G_ema whose biases, noise strengths and w_avg are non-zero, so every input matters.
    Deterministic for a seed (Keras initialisers draw from the global seed, which we set)."""
    import keras

    from sg2ada.networks.generator import Generator

    keras.utils.set_random_seed(seed)
    G = Generator(tiny_config(**kw), name="G_ema")
    rng = np.random.default_rng(seed)
    for name, var in G.named_variables().items():
        if name.endswith(("bias", "dlatent_avg")):
            var.assign(rng.normal(0, 0.3, var.shape).astype(np.float32))
        elif name.endswith("noise_strength"):
            var.assign(rng.normal(0, noise_strength, var.shape).astype(np.float32))
    return G


def save_tiny_snapshot(path, seed=0, **kw):
    from sg2ada.networks.snapshot import save_snapshot

    G = tiny_generator(seed, **kw)
    save_snapshot(path, None, None, G, source="test")
    return G


class TinyLPIPS:
    """LPIPS in miniature (Zhang et al. 2018): two random conv+ReLU stages, unit-normalised channels,
    squared differences weighted per channel, averaged over space, summed over stages."""

    def __init__(self, seed=0, channels=(8, 16)):
        import tensorflow as tf

        rng = np.random.RandomState(seed)
        self.kernels, self.lin = [], []
        cin = 3
        for cout in channels:
            self.kernels.append(tf.constant((rng.randn(3, 3, cin, cout) * np.sqrt(2 / (9 * cin))).astype(np.float32)))
            self.lin.append(tf.constant(np.abs(rng.randn(cout)).astype(np.float32)))
            cin = cout
        self.calls = 0

    def lpips(self, img0, img1):
        import tensorflow as tf

        self.calls += 1
        n = tf.shape(img0)[0]
        x = tf.concat([img0, img1], 0) / 127.5 - 1
        dist = 0.0
        for i, (k, lin) in enumerate(zip(self.kernels, self.lin)):
            x = tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME"))
            f = x / (tf.sqrt(tf.reduce_sum(tf.square(x), -1, keepdims=True)) + 1e-10)
            dist += tf.reduce_mean(tf.reduce_sum(tf.square(f[:n] - f[n:]) * lin, -1), [1, 2])
            if i + 1 < len(self.kernels):
                x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        return dist


def run_tflite(path: str, signature: str, **inputs) -> dict:
    """Run one signature of a .tflite file: inputs by name -> outputs by name."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=path)
    keys = list(interp.get_signature_list())
    # The converter may name a tf.function's signature "signature_wrapper_<name>".
    key = next((k for k in keys if k in (signature, f"signature_wrapper_{signature}")), None)
    if key is None:
        raise KeyError(f"no TFLite signature {signature!r} (have {keys})")
    runner = interp.get_signature_runner(key)
    return {k: np.asarray(v) for k, v in runner(**{k: np.asarray(v) for k, v in inputs.items()}).items()}
