"""Fixtures for the metric tests: small feature networks in the real files' formats, a toy generator,
and a tiny dataset. Nothing is downloaded.

- `tiny_inception`: a frozen GraphDef with the 2015-12-05 Inception graph's node names and input chain
  (`DecodeJpeg/contents` -> `DecodeJpeg` -> `Cast` -> `ExpandDims` -> `ResizeBilinear` to 299x299 ->
  `Sub` 128 -> `Mul` 1/128), a small conv with the original's `BatchNormWithGlobalNormalization`
  (GraphDef producer version 5, as an old file), `pool_3` (16 features), `pool_3/_reshape` hard-wired to
  batch 1 as in the original, and `softmax/logits/MatMul` + bias + `softmax` (10 classes); saved as
  `classify_image_graph_def.pb` and inside `inception-2015-12-05.tgz`.
- `tiny_vgg`: dnnlib TF1 network pickles (`vgg16.pkl` with fc layers, `vgg16_zhang_perceptual.pkl`
  with LPIPS `lin` weights) of a VGG16 with the real layer sequence but 4..8 channels.
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import types

import numpy as np
import pytest
from metrics_helpers import ToyGenerator  # noqa: F401 - also imported by the tests

VGG_CHANNELS = [4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]
VGG_BLOCKS = (2, 2, 3, 3, 3)


def build_inception_graph_def(num_features=16, num_classes=10, seed=0):
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    g = tf.Graph()
    with g.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        img = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        x = tf.cast(img, tf.float32, name="Cast")
        x = tf.expand_dims(x, 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, tf.constant([299, 299], name="ResizeBilinear/size"), name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1 / 128.0, name="Mul")
        k = tf.constant(rng.randn(5, 5, 3, num_features).astype(np.float32) * 0.2, name="conv/weights")
        x = tf.nn.conv2d(x, k, [1, 4, 4, 1], "VALID", name="conv/Conv2D")
        for stat, value in (("mean", rng.randn(num_features) * 0.1), ("variance", rng.uniform(0.5, 2, num_features)),
                            ("beta", rng.randn(num_features) * 0.1), ("gamma", rng.uniform(0.5, 1.5, num_features))):
            tf.constant(value.astype(np.float32), name=f"conv/batchnorm/{stat}")
        x = tf.identity(x, name="conv/batchnorm")  # becomes BatchNormWithGlobalNormalization below
        x = tf.nn.relu(x, name="conv/relu")
        pool = tf.nn.avg_pool2d(x, [1, x.shape[1], x.shape[2], 1], [1, 1, 1, 1], "VALID", name="pool_3")
        r = tf.reshape(pool, [1, num_features], name="pool_3/_reshape")
        w = tf.constant(rng.randn(num_features, num_classes).astype(np.float32), name="softmax/weights")
        b = tf.constant(rng.randn(num_classes).astype(np.float32) * 3, name="softmax/biases")
        logits = tf.nn.bias_add(tf.matmul(r, w, name="softmax/logits/MatMul"), b, name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    graph_def = g.as_graph_def()
    # The 2015 graph's batch norm op (removed from TensorFlow at GraphDef version 9) and its old
    # producer version, which TF1 adopts when importing into an empty graph.
    graph_def.versions.producer = 5
    for node in graph_def.node:
        if node.name == "conv/batchnorm":
            node.op = "BatchNormWithGlobalNormalization"
            node.input.extend([f"conv/batchnorm/{s}" for s in ("mean", "variance", "beta", "gamma")])
            node.attr["variance_epsilon"].f = 0.001
            node.attr["scale_after_normalization"].b = True
    return graph_def


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory):
    d = tmp_path_factory.mktemp("inception")
    data = build_inception_graph_def().SerializeToString()
    pb = d / "classify_image_graph_def.pb"
    pb.write_bytes(data)
    tgz = d / "inception-2015-12-05.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, payload in (("LICENSE", b"test"), ("classify_image_graph_def.pb", data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return types.SimpleNamespace(pb=str(pb), tgz=str(tgz), dir=str(d))


def _fake_dnnlib_network_class():
    """A class that pickles as `dnnlib.tflib.network.Network` with NVIDIA's state-dict layout."""
    mods = {}
    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        mods[name] = types.ModuleType(name)

    class Network:
        def __init__(self, name, variables):
            self._state = dict(
                version=4, name=name, static_kwargs={}, components={},
                build_module_src="import os\nos.system('echo pwned')\n", build_func_name="vgg16",
                variables=variables,
            )

        def __getstate__(self):
            return self._state

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    mods["dnnlib.tflib.network"].Network = Network
    return Network, mods


