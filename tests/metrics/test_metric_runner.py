"""The metric runner end to end with the small feature networks, a toy generator and a tiny dataset:
values equal an independent computation from the same features, the real-statistics cache is used
and invalidated when the dataset changes, replicas give the same answer, results go to jsonl and
TensorBoard, and a missing feature network makes the training helper skip the metric."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from metrics_helpers import NpzSource, ToyGenerator
from sg2ada.data import open_dataset
from sg2ada.errors import UserError
from sg2ada.metrics import METRICS, compute_metric, feature_nets, formulas, metric_main
from sg2ada.metrics.common import fake_labels
from sg2ada.networks.config import GeneratorConfig, MappingConfig
from sg2ada.networks.generator import Generator
from sg2ada.metrics import report_metric, run_metrics, try_compute_metric, write_tensorboard


@pytest.fixture(autouse=True)
def _fresh_nets():
    feature_nets._LOADED.clear()


def _gen_features(G, net_fn, num, batch, seed=0):
    """What the runner should feed the feature net: NVIDIA's quantisation of G(z) for z from the seed."""
    rng = np.random.RandomState(seed)
    out = []
    while sum(len(o) for o in out) < num:
        z = rng.randn(batch, G.z_dim).astype(np.float32)
        img = G(tf.constant(z), tf.zeros([batch, 0]))
        u8 = np.clip(img.numpy() * 127.5 + 128, 0, 255).astype(np.uint8)
        out.append(net_fn(u8).numpy())
    return np.concatenate(out)[:num]


