"""The quality benchmark's feature space (bench/bench_quality.py): a classifier trained from seeds
alone, cached by its configuration, whose Fréchet distance separates the data from what is not."""

import importlib.util
import json
import os

import numpy as np
import pytest

from sg2ada.data.builtin import generate_shapes, generate_shapes_with_attributes

pytestmark = pytest.mark.slow  # trains two small classifiers

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "bench_quality.py")
RES = 16
# Small enough for seconds on a CPU, big enough to learn the shapes' colours.
CONFIG = dict(version=1, train_images=512, val_images=128, epochs=4, batch=32, width=8, lr=1e-2,
              loss_weights=dict(shape=1.0, hue=1.0, geometry=100.0), seed=7, data_seed=11, hue_buckets=6, feature_dim=16)


@pytest.fixture(scope="module")
def bq():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cached_net(bq, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("features"))
    return bq.FeatureNet(CONFIG, RES, cache_root=root), root


def test_attributes_describe_the_images():
    images, attrs = generate_shapes_with_attributes(64, 32, seed=3)
    same, labels = generate_shapes(64, 32, seed=3)
    assert np.array_equal(images, same) and np.array_equal(attrs["shape"], labels)
    # The pixel at each shape's centre has the shape's hue.
    ix = np.clip((attrs["x"] * 32).astype(int), 0, 31)
    iy = np.clip((attrs["y"] * 32).astype(int), 0, 31)
    rgb = images[np.arange(64), iy, ix].astype(np.float64) / 255
    mx, mn = rgb.max(1), rgb.min(1)
    r, g, b = rgb.T
    d = np.maximum(mx - mn, 1e-9)
    h = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6
    err = np.abs((h - attrs["hue"] + 0.5) % 1 - 0.5)
    assert np.median(err) < 0.02


def test_training_is_deterministic_and_leaves_determinism_off(bq, cached_net):
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    net, _ = cached_net
    again, accuracy = bq.train_feature_net(CONFIG, RES)
    for w1, w2 in zip(net.model.get_weights(), again.get_weights(), strict=True):
        assert np.array_equal(w1, w2)
    assert accuracy == net.accuracy
    assert accuracy["geometry_rmse"] < 0.07  # learned: predicting the mean scores about 0.107
    assert not tf_config.is_op_determinism_enabled()
    tf.keras.backend.clear_session()


def test_cache_is_keyed_by_config(bq, cached_net, monkeypatch):
    net, root = cached_net
    assert net.trained_now and os.path.isfile(net.path)
    monkeypatch.setattr(bq, "train_feature_net", lambda *a: pytest.fail("trained although cached"))
    loaded = bq.FeatureNet(CONFIG, RES, cache_root=root)
    assert not loaded.trained_now and loaded.path == net.path and loaded.accuracy == net.accuracy
    images = generate_shapes(32, RES, seed=5)[0]
    np.testing.assert_array_equal(loaded.features(images), net.features(images))
    assert bq.feature_net_key({**CONFIG, "resolution": RES}) == net.key
    assert bq.feature_net_key({**CONFIG, "seed": 8, "resolution": RES}) != net.key
    assert bq.feature_net_key({**CONFIG, "resolution": 32}) != net.key


def test_frechet_distance_separates_data_from_noise(bq, cached_net):
    net, _ = cached_net
    reals = generate_shapes(256, RES, seed=0)[0]
    others = generate_shapes(256, RES, seed=1)[0]
    noise = np.random.RandomState(0).randint(0, 256, reals.shape).astype(np.uint8)
    s_real = net.stats(reals)
    assert bq.frechet_distance(s_real, s_real) == pytest.approx(0, abs=1e-6)
    same_family = bq.frechet_distance(s_real, net.stats(others))
    assert 0 < same_family < 0.2 * bq.frechet_distance(s_real, net.stats(noise))


def test_summary_averages_second_half_and_reads_stats(bq, tmp_path):
    lines = [{"Progress/kimg": {"num": 1, "mean": k}, "Progress/augment": {"num": 1, "mean": k / 100},
              "Loss/signs/real": {"num": 4, "mean": 0.5 + k / 100}} for k in (4, 8)]
    (tmp_path / "stats.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    ticks = bq.tick_series(str(tmp_path))
    assert ticks == [{"kimg": 4, "p": 0.04, "r_t": 0.54}, {"kimg": 8, "p": 0.08, "r_t": 0.58}]
    run = lambda fds: {"snapshots": [{"kimg": k, "fd": f} for k, f in zip((2, 4, 6, 8), fds)], "ticks": ticks}  # noqa: E731
    s = bq.summarise({"noaug": [run([1, 1, 4, 6])], "ada": [run([9, 9, 2, 3]), run([9, 9, 3, 4])]}, kimg=8)
    assert s["noaug"]["fd_second_half"] == 5 and s["ada"]["fd_second_half"] == 3
    assert s["ada"]["ratio_to_noaug"] == 0.6 and s["noaug"]["r_t_second_half"] == 0.58
