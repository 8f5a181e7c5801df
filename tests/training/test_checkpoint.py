"""CheckpointKeeper: full-state round trip, crash-safety of the write order, fallback past damaged
checkpoints, --keep, --backup-uri, and refusing a checkpoint of another configuration."""

from __future__ import annotations

import glob
import os
import pathlib
import warnings

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.errors import UserError
from sg2ada.training.checkpoint import (
    Backup,
    CheckpointCorruptWarning,
    CheckpointKeeper,
    list_checkpoints,
    orphaned_files,
)


def _state(seed=0):
    from test_loop_fakes import FakeTrainer, fake_data_iter

    t = FakeTrainer(seed=seed)
    t.build()
    it = fake_data_iter()
    return t, it


def _items(t, it):
    return dict(t.checkpoint_items(), data_iter=it)


def _run(t, it, n):
    for _ in range(n):
        t.step(it)


def _snapshot(t):
    return [t.w.numpy().copy(), t.d.numpy().copy(), int(t.cur_nimg.numpy()), float(t.augment_p.numpy()),
            [v.numpy().copy() for v in t.opt.variables], t.rng.state.numpy().copy()]


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:4] == b[2:4]
    for x, y in zip(a[4], b[4]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[5], b[5])


def _corrupt(prefix):
    data = pathlib.Path(glob.glob(prefix + ".data-*")[0])
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def test_round_trip_restores_everything_and_continues_identically(tmp_path):
    t, it = _state()
    keeper = CheckpointKeeper(_items(t, it), str(tmp_path), keep=3)
    _run(t, it, 3)
    keeper.save()
    saved = _snapshot(t)
    _run(t, it, 2)
    after = _snapshot(t)

    t2, it2 = _state(seed=1)  # different initial weights: everything must come from the checkpoint
    k2 = CheckpointKeeper(_items(t2, it2), str(tmp_path), keep=3)
    assert k2.restore() == keeper.latest
    _assert_same(_snapshot(t2), saved)
    _run(t2, it2, 2)  # same data, same noise, same optimizer moments -> same result
    _assert_same(_snapshot(t2), after)


def test_no_checkpoint_returns_none_unless_required(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path / "c"))
    assert k.restore() is None
    with pytest.raises(UserError, match="no checkpoint"):
        k.restore(require=True)


def test_keep_limits_checkpoints(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path), keep=2)
    for _ in range(4):
        _run(t, it, 1)
        k.save()
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.index"))) == ["ckpt-3.index", "ckpt-4.index"]
    with pytest.raises(UserError, match="--keep"):
        CheckpointKeeper(_items(t, it), str(tmp_path / "x"), keep=0)


def test_corrupt_newest_falls_back_with_warning(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path), keep=3)
    _run(t, it, 1)
    k.save()
    good = _snapshot(t)
    _run(t, it, 1)
    newest = k.save()
    _corrupt(newest)

    t2, it2 = _state(seed=3)
    k2 = CheckpointKeeper(_items(t2, it2), str(tmp_path), keep=3)
    with pytest.warns(CheckpointCorruptWarning, match="ckpt-2"):
        assert k2.restore().endswith("ckpt-1")
    _assert_same(_snapshot(t2), good)
    # the next save takes a fresh number past the restored one, replacing the damaged file
    _run(t2, it2, 1)
    assert k2.save().endswith("ckpt-2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CheckpointKeeper(_items(*_state()), str(tmp_path)).restore().endswith("ckpt-2")


def test_truncated_and_all_unreadable(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path), keep=3)
    _run(t, it, 1)
    p1 = k.save()
    pathlib.Path(glob.glob(p1 + ".data-*")[0]).write_bytes(b"")  # truncated to nothing
    with pytest.warns(CheckpointCorruptWarning), pytest.raises(UserError, match="unreadable"):
        CheckpointKeeper(_items(*_state()), str(tmp_path)).restore()


def test_kill_before_state_update_keeps_previous(tmp_path):
    """A kill after the data files are written but before the state file is updated: the state file
    still names the previous checkpoint, which is what a restart must load."""
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path), keep=3)
    _run(t, it, 1)
    k.save()
    good = _snapshot(t)
    _run(t, it, 1)
    # what the manager does first, without its state-file callback: an orphan ckpt-2 on disk
    tf.train.Checkpoint(**_items(t, it)).write(str(tmp_path / "ckpt-2"))
    _corrupt(str(tmp_path / "ckpt-2"))  # even half-written, it is never looked at
    assert orphaned_files(str(tmp_path))
    assert list_checkpoints(str(tmp_path)) == [str(tmp_path / "ckpt-1")]
    t2, it2 = _state(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CheckpointKeeper(_items(t2, it2), str(tmp_path)).restore()
    _assert_same(_snapshot(t2), good)


def test_state_file_is_replaced_atomically(tmp_path, monkeypatch):
    """CheckpointManager writes the state file through a temporary file and a rename."""
    from tensorflow.python.lib.io import file_io

    calls = []
    real = file_io.atomic_write_string_to_file
    monkeypatch.setattr(file_io, "atomic_write_string_to_file", lambda *a, **kw: (calls.append(a[0]), real(*a, **kw)))
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path))
    k.save()
    assert calls and all(c == str(tmp_path / "checkpoint") for c in calls)


def test_garbled_state_file_falls_back_to_listing(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path), keep=3)
    _run(t, it, 1)
    k.save()
    _run(t, it, 1)
    k.save()
    want = _snapshot(t)
    (tmp_path / "checkpoint").write_text("garbage {{{ not a proto")
    t2, it2 = _state(seed=4)
    assert CheckpointKeeper(_items(t2, it2), str(tmp_path)).restore().endswith("ckpt-2")
    _assert_same(_snapshot(t2), want)


def test_mismatched_checkpoint_is_a_user_error(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path))
    k.save()
    other = {"G": tf.Variable(tf.zeros([3])), "extra": tf.Variable(1.0)}
    with pytest.raises(UserError, match="does not match"):
        CheckpointKeeper(other, str(tmp_path)).restore()


def test_backup_mirrors_checkpoints_state_last_and_prunes(tmp_path):
    t, it = _state()
    backup = Backup(str(tmp_path / "mnt" / "run"))
    k = CheckpointKeeper(_items(t, it), str(tmp_path / "local"), keep=2, backup=backup)
    for _ in range(3):
        _run(t, it, 1)
        k.save()
    remote = tmp_path / "mnt" / "run" / "checkpoints"
    names = sorted(p.name for p in remote.iterdir())
    assert names == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-3.data-00000-of-00001",
                     "ckpt-3.index"]
    want = _snapshot(t)
    t2, it2 = _state(seed=5)
    assert CheckpointKeeper(_items(t2, it2), str(remote)).restore().endswith("ckpt-3")
    _assert_same(_snapshot(t2), want)
    snap = tmp_path / "snap"
    (snap / "sub").mkdir(parents=True)
    (snap / "sub" / "w.npz").write_bytes(b"abc")
    backup.copy_tree(str(snap), "network-snapshot-000001")
    assert (tmp_path / "mnt" / "run" / "network-snapshot-000001" / "sub" / "w.npz").read_bytes() == b"abc"


def test_non_chief_saves_to_a_private_temp_dir(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path / "ckpts"), chief=False)
    k.save()
    assert not (tmp_path / "ckpts").exists()
    k.close()