def make_vgg_variables(seed=0, fc=True, lpips=True, fc_dims=(16, 16, 10)):
    rng = np.random.RandomState(seed)
    variables = []
    cin = 3
    i = 0
    for block, n in enumerate(VGG_BLOCKS):
        for j in range(n):
            cout = VGG_CHANNELS[i]
            w = rng.randn(3, 3, cin, cout).astype(np.float32) * np.sqrt(2.0 / (9 * cin))
            variables.append((f"conv{block + 1}_{j + 1}/weight", w))
            variables.append((f"conv{block + 1}_{j + 1}/bias", (rng.randn(cout) * 0.1).astype(np.float32)))
            cin = cout
            i += 1
    if fc:
        fin = cin * 7 * 7
        for k, fout in enumerate(fc_dims):
            variables.append((f"fc{k + 1}/weight", (rng.randn(fin, fout) / np.sqrt(fin)).astype(np.float32)))
            variables.append((f"fc{k + 1}/bias", (rng.randn(fout) * 0.1).astype(np.float32)))
            fin = fout
    if lpips:
        for k, ch in enumerate([VGG_CHANNELS[1], VGG_CHANNELS[3], VGG_CHANNELS[6], VGG_CHANNELS[9], VGG_CHANNELS[12]]):
            variables.append((f"lin{k}/weight", np.abs(rng.randn(1, 1, ch, 1)).astype(np.float32)))
    return variables


def write_dnnlib_pickle(path, name, variables):
    Network, mods = _fake_dnnlib_network_class()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        with open(path, "wb") as f:
            pickle.dump(Network(name, variables), f, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture(scope="session")
def tiny_vgg(tmp_path_factory):
    d = tmp_path_factory.mktemp("vgg")
    vgg_vars = make_vgg_variables(seed=1, fc=True, lpips=False)
    lpips_vars = make_vgg_variables(seed=2, fc=False, lpips=True)
    write_dnnlib_pickle(d / "vgg16.pkl", "vgg16", vgg_vars)
    write_dnnlib_pickle(d / "vgg16_zhang_perceptual.pkl", "vgg16_perceptual_distance", lpips_vars)
    return types.SimpleNamespace(
        vgg16=str(d / "vgg16.pkl"), lpips=str(d / "vgg16_zhang_perceptual.pkl"), dir=str(d),
        vgg16_vars=dict(vgg_vars), lpips_vars=dict(lpips_vars),
    )


@pytest.fixture
def toy_G():
    return ToyGenerator()


@pytest.fixture
def npz_dataset(tmp_path):
    rng = np.random.RandomState(5)
    images = rng.randint(0, 256, size=(40, 16, 16, 3)).astype(np.uint8)
    path = tmp_path / "toyset.npz"
    np.savez(path, images=images)
    return path


@pytest.fixture
def metric_env(tmp_path, monkeypatch, tiny_inception, tiny_vgg):
    """Isolated cache, offline, feature networks given as paths."""
    monkeypatch.setenv("SG2ADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    for var in ("SG2ADA_INCEPTION", "SG2ADA_VGG16", "SG2ADA_LPIPS"):
        monkeypatch.delenv(var, raising=False)
    return types.SimpleNamespace(feature_net=[tiny_inception.tgz, tiny_vgg.vgg16, tiny_vgg.lpips], cache=tmp_path / "cache")
