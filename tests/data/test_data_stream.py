"""The training stream: a pure function of (seed, position), the same global batches for any split
over replicas, input pipelines and accumulation rounds; epochs, mirror, subset, resume, labels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sg2ada_data_helpers import save_png, solid

from sg2ada.data import make_dataset, training_dataset_fn, training_iterator
from sg2ada.data.tool import convert_dataset
from sg2ada.errors import UserError

N = 10
VALUES = [10 + 7 * i for i in range(N)]  # image i is solid(VALUES[i]); its left half shows flips


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "imgs"
    for i, v in enumerate(VALUES):
        save_png(root / f"img{i:02d}.png", solid(v))
    return root


@pytest.fixture(scope="module")
def records(folder, tmp_path_factory):
    dest = tmp_path_factory.mktemp("stream") / "ds"
    meta = convert_dataset(str(folder), dest, shard_mb=0.0005)  # a few images per shard
    assert len(meta["shards"]) > 2
    return dest


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    dest = tmp_path_factory.mktemp("stream") / "shapes"
    convert_dataset("builtin:shapes", dest, max_images=24, resolution=8, shard_mb=0.004, seed=3)
    return dest


def _two_cpus():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices from tests/conftest.py")
    return tf.distribute.MirroredStrategy(devices)


def _one_cpu():
    return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])


def _global_batches(strategy, path, iters, batch_size=4, batch_gpu=1, **kw):
    """(images, labels) of `iters` global batches, assembled by global position as the trainer
    numbers samples: round after round, replica after replica."""
    it = training_iterator(strategy, path, batch_size=batch_size, batch_gpu=batch_gpu, **kw)
    rounds = batch_size // (batch_gpu * strategy.num_replicas_in_sync)
    out = []
    for _ in range(iters):
        imgs, labs = [], []
        for _ in range(rounds):
            x, c = next(it)
            xs, cs = strategy.experimental_local_results(x), strategy.experimental_local_results(c)
            assert len(xs) == strategy.num_replicas_in_sync
            for a, b in zip(xs, cs):
                assert a.shape[0] == batch_gpu and a.dtype == tf.float32
                imgs.append(a.numpy())
                labs.append(b.numpy())
        out.append((np.concatenate(imgs), np.concatenate(labs)))
    return out


def _identify(images):
    """(image number, flipped) of each float image of the `folder` dataset."""
    u = np.rint((images + 1) * 127.5).astype(int)
    ids = [VALUES.index(v) for v in u[:, 0, -1, 1]]
    flipped = u[:, 0, 0, 0] == u[:, 0, -1, 1]  # the left half's red is value + 100 unless flipped
    return list(zip(ids, flipped.tolist()))


def _assert_same(a, b):
    assert len(a) == len(b)
    for (x, c), (y, d) in zip(a, b):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("kw", [{}, {"mirror": True}, {"mirror": True, "subset": 7}])
def test_global_batches_do_not_depend_on_replicas_or_rounds(folder, kw):
    ref = _global_batches(tf.distribute.get_strategy(), folder, 6, batch_gpu=4, seed=3, **kw)  # 1 x 1 round
    _assert_same(_global_batches(tf.distribute.get_strategy(), folder, 6, batch_gpu=2, seed=3, **kw), ref)  # 2 rounds
    _assert_same(_global_batches(_one_cpu(), folder, 6, batch_gpu=1, seed=3, **kw), ref)  # 4 rounds
    _assert_same(_global_batches(_two_cpus(), folder, 6, batch_gpu=2, seed=3, **kw), ref)  # 2 replicas
    _assert_same(_global_batches(_two_cpus(), folder, 6, batch_gpu=1, seed=3, **kw), ref)  # 2 replicas x 2 rounds
    other = _global_batches(tf.distribute.get_strategy(), folder, 6, batch_gpu=4, seed=4, **kw)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(ref, other))


def test_two_input_pipelines_together_give_the_one_pipeline_stream(folder):
    fn = training_dataset_fn(folder, batch_size=4, batch_gpu=1, mirror=True, seed=5)
    one = iter(fn(tf.distribute.InputContext()))  # 1 pipeline, 1 replica: 4 rounds per batch
    two = [iter(fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2)))
           for i in range(2)]
    for _ in range(8):
        # Each pipeline feeds one replica; a batch is 2 rounds of (replica 0, replica 1).
        split = np.concatenate([next(two[i])[0].numpy() for _ in range(2) for i in range(2)])
        whole = np.concatenate([next(one)[0].numpy() for _ in range(4)])
        np.testing.assert_array_equal(split, whole)


def test_every_item_once_per_epoch_and_epochs_differ(folder):
    batches = _global_batches(tf.distribute.get_strategy(), folder, 10, batch_gpu=4, mirror=True, seed=1)
    seen = _identify(np.concatenate([b[0] for b in batches]))
    items = sorted((i, f) for i in range(N) for f in (False, True))
    assert sorted(seen[:20]) == items and sorted(seen[20:]) == items  # an epoch is 20 items = 5 batches
    assert seen[:20] != seen[20:]
    # Subset: the seeded choice of images, each once (and flipped once) per epoch.
    sub = _identify(np.concatenate([b[0] for b in _global_batches(tf.distribute.get_strategy(), folder, 4,
                                                                  batch_gpu=4, mirror=True, subset=4, seed=1)]))
    assert len({i for i, _ in sub}) == 4 and sorted(sub[:8]) == sorted(sub[8:]) == sorted(set(sub))


def test_skip_images_resumes_the_stream(folder):
    ref = _global_batches(_two_cpus(), folder, 7, batch_gpu=1, mirror=True, seed=2)
    _assert_same(_global_batches(_two_cpus(), folder, 4, batch_gpu=1, mirror=True, seed=2, skip_images=3 * 4),
                 ref[3:])
    # Any position: a run resumed after 6 images sees positions 6, 7, ... of the same stream.
    shifted = _global_batches(tf.distribute.get_strategy(), folder, 2, batch_gpu=2, mirror=True, seed=2, skip_images=6)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in shifted]),
                                  np.concatenate([b[0] for b in ref])[6:14])


def test_records_in_memory_and_read_by_offset_give_the_folder_stream(folder, records, monkeypatch):
    ref = _global_batches(_two_cpus(), folder, 6, batch_gpu=1, mirror=True, subset=8, seed=6)
    _assert_same(_global_batches(_two_cpus(), records, 6, batch_gpu=1, mirror=True, subset=8, seed=6), ref)
    monkeypatch.setenv("SG2ADA_DATA_CACHE_MB", "0.0001")  # smaller than the selection: read records by offset
    _assert_same(_global_batches(_two_cpus(), records, 6, batch_gpu=1, mirror=True, subset=8, seed=6), ref)
    # By URL the shards are read from a local copy.
    _assert_same(_global_batches(_two_cpus(), f"file://{records}", 6, batch_gpu=1, mirror=True, subset=8, seed=6), ref)


@pytest.mark.parametrize("cache_mb", [None, "0.0001"])
def test_labels_travel_with_their_images(shapes, monkeypatch, cache_mb):
    if cache_mb:
        monkeypatch.setenv("SG2ADA_DATA_CACHE_MB", cache_mb)
    x, c = next(iter(make_dataset(shapes, 24, shuffle=False, repeat=False)))
    label_of = {a.tobytes(): b for a, b in zip(x.numpy(), c.numpy())}
    for imgs, labs in _global_batches(_two_cpus(), shapes, 6, batch_gpu=2, seed=8):
        assert labs.shape == (4, 3)
        for a, b in zip(imgs, labs):
            np.testing.assert_array_equal(label_of[a.tobytes()], b)


def test_bad_batch_splits_are_user_errors(folder):
    with pytest.raises(UserError, match="not divisible"):
        training_iterator(_two_cpus(), folder, batch_size=6, batch_gpu=2)
    with pytest.raises(UserError, match="multiple"):
        training_iterator(tf.distribute.get_strategy(), folder, batch_size=6, batch_gpu=4)


@pytest.mark.parametrize("source", ["folder", "records"])
def test_val_images_are_held_out_of_the_stream_and_read_on_their_own(source, request):
    from sg2ada.data import select_subset, select_val

    path = request.getfixturevalue(source)
    train, held = select_subset(N, 8, 3, val=3), select_val(N, 8, 3, val=3)
    assert len(held) == 3 and not set(train) & set(held)
    assert sorted([*train, *held]) == select_subset(N, 8, 3).tolist()  # the held-out come from the subset
    seen = {i for x, _ in _global_batches(tf.distribute.get_strategy(), path, 8, batch_gpu=4, seed=3, subset=8,
                                          val=3) for i, _ in _identify(x)}
    assert seen == set(train.tolist())  # 32 images: every training image, never a held-out one
    (x, _), = make_dataset(path, 3, shuffle=False, repeat=False, subset=8, seed=3, val=3, held_out=True)
    assert sorted(i for i, _ in _identify(np.asarray(x))) == held.tolist()
    assert not np.array_equal(select_val(N, None, 3, 3), select_val(N, None, 4, 3))  # seeded
    with pytest.raises(UserError, match="--val 8 must hold out fewer than the 8 images"):
        select_val(N, 8, 3, 8)
