"""make_dataset (metrics, grids): determinism, mirror, subset, labels, caching; the label sampler."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from sg2ada_data_helpers import read_dataset, save_png, solid

from sg2ada.data import label_sampler, make_dataset, open_dataset, select_subset
from sg2ada.data.tool import convert_dataset
from sg2ada.errors import UserError

N = 48


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """48 builtin images in several shards (tiny shard size), 3 class labels."""
    dest = tmp_path_factory.mktemp("ds") / "shapes"
    meta = convert_dataset("builtin:shapes", dest, max_images=N, resolution=8, shard_mb=0.004, seed=5)
    assert len(meta["shards"]) > 2
    return dest


def _batches(ds, n):
    out = []
    for b in ds.take(n):
        out.append(tuple(t.numpy() for t in b))
    return out


def test_open_dataset_describes_the_tool_output(shapes):
    info = open_dataset(shapes)
    assert (info.resolution, info.channels, info.count, info.label_dim) == (8, 3, N, 3)
    assert info.kind == "tfrecords" and info.name == "shapes" and info.label_names == ("disc", "square", "triangle")
    assert open_dataset(shapes / "dataset.json") == info
    assert json.loads(json.dumps(info.to_dict()))["count"] == N


def test_same_seed_same_batches(shapes):
    a = _batches(make_dataset(shapes, 8, seed=11, with_index=True), 12)
    b = _batches(make_dataset(shapes, 8, seed=11, with_index=True), 12)
    c = _batches(make_dataset(shapes, 8, seed=12, with_index=True), 12)
    for x, y in zip(a, b):
        for s, t in zip(x, y):
            np.testing.assert_array_equal(s, t)
    assert not all(np.array_equal(x[2], y[2]) for x, y in zip(a, c))


@pytest.mark.parametrize("cache", [None, False])
def test_each_epoch_is_a_permutation_and_epochs_differ(shapes, cache):
    bs = 8
    batches = _batches(make_dataset(shapes, bs, seed=1, with_index=True, cache=cache), 2 * N // bs)
    idx = np.concatenate([b[2] for b in batches])
    e1, e2 = idx[:N], idx[N:]
    assert sorted(e1) == list(range(N)) and sorted(e2) == list(range(N))
    assert not np.array_equal(e1, e2)
    assert not np.array_equal(e1, np.arange(N))


def test_images_are_float_in_range_and_match_uint8(shapes):
    (x, c, i), = _batches(make_dataset(shapes, 16, shuffle=False, with_index=True), 1)
    (u, _, j), = _batches(make_dataset(shapes, 16, shuffle=False, with_index=True, as_uint8=True), 1)
    assert x.dtype == np.float32 and x.shape == (16, 8, 8, 3) and -1 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(i, j)
    np.testing.assert_allclose(x, u.astype(np.float32) / 127.5 - 1, atol=1e-6)
    assert c.dtype == np.float32 and c.shape == (16, 3) and np.all(c.sum(1) == 1)
    np.testing.assert_array_equal(c.argmax(1), np.load(shapes / "labels.npy")[i])


@pytest.mark.parametrize("cache", [None, False])
def test_mirror_doubles_with_flipped_copies(shapes, cache):
    x, _, i = read_dataset(shapes, mirror=True, cache=cache)
    assert len(i) == 2 * N
    assert np.all(np.bincount(i) == 2)
    for k in range(N):
        a, b = x[i == k]
        flipped_a = np.array_equal(b, a[:, ::-1])
        assert flipped_a or np.array_equal(a, b[:, ::-1])
        assert not np.array_equal(a, b)  # the shapes are not symmetric images


def test_subset_is_seeded_and_follows_nvidia_rule(shapes):
    _, _, i = read_dataset(shapes, subset=10, seed=3)
    rs = np.random.RandomState(3)
    ref = np.arange(N)
    rs.shuffle(ref)
    np.testing.assert_array_equal(i, np.sort(ref[:10]))
    np.testing.assert_array_equal(select_subset(N, 10, 3), i)
    _, _, i4 = read_dataset(shapes, subset=10, seed=4)
    assert not np.array_equal(i, i4)
    _, _, iall = read_dataset(shapes, subset=N + 5)
    assert len(iall) == N
    with pytest.raises(UserError):
        select_subset(N, 0, 0)


def test_subset_with_mirror_and_repeat(shapes):
    batches = _batches(make_dataset(shapes, 5, subset=5, mirror=True, seed=2, with_index=True), 4)
    idx = np.concatenate([b[2] for b in batches])
    assert set(idx.tolist()) == set(select_subset(N, 5, 2).tolist())
    assert np.all(np.bincount(idx[:10], minlength=N)[select_subset(N, 5, 2)] == 2)


def test_vector_and_missing_labels(tmp_path):
    root = tmp_path / "v"
    for k in range(4):
        save_png(root / f"{k}.png", solid(k * 10))
    (root / "dataset.json").write_text(json.dumps({"labels": [[f"{k}.png", [k / 4, 1 - k / 4]] for k in range(4)]}))
    convert_dataset(str(root), tmp_path / "vec")
    _, c, _ = read_dataset(tmp_path / "vec")
    np.testing.assert_allclose(c, [[k / 4, 1 - k / 4] for k in range(4)])
    convert_dataset(str(root), tmp_path / "none", labels_from="none")
    (x, c), = _batches(make_dataset(tmp_path / "none", 2), 1)
    assert c.shape == (2, 0) and x.shape == (2, 8, 8, 3)


def test_cache_file_and_no_cache_give_the_same_images(shapes, tmp_path):
    ref = read_dataset(shapes, cache=False)
    got = read_dataset(shapes, cache=str(tmp_path / "cachefile"))
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_direct_folder_and_zip_quick_start(image_folder, tmp_path):
    info = open_dataset(image_folder)
    assert info.kind == "memory" and info.count == 6 and info.resolution == 8
    x, c, i = read_dataset(image_folder)
    np.testing.assert_array_equal(x, np.stack([solid(10 * (k + 1)) for k in range(6)]))
    assert c.shape == (6, 0)
    (xb, _), = _batches(make_dataset(image_folder, 4, seed=0, mirror=True), 1)
    assert xb.shape == (4, 8, 8, 3)


def test_open_dataset_errors(shapes, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((shapes / "dataset.json").read_text())
    (broken / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="incomplete"):
        open_dataset(broken)


def test_label_sampler_follows_the_label_distribution(shapes):
    labels = np.load(shapes / "labels.npy")
    freq = np.bincount(labels, minlength=3) / N
    sampler = label_sampler(shapes)
    draw = tf.function(lambda s: sampler(4000, s))
    c = draw(tf.constant([1, 2])).numpy()
    assert c.shape == (4000, 3) and np.all(c.sum(1) == 1)
    np.testing.assert_allclose(c.mean(0), freq, atol=0.04)
    np.testing.assert_array_equal(c, draw(tf.constant([1, 2])).numpy())
    np.testing.assert_array_equal(c, sampler(4000, tf.constant([1, 2])).numpy())  # eager after graph
    xla = tf.function(lambda s: sampler(4000, s), jit_compile=True)
    np.testing.assert_array_equal(c, xla(tf.constant([1, 2])).numpy())
    assert not np.array_equal(c, draw(tf.constant([1, 3])).numpy())
    sub = label_sampler(shapes, subset=3, seed=0)
    allowed = set(labels[select_subset(N, 3, 0)].tolist())
    assert set(sub.sample_numpy(200, np.random.default_rng(0)).argmax(1).tolist()) <= allowed


def test_label_sampler_per_sample_does_not_depend_on_the_split(shapes):
    labels = np.load(shapes / "labels.npy")
    sampler = label_sampler(shapes)
    seed = tf.constant([3, 4])
    whole = sampler.per_sample(seed, tf.range(4000), 4000).numpy()
    assert whole.shape == (4000, 3) and np.all(whole.sum(1) == 1)
    np.testing.assert_allclose(whole.mean(0), np.bincount(labels, minlength=3) / N, atol=0.04)
    parts = [sampler.per_sample(seed, tf.range(k * 1000, (k + 1) * 1000), 4000) for k in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    xla = tf.function(lambda i: sampler.per_sample(seed, i, 4000), jit_compile=True)
    np.testing.assert_array_equal(xla(tf.constant([7, 3, 3999])), whole[[7, 3, 3999]])


def test_label_sampler_without_labels(image_folder):
    s = label_sampler(image_folder)
    assert s.label_dim == 0 and s(5, tf.constant([0, 0])).shape == (5, 0)
    assert s.per_sample(tf.constant([0, 0]), tf.range(2, 5), 8).shape == (3, 0)


def test_url_paths_read_a_local_copy(shapes):
    url = "file://" + str(shapes)
    info = open_dataset(url)
    assert info.count == N and info.path == url and info.name == "shapes"
    assert os.path.basename(info.local_dir).startswith("sg2ada-data-") and info.shards[0].startswith(info.local_dir)
    assert open_dataset(url + "/dataset.json").local_dir == info.local_dir  # fetched once per process
    (x, c), = _batches(make_dataset(url, 4, seed=0), 1)
    assert x.shape == (4, 8, 8, 3)
    assert label_sampler(url).label_dim == 3
    with pytest.raises(UserError, match="no dataset there"):
        open_dataset("file://" + str(shapes) + "-missing")


def test_quick_start_refuses_what_does_not_fit(image_folder, monkeypatch):
    from sg2ada.data import pipeline

    monkeypatch.setattr(pipeline, "IN_MEMORY_MAX_BYTES", 100)
    pipeline._MEMORY_CACHE.clear()
    with pytest.raises(UserError, match="too large to load in memory.*sg2ada dataset --source"):
        open_dataset(image_folder)
