"""The memorisation metric (`copy1k_full`) on a folder of training images: a generator that replays
them with small noise has a copy rate near 1, one drawing fresh shapes from the same family stays
near the definition's 5% baseline, one drawing blobs near 0; the picture shows each closest fake
beside its nearest reals; the metric runs through `sg2ada metrics` and the training-time runner."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from sg2ada.data import generate_shapes
from sg2ada.metrics import METRICS, compute_metric, run_metrics
from sg2ada.metrics.memorization import copy_rate, nearest_neighbours, pixel_features

RES = 16
NUM_REAL = 48


class ImageBankGenerator:
    """G(z, c) returning bank[i] (+ noise) with i taken from z: a generator whose outputs are known."""

    def __init__(self, bank_uint8, noise=0.0, z_dim=8):
        self.z_dim, self.c_dim = z_dim, 0
        self.bank = tf.constant(bank_uint8.astype(np.float32) / 127.5 - 1.0)
        rng = np.random.RandomState(3)
        self.noise = tf.constant((rng.randn(8, *bank_uint8.shape[1:]) * noise).astype(np.float32))

    def __call__(self, z, c=None, truncation_psi=1, noise_mode="random"):
        i = tf.cast(tf.abs(z[:, 0]) * 1000.0, tf.int32)
        img = tf.gather(self.bank, i % self.bank.shape[0]) + tf.gather(self.noise, i % 8)
        return tf.clip_by_value(img, -1.0, 1.0)


def _blobs(n, seed=7):
    """Soft grey blobs on black: nothing like the shapes on gradients."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:RES, 0:RES] / RES
    cx, cy, s = rng.uniform(0.2, 0.8, n), rng.uniform(0.2, 0.8, n), rng.uniform(0.05, 0.2, n)
    cx, cy, s = cx[:, None, None], cy[:, None, None], s[:, None, None]
    g = np.exp(-((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2) / (2 * s**2))
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=3)


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("mem") / "train"
    d.mkdir()
    images, _ = generate_shapes(NUM_REAL, RES, seed=0)
    for i, img in enumerate(images):
        PIL.Image.fromarray(img).save(d / f"img{i:03d}.png")
    return str(d), images


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SG2ADA_CACHE", str(tmp_path / "cache"))  # no Inception file: pixel features
    monkeypatch.setenv("SG2ADA_OFFLINE", "1")
    monkeypatch.delenv("SG2ADA_INCEPTION", raising=False)


def _rate(G, folder, run_dir=None, num_gen=96):
    res = compute_metric("copy1k_full", G, folder, num_gen=num_gen, batch_size=32, run_dir=run_dir)
    assert res["overrides"] == {"num_gen": num_gen}
    return res["results"]


def test_replayed_training_images_have_copy_rate_near_one(train_folder, tmp_path):
    folder, images = train_folder
    out = _rate(ImageBankGenerator(images, noise=0.02), folder, run_dir=str(tmp_path))
    assert out["copy1k_full"] >= 0.95
    assert out["copy1k_full_nn_ratio"] < 0.5
    pic = np.asarray(PIL.Image.open(tmp_path / "copy1k_full-nearest.png"))
    assert pic.shape == (8 * (RES + 4) - 4, 4 * RES + 4 * 4, 3)
    # Each row: a replayed image and, first among its neighbours, the training image it replays.
    fake, nearest = pic[:RES, :RES].astype(int), pic[:RES, RES + 8 : 2 * RES + 8].astype(int)
    assert np.abs(fake - nearest).mean() < 6
    assert any(np.array_equal(nearest, img) for img in images)
    assert (pic[:, RES : RES + 8] == 255).all()


def test_fresh_samples_of_the_same_family_stay_near_the_baseline(train_folder):
    folder, _ = train_folder
    fresh, _ = generate_shapes(200, RES, seed=1)
    out = _rate(ImageBankGenerator(fresh), folder)
    assert out["copy1k_full"] <= 0.15
    assert 0.8 < out["copy1k_full_nn_ratio"] < 1.25  # as far from the training set as its images from each other


def test_novel_blobs_have_copy_rate_zero(train_folder):
    folder, _ = train_folder
    out = _rate(ImageBankGenerator(_blobs(64)), folder)
    assert out["copy1k_full"] == 0.0


def test_inception_features_when_the_file_is_given(train_folder, tiny_inception, capsys):
    from sg2ada.metrics import feature_nets

    feature_nets._LOADED.clear()
    folder, images = train_folder
    res = compute_metric("copy1k_full", ImageBankGenerator(images, noise=0.02), folder, num_gen=32, batch_size=16,
                         feature_net=[tiny_inception.tgz], verbose=True)
    assert "copy1k_full: inception features" in capsys.readouterr().err
    assert res["results"]["copy1k_full"] >= 0.9


def test_definition_on_hand_made_distances():
    d_real = np.arange(1, 101, dtype=float)  # 5th percentile 5.95
    res = copy_rate([0.5, 5.9, 6.0, 50.0], d_real)
    assert res["threshold"] == pytest.approx(5.95)
    assert res["copy_rate"] == 0.5 and res["nn_ratio"] == pytest.approx(np.median([0.5, 5.9, 6, 50]) / 50.5)


def test_nearest_neighbours_skips_self_and_duplicates():
    feats = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    d, i = nearest_neighbours(feats, feats, exclude_self=True)
    assert d[0, 0] == 0 and i[0, 0] == 1  # the duplicate is the nearest other image...
    d, i = nearest_neighbours(feats, feats, exclude_self=True, skip_below=1e-9)
    assert i[0, 0] == 3 and d[0, 0] == pytest.approx(1.0)  # ...unless duplicates are skipped
    d, i = nearest_neighbours(feats[2:3], feats, k=2)
    assert list(i[0]) == [2, 3] and d[0, 1] == pytest.approx(np.hypot(3, 3))


def test_pixel_features_ignore_brightness_and_tell_images_apart(train_folder):
    _, images = train_folder
    f = pixel_features(images[:4])
    brighter = pixel_features(np.clip(images[:4].astype(int) * 0.8 + 20, 0, 255).astype(np.uint8))
    assert f.shape == (4, RES * RES * 3) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    assert np.abs(f - brighter).max() < 0.02
    big = pixel_features(np.repeat(np.repeat(images[:2], 4, axis=1), 4, axis=2))  # 64px -> box-filtered to 32
    assert big.shape == (2, 32 * 32 * 3)
    assert np.linalg.norm(f[0] - f[1]) > 0.3


def test_registered_for_the_cli_and_the_training_runner(train_folder, tmp_path, capsys):
    folder, images = train_folder
    assert not METRICS["copy1k_full"].nvidia
    run = tmp_path / "run"
    run.mkdir()
    G = ImageBankGenerator(images, noise=0.02)
    flat = run_metrics(["copy1k_full"], G, snapshot=str(run / "network-snapshot-000004"), options={"data": folder},
                       num_gen=32, batch_size=16)
    assert flat["copy1k_full"] >= 0.9 and set(flat) == {"copy1k_full", "copy1k_full_nn_ratio"}
    line = json.loads((run / "metric-copy1k_full.jsonl").read_text())
    assert line["snapshot_pkl"] == "network-snapshot-000004" and line["results"] == flat
    assert (run / "copy1k_full-nearest.png").is_file()


def test_cli_metrics_accepts_the_name():
    from sg2ada.cli.main import build_parser

    args = build_parser().parse_args(["metrics", "--network", "x", "--metrics", "copy1k_full"])
    from sg2ada.metrics import parse_metric_list

    assert parse_metric_list(args.metrics) == ["copy1k_full"]
