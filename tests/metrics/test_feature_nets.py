"""Feature networks: the Inception GraphDef import (batched, same tensors as the TF1 way of feeding
it), the VGG16/LPIPS rebuild from dnnlib pickles (against a NumPy implementation), the restricted
unpickler, file resolution, download-and-verify, and the one-line error when a file is missing."""

from __future__ import annotations

import io
import os
import pickle
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.errors import UserError
from sg2ada.metrics import feature_nets as fn
from sg2ada.legacy.tf1_pickle import read_tf1_network


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SG2ADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    for var in ("SG2ADA_INCEPTION", "SG2ADA_VGG16", "SG2ADA_LPIPS"):
        monkeypatch.delenv(var, raising=False)
    fn._LOADED.clear()


def _tf1_pool3_one_by_one(pb_path, images):
    """The TTUR way: a TF1 session on the imported graph, one image at a time into ExpandDims:0."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(open(pb_path, "rb").read())
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    out_pool, out_soft = [], []
    with tf.compat.v1.Session(graph=g) as sess:
        for img in images:
            pool, soft = sess.run(["pool_3:0", "softmax:0"], {"ExpandDims:0": img[None].astype(np.float32)})
            out_pool.append(pool.reshape(-1))
            out_soft.append(soft.reshape(-1))
    return np.stack(out_pool), np.stack(out_soft), graph_def


def test_inception_batched_features_match_graph_fed_one_by_one(tiny_inception):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(5, 24, 24, 3)).astype(np.uint8)
    want_pool, want_softmax_with_bias, graph_def = _tf1_pool3_one_by_one(tiny_inception.pb, images)
    for path in (tiny_inception.tgz, tiny_inception.pb):
        net = fn.InceptionV3(path)
        feats, probs = (t.numpy() for t in net.features_and_probabilities(images))
        assert feats.shape == (5, 16) and net.num_features == 16 and net.num_classes == 10
        np.testing.assert_allclose(feats, want_pool, rtol=1e-5, atol=1e-5)
        # IS probabilities: softmax of pool_3 @ W with no output bias.
        w = tf.make_ndarray([n for n in graph_def.node if n.name == "softmax/weights"][0].attr["value"].tensor)
        logits = want_pool.astype(np.float64) @ w
        want = np.exp(logits - logits.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-6)
        assert not np.allclose(probs, want_softmax_with_bias, atol=1e-3)  # the bias really is left out


def test_inception_grayscale_is_repeated_to_rgb(tiny_inception):
    net = fn.InceptionV3(tiny_inception.pb)
    gray = np.random.RandomState(1).randint(0, 256, size=(2, 20, 20, 1)).astype(np.uint8)
    np.testing.assert_allclose(net.features(gray).numpy(), net.features(np.tile(gray, [1, 1, 1, 3])).numpy(), rtol=1e-6)


def test_inception_wrong_graph_is_a_user_error(tmp_path):
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, 3], name="input")
    path = tmp_path / "classify_image_graph_def.pb"
    path.write_bytes(g.as_graph_def().SerializeToString())
    with pytest.raises(UserError, match="ExpandDims"):
        fn.InceptionV3(str(path))
    bad = tmp_path / "garbage.pb"
    bad.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(UserError):
        fn.InceptionV3(str(bad))


# ---- VGG16 / LPIPS ------------------------------------------------------------------------------

def _np_conv3x3_relu(x, w, b):
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.stack([xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)], axis=3)  # N,H,W,9,C
    out = np.einsum("nhwkc,kco->nhwo", cols, w.reshape(9, c, -1)) + b
    return np.maximum(out, 0)


def _np_vgg_taps(x, variables):
    conv = [(variables[f"conv{b + 1}_{j + 1}/weight"], variables[f"conv{b + 1}_{j + 1}/bias"])
            for b, n in enumerate((2, 2, 3, 3, 3)) for j in range(n)]
    x = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    taps, i = [], 0
    for n in (2, 2, 3, 3, 3):
        for _ in range(n):
            x = _np_conv3x3_relu(x, *conv[i])
            i += 1
        taps.append(x)
        nb, h, w, c = x.shape
        x = x.reshape(nb, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    return taps, x


def _np_lpips(a, b, variables):
    ta, _ = _np_vgg_taps(a, variables)
    tb, _ = _np_vgg_taps(b, variables)
    total = 0
    for k, (fa, fb) in enumerate(zip(ta, tb)):
        fa = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        fb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        lin = variables[f"lin{k}/weight"].reshape(-1)
        total = total + (((fa - fb) ** 2) * lin).sum(-1).mean(axis=(1, 2))
    return total


def test_lpips_matches_numpy_reference(tiny_vgg):
    net = fn.VGG16(tiny_vgg.lpips, lpips=True, resize=0)
    rng = np.random.RandomState(2)
    a = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.randn(*a.shape) * 20, 0, 255).astype(np.float32)
    got = net.lpips(a, b).numpy()
    np.testing.assert_allclose(got, _np_lpips(a.astype(np.float64), b.astype(np.float64), tiny_vgg.lpips_vars), rtol=1e-4)
    assert np.all(got > 0)
    np.testing.assert_allclose(net.lpips(a, a).numpy(), 0, atol=1e-7)
    np.testing.assert_allclose(net.lpips(b, a).numpy(), got, rtol=1e-5)


def test_vgg16_features_match_numpy_reference(tiny_vgg):
    net = fn.VGG16(tiny_vgg.vgg16, fc=True)
    assert net.num_features == 16
    rng = np.random.RandomState(3)
    images = rng.randint(0, 256, size=(2, 224, 224, 3)).astype(np.uint8)  # already 224: resize is identity
    got = net.features(images).numpy()
    v = tiny_vgg.vgg16_vars
    _, pool5 = _np_vgg_taps(images.astype(np.float64), v)
    x = pool5.transpose(0, 3, 1, 2).reshape(2, -1)  # NCHW flatten, as the TF1 network
    x = np.maximum(x @ v["fc1/weight"] + v["fc1/bias"], 0)
    x = np.maximum(x @ v["fc2/weight"] + v["fc2/bias"], 0)
    np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-5)
    small = net.features(images[:, ::7, ::7]).numpy()  # 32x32 input: resized to 224 first
    assert small.shape == (2, 16) and np.all(np.isfinite(small))


def test_vgg_pickle_without_lpips_weights_is_a_user_error(tiny_vgg):
    with pytest.raises(UserError, match="vgg16_zhang_perceptual"):
        fn.VGG16(tiny_vgg.vgg16, lpips=True)
    with pytest.raises(UserError, match="vgg16.pkl"):
        fn.VGG16(tiny_vgg.lpips, fc=True)


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="refusing"):
        read_tf1_network(str(path))


def test_tf1_pickle_keeps_build_source_as_text(tiny_vgg):
    net = read_tf1_network(tiny_vgg.lpips)
    assert "os.system" in net.state["build_module_src"]  # read, never executed
    assert list(net.collect_variables())[0] == "conv1_1/weight"


# ---- resolution, download, offline -------------------------------------------------------------

def test_missing_feature_net_offline_gives_one_clear_line(tmp_path):
    with pytest.raises(UserError) as e:
        fn.resolve_feature_net_path("inception")
    msg = str(e.value)
    assert "\n" not in msg
    assert "inception-2015-12-05.tgz" in msg and "download.tensorflow.org" in msg
    assert os.path.join(str(tmp_path / "cache"), "feature-nets") in msg and "--feature-net" in msg and "SG2ADA_INCEPTION" in msg


def test_missing_file_given_by_user(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        fn.resolve_feature_net_path("inception", [str(tmp_path / "nope" / "inception-2015-12-05.tgz")])


def test_resolution_order(tiny_inception, tiny_vgg, tmp_path, monkeypatch):
    assert fn.resolve_feature_net_path("inception", [tiny_inception.tgz]) == tiny_inception.tgz
    assert fn.resolve_feature_net_path("inception", [tiny_inception.dir]).endswith("inception-2015-12-05.tgz")
    assert fn.resolve_feature_net_path("lpips", [tiny_vgg.dir]) == os.path.join(tiny_vgg.dir, "vgg16_zhang_perceptual.pkl")
    assert fn.resolve_feature_net_path("vgg16", [tiny_vgg.vgg16, tiny_vgg.lpips]) == tiny_vgg.vgg16
    monkeypatch.setenv("SG2ADA_LPIPS", tiny_vgg.lpips)
    assert fn.resolve_feature_net_path("lpips") == tiny_vgg.lpips
    cached = tmp_path / "cache" / "feature-nets" / "vgg16.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(open(tiny_vgg.vgg16, "rb").read())
    assert fn.resolve_feature_net_path("vgg16") == str(cached)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_download_into_cache_verifies_and_is_atomic(tiny_inception, tmp_path, monkeypatch):
    payload = open(tiny_inception.tgz, "rb").read()
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    path = fn.resolve_feature_net_path("inception", download=True)
    assert urls == [fn.FEATURE_NETS["inception"].url]
    assert path == str(tmp_path / "cache" / "feature-nets" / "inception-2015-12-05.tgz")
    assert open(path, "rb").read() == payload
    assert sorted(os.listdir(os.path.dirname(path))) == ["inception-2015-12-05.tgz", "inception-2015-12-05.tgz.sha256"]
    import hashlib

    assert open(path + ".sha256").read().split()[0] == hashlib.sha256(payload).hexdigest()
    assert fn.resolve_feature_net_path("inception") == path  # offline now: the cache answers
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(UserError, match="changed since it was downloaded"):
        fn.resolve_feature_net_path("inception")


def test_download_with_wrong_checksum_or_content_is_rejected(tiny_inception, tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(b"<html>not found</html>"))
    with pytest.raises(UserError, match="is not a valid inception-2015-12-05.tgz"):
        fn.resolve_feature_net_path("inception", download=True)
    spec = dataclasses.replace(fn.FEATURE_NETS["inception"], sha256="0" * 64)
    monkeypatch.setitem(fn.FEATURE_NETS, "inception", spec)
    payload = open(tiny_inception.tgz, "rb").read()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    with pytest.raises(UserError, match="SHA-256"):
        fn.resolve_feature_net_path("inception", download=True)
    assert not os.listdir(tmp_path / "cache" / "feature-nets")


def test_download_failure_names_the_file(monkeypatch):
    def fail(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(UserError, match="vgg16_zhang_perceptual.pkl.*no route to host"):
        fn.resolve_feature_net_path("lpips", download=True)