def test_registry_has_nvidia_names():
    for name in ("fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "ppl2_wend", "fid50k", "kid50k", "pr50k3",
                 "ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend"):
        assert METRICS[name].nvidia
    assert METRICS["kid50k_full"].params == dict(max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    assert METRICS["ppl2_wend"].params["crop"] is False and METRICS["ppl_wend"].params["crop"] is True
    assert METRICS["pr50k3_full"].params["max_real"] == 200000
    assert not METRICS["fid10k_full"].nvidia
    with pytest.raises(UserError, match="unknown metric"):
        metric_main.parse_metric_list("fid50k_full,fid51k")
    assert metric_main.parse_metric_list("none") == []


def test_fid_equals_independent_computation(metric_env, npz_dataset, tiny_inception, toy_G):
    src = NpzSource.make(npz_dataset)
    res = compute_metric("fid50k_full", toy_G, dataset=src, feature_net=metric_env.feature_net, batch_size=8, num_gen=24)
    assert set(res) >= {"results", "metric", "total_time", "total_time_str", "num_gpus", "overrides"}
    net = feature_nets.InceptionV3(tiny_inception.tgz)
    real = net.features(np.load(npz_dataset)["images"]).numpy().astype(np.float64)
    gen = _gen_features(toy_G, net.features, 24, 8).astype(np.float64)
    want = formulas.fid_from_stats(gen.mean(0), np.cov(gen, rowvar=False, bias=True), real.mean(0), np.cov(real, rowvar=False, bias=True))
    assert res["results"]["fid50k_full"] == pytest.approx(want, rel=1e-4)
    assert want > 0


def test_fid_of_dataset_against_itself_is_zero(metric_env, npz_dataset):
    images = np.load(npz_dataset)["images"]

    class Replay:
        """A 'generator' that returns the dataset images in order (z only sets the batch size)."""

        z_dim, c_dim = 4, 0

        def __init__(self):
            self.i = 0

        def _next(self, z):
            n = int(z.shape[0])
            batch = images[self.i : self.i + n]
            self.i += n
            return batch.astype(np.float32) / 127.5 - 1

        def __call__(self, z, c, **kwargs):
            out = tf.py_function(self._next, [z], tf.float32)
            return tf.ensure_shape(out, [None, 16, 16, 3])

    src = NpzSource.make(npz_dataset)
    res = compute_metric("fid50k_full", Replay(), dataset=src, feature_net=metric_env.feature_net, batch_size=8, num_gen=40)
    assert abs(res["results"]["fid50k_full"]) < 1e-3


def test_real_stats_cache_is_used_and_invalidated(metric_env, npz_dataset, toy_G):
    src = NpzSource.make(npz_dataset)
    type(src).reads = 0
    kw = dict(dataset=src, feature_net=metric_env.feature_net, batch_size=8, num_gen=16)
    r1 = compute_metric("fid50k_full", toy_G, **kw)
    assert type(src).reads == 1
    files = os.listdir(metric_env.cache / "gan-metrics")
    assert len(files) == 1 and files[0].startswith("toyset-inception-2015-12-05-") and files[0].endswith(".npz")
    r2 = compute_metric("fid50k_full", toy_G, **kw)
    assert type(src).reads == 1  # from the cache
    assert r2["results"] == r1["results"]
    # Change the dataset: other images, and a new modification time.
    rng = np.random.RandomState(9)
    np.savez(npz_dataset, images=rng.randint(0, 256, size=(40, 16, 16, 3)).astype(np.uint8))
    st = os.stat(npz_dataset)
    os.utime(npz_dataset, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r3 = compute_metric("fid50k_full", toy_G, **kw)
    assert type(src).reads == 2
    assert r3["results"]["fid50k_full"] != pytest.approx(r1["results"]["fid50k_full"], rel=1e-6)
    assert len(os.listdir(metric_env.cache / "gan-metrics")) == 2
    # cache=False never reads or writes the cache.
    compute_metric("fid50k_full", toy_G, cache=False, **kw)
    assert type(src).reads == 3


def test_directory_dataset_fingerprint_changes_with_any_file(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "a.tfrecords").write_bytes(b"x" * 10)
    (d / "dataset.json").write_text("{}")
    f1 = metric_main._path_fingerprint(str(d))
    (d / "a.tfrecords").write_bytes(b"x" * 11)
    assert metric_main._path_fingerprint(str(d)) != f1
    with pytest.raises(UserError, match="no such file"):
        metric_main._path_fingerprint(str(tmp_path / "missing"))


def test_kid_pr_is_run_and_agree_with_formulas(metric_env, npz_dataset, tiny_inception, tiny_vgg, toy_G):
    src = NpzSource.make(npz_dataset)
    kw = dict(dataset=src, feature_net=metric_env.feature_net, batch_size=8)
    kid = compute_metric("kid50k_full", toy_G, num_gen=16, num_subsets=5, **kw)["results"]["kid50k_full"]
    inc = feature_nets.InceptionV3(tiny_inception.tgz)
    real = inc.features(np.load(npz_dataset)["images"]).numpy()
    gen = _gen_features(toy_G, inc.features, 16, 8)
    assert kid == pytest.approx(formulas.kid_from_features(real, gen, 5, 1000, seed=0), rel=1e-4)

    pr = compute_metric("pr50k3_full", toy_G, num_gen=16, **kw)["results"]
    assert set(pr) == {"pr50k3_full_precision", "pr50k3_full_recall"}
    vgg = feature_nets.VGG16(tiny_vgg.vgg16, fc=True)
    want = formulas.precision_recall(vgg.features(np.load(npz_dataset)["images"]).numpy(),
                                     _gen_features(toy_G, vgg.features, 16, 8), 3)
    assert (pr["pr50k3_full_precision"], pr["pr50k3_full_recall"]) == pytest.approx(want)

    is_res = compute_metric("is50k", toy_G, num_gen=20, num_splits=2, **kw)["results"]
    probs = _gen_features(toy_G, inc.probabilities, 20, 8)
    assert (is_res["is50k_mean"], is_res["is50k_std"]) == pytest.approx(formulas.inception_score(probs, 2), rel=1e-4)


def test_ppl_runs_and_is_zero_when_the_image_ignores_the_latent(metric_env, tiny_vgg):
    G = ToyGenerator(resolution=32)
    kw = dict(feature_net=metric_env.feature_net, batch_size=4, num_samples=8)
    moving = compute_metric("ppl2_wend", G, **kw)["results"]["ppl2_wend"]
    assert np.isfinite(moving) and moving > 0
    assert compute_metric("ppl2_wend", G, **kw)["results"]["ppl2_wend"] == pytest.approx(moving, rel=1e-4)  # seeded
    still = compute_metric("ppl_zfull", ToyGenerator(resolution=32, ignore_w=True), **kw)["results"]["ppl_zfull"]
    assert still == pytest.approx(0, abs=1e-6)


def test_ppl_end_sampling_equals_direct_lpips(metric_env, tiny_vgg):
    """ppl_wend by hand: t=0, w and w+eps(w1-w0), LPIPS / eps^2 on the face crop."""
    G = ToyGenerator(resolution=32)
    res = compute_metric("ppl_wend", G, feature_net=metric_env.feature_net, batch_size=4, num_samples=4, seed=3)
    rng = np.random.RandomState(3)
    z0 = rng.randn(4, G.z_dim).astype(np.float32)
    z1 = rng.randn(4, G.z_dim).astype(np.float32)
    w = G.mapping(tf.constant(np.concatenate([z0, z1])))
    w0, w1 = w[:4], w[4:]
    eps = 1e-4
    imgs = [G.synthesis(w0), G.synthesis(w0 + (w1 - w0) * eps)]
    imgs = [(im[:, 12:28, 8:24, :] + 1) * 127.5 for im in imgs]
    lp = feature_nets.VGG16(tiny_vgg.lpips, lpips=True, resize=0)
    d = lp.lpips(*imgs).numpy() / eps**2
    assert res["results"]["ppl_wend"] == pytest.approx(formulas.ppl_from_distances(d), rel=2e-2)


def test_two_replicas_give_the_same_answer(metric_env, npz_dataset, toy_G):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    src = NpzSource.make(npz_dataset)
    kw = dict(dataset=src, feature_net=metric_env.feature_net, batch_size=6, num_gen=18, cache=False)
    one = compute_metric("fid50k_full", toy_G, **kw)
    two = compute_metric("fid50k_full", toy_G, strategy=strategy, **kw)
    assert two["num_gpus"] == 2
    assert two["results"]["fid50k_full"] == pytest.approx(one["results"]["fid50k_full"], rel=1e-4)


def test_conditional_generator_draws_dataset_labels(metric_env, tmp_path):
    rng = np.random.RandomState(0)
    labels = np.eye(3, dtype=np.float32)[rng.randint(3, size=12)]
    path = tmp_path / "cond.npz"
    np.savez(path, images=rng.randint(0, 256, size=(12, 16, 16, 3)).astype(np.uint8), labels=labels)
    G = ToyGenerator(c_dim=3)
    res = compute_metric("fid50k_full", G, dataset=NpzSource.make(path), feature_net=metric_env.feature_net,
                         batch_size=4, num_gen=8)
    assert np.isfinite(res["results"]["fid50k_full"])
    with pytest.raises(UserError, match="c_dim"):
        compute_metric("fid50k_full", ToyGenerator(c_dim=2), dataset=NpzSource.make(path),
                       feature_net=metric_env.feature_net, batch_size=4, num_gen=8)


def test_report_jsonl_and_tensorboard(tmp_path):
    result = dict(results={"pr50k3_full_precision": 0.5, "pr50k3_full_recall": 0.25}, metric="pr50k3_full",
                  total_time=1.5, total_time_str="2s", num_gpus=1)
    run_dir = tmp_path / "00000-run"
    run_dir.mkdir()
    snap = run_dir / "network-snapshot-000010"
    report_metric(result, run_dir=str(run_dir), snapshot_pkl=str(snap), quiet=True)
    report_metric(result, run_dir=str(run_dir), snapshot_pkl=str(snap), quiet=True)
    lines = (run_dir / "metric-pr50k3_full.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["results"] == result["results"] and rec["metric"] == "pr50k3_full"
    assert rec["snapshot_pkl"] == "network-snapshot-000010" and abs(rec["timestamp"] - time.time()) < 60
    assert {"total_time", "total_time_str", "num_gpus"} <= set(rec)
    write_tensorboard(result, str(tmp_path / "tb"), step=10)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags().get("tensors", [])) | set(acc.Tags().get("scalars", []))
    assert {"Metrics/pr50k3_full_precision", "Metrics/pr50k3_full_recall"} <= tags


def test_missing_feature_net_skips_metric_in_training(metric_env, npz_dataset, toy_G, tmp_path):
    src = NpzSource.make(npz_dataset)
    with pytest.raises(UserError, match="inception-2015-12-05.tgz"):
        compute_metric("fid50k_full", toy_G, dataset=src, num_gen=8)
    with pytest.warns(RuntimeWarning, match="fid50k_full skipped.*inception-2015-12-05.tgz"):
        assert try_compute_metric("fid50k_full", toy_G, dataset=src, num_gen=8) is None


def test_run_metrics_for_the_training_loop(metric_env, npz_dataset, toy_G, tmp_path, monkeypatch):
    run_dir = tmp_path / "00001-toy"
    run_dir.mkdir()
    snap = run_dir / "network-snapshot-000004"
    monkeypatch.setenv("SG2ADA_INCEPTION", metric_env.feature_net[0])
    monkeypatch.setattr(metric_main, "DatasetSource", lambda path: NpzSource.make(path))
    with pytest.warns(RuntimeWarning, match="ppl2_wend skipped"):  # no LPIPS file configured: skipped
        out = run_metrics("fid50k_full,ppl2_wend", toy_G, snapshot=str(snap), options={"data": str(npz_dataset)},
                          batch_size=8, num_gen=8, num_samples=4)
    assert set(out) == {"fid50k_full"}
    rec = json.loads((run_dir / "metric-fid50k_full.jsonl").read_text())
    assert rec["snapshot_pkl"] == "network-snapshot-000004"
    assert not (run_dir / "metric-ppl2_wend.jsonl").exists()


@pytest.mark.slow
def test_with_real_data_module_and_generator(metric_env, tmp_path):
    """The real pipeline (builtin:shapes through sg2ada.data) and the real Generator."""
    info = open_dataset("builtin:shapes")
    cfg = GeneratorConfig(z_dim=16, w_dim=16, c_dim=info.label_dim, img_resolution=info.resolution,
                          mapping=MappingConfig(num_layers=1), channel_base=64, channel_max=8)
    G = Generator(cfg)
    res = compute_metric("fid50k_full", G, "builtin:shapes", feature_net=metric_env.feature_net,
                         batch_size=16, num_gen=16, max_real=64)
    assert np.isfinite(res["results"]["fid50k_full"]) and res["results"]["fid50k_full"] > 0
    ppl = compute_metric("ppl2_wend", G, "builtin:shapes", feature_net=metric_env.feature_net,
                         batch_size=4, num_samples=4)
    assert np.isfinite(ppl["results"]["ppl2_wend"])


def test_legacy_metrics_append_flipped_copies_when_training_mirrors(metric_env, npz_dataset, tiny_inception):
    src = NpzSource.make(npz_dataset)
    images = np.load(npz_dataset)["images"]
    opts = metric_main.MetricOptions(dataset=src, feature_net=metric_env.feature_net, batch_size=16, mirror=True, cache=False)
    legacy = metric_main.compute_feature_stats_for_dataset(opts, METRICS["fid50k"], 1000, capture_all=True).get_all()
    full = metric_main.compute_feature_stats_for_dataset(opts, METRICS["fid50k_full"], None, capture_all=True).get_all()
    net = feature_nets.InceptionV3(tiny_inception.tgz)
    assert len(full) == 40 and len(legacy) == 80  # _full never mirrors; legacy: originals, then x-flips
    np.testing.assert_allclose(legacy[:40], full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(legacy[40:], net.features(images[:, :, ::-1]).numpy(), rtol=1e-4, atol=1e-5)


def test_labels_are_drawn_like_a_random_dataset_image(tmp_path):
    labels = np.eye(2, dtype=np.float32)[[0, 0, 0, 1]]
    path = tmp_path / "lab.npz"
    np.savez(path, images=np.zeros([4, 4, 4, 3], np.uint8), labels=labels)
    opts = metric_main.MetricOptions(G=ToyGenerator(c_dim=2), dataset=NpzSource.make(path))
    draws = fake_labels(opts, seed=0)(20000)
    assert set(map(tuple, draws)) == {(1.0, 0.0), (0.0, 1.0)}
    assert draws[:, 0].mean() == pytest.approx(0.75, abs=0.02)
