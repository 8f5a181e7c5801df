"""CheckpointKeeper: full-state round trip, crash-safety of the write order, fallback past damaged
checkpoints, --keep, refusing a checkpoint of another configuration, and --backup-uri: the mirror
of a run on a mounted path, a loopback S3 server and a GCS emulator, fetch_run and latest_run."""

from __future__ import annotations

import glob
import os
import pathlib
import warnings

import numpy as np
import pytest
import tensorflow as tf
from object_store_servers import FaultProxy, gcs, s3  # noqa: F401  (fixtures)

from sg2ada.errors import UserError
from sg2ada.storage import open_store
from sg2ada.training.checkpoint import (
    Backup,
    CheckpointCorruptWarning,
    CheckpointKeeper,
    fetch_run,
    latest_run,
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


@pytest.fixture(params=["local", "s3", "gs"])
def backup_root(request, tmp_path):
    """Where --backup-uri points: a mounted path, or a bucket on a loopback S3 server / GCS emulator."""
    if request.param == "local":
        return str(tmp_path / "mnt")
    _server, bucket = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return f"{request.param}://{bucket}/runs"


def _fake_run(tmp_path, t, it, keep=2, saves=3, **backup_kwargs):
    """A run directory with its files, `saves` checkpoints and a snapshot, backed up to `uri`."""
    run_dir = tmp_path / "local" / "00003-fake"
    run_dir.mkdir(parents=True)
    for name, text in [("training_options.json", '{"cfg": "tiny"}'), ("stats.jsonl", "{}\n"), ("log.txt", "hi\n")]:
        (run_dir / name).write_text(text)
    backup = Backup(backup_kwargs.pop("uri"), retry_sec=0.05, **backup_kwargs)
    k = CheckpointKeeper(_items(t, it), str(run_dir / "checkpoints"), keep=keep, backup=backup)
    for _ in range(saves):
        _run(t, it, 1)
        k.save()
    backup.copy_run_files(str(run_dir))
    snap = run_dir / "network-snapshot-000001"
    (snap / "sub").mkdir(parents=True)
    (snap / "sub" / "w.npz").write_bytes(b"abc")
    (snap / "snapshot.json").write_text("{}")
    backup.copy_tree(str(snap), snap.name)
    return run_dir, k


def test_backup_mirrors_the_run_prunes_per_keep_and_fetch_run_restores_it(backup_root, tmp_path):
    t, it = _state()
    uri = f"{backup_root}/00003-fake"
    run_dir, k = _fake_run(tmp_path, t, it, uri=uri)
    want = _snapshot(t)
    assert k.backup.flush(60)
    remote = open_store(uri)
    assert remote.list("checkpoints") == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
                                          "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert remote.read_bytes("network-snapshot-000001/sub/w.npz") == b"abc"
    assert remote.read_bytes("log.txt") == b"hi\n"
    k.close()

    fresh = tmp_path / "fresh"
    assert fetch_run(uri, str(fresh)) == str(fresh / "checkpoints" / "ckpt-3")
    for name in ("training_options.json", "stats.jsonl", "log.txt"):
        assert (fresh / name).read_bytes() == (run_dir / name).read_bytes()
    assert sorted(p.name for p in (fresh / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    t2, it2 = _state(seed=5)
    k2 = CheckpointKeeper(_items(t2, it2), str(fresh / "checkpoints"), keep=2)
    assert k2.restore().endswith("ckpt-3")
    _assert_same(_snapshot(t2), want)
    _run(t2, it2, 1)
    assert k2.save().endswith("ckpt-4")  # numbering continues after the fetched checkpoint

    # The newest run with a complete checkpoint; a newer run that has none yet does not count.
    open_store(f"{backup_root}/00007-fake").put_bytes(b"{}", "training_options.json")
    open_store(f"{backup_root}/00009-fake").put_bytes(b"{}", "checkpoints/ckpt-1.index")
    assert latest_run(backup_root) == uri
    assert latest_run(f"{backup_root}/00009-fake") is None


def test_fetch_run_skips_a_checkpoint_that_is_not_complete_in_the_bucket(tmp_path):
    t, it = _state()
    uri = str(tmp_path / "mnt" / "00001-fake")
    _run_dir, k = _fake_run(tmp_path, t, it, uri=uri)
    k.close()
    store = open_store(uri)
    store.delete(["checkpoints/ckpt-3.data-00000-of-00001"])  # a damaged backup: newest data gone
    assert fetch_run(uri, str(tmp_path / "fresh")).endswith("ckpt-2")
    store.delete(["checkpoints/ckpt-2.index"])
    assert fetch_run(uri, str(tmp_path / "fresh2")) is None
    assert (tmp_path / "fresh2" / "training_options.json").exists()
    with pytest.raises(UserError, match="nothing there"):
        fetch_run(str(tmp_path / "mnt" / "00002-none"), str(tmp_path / "fresh3"))


def test_backup_reuploads_files_left_by_an_interrupted_upload(tmp_path):
    """A checkpoint name not recorded by the backup's state file may hold files of an interrupted
    upload from an earlier session (same number, other content): they are uploaded again."""
    t, it = _state()
    uri = str(tmp_path / "mnt" / "00001-fake")
    store = open_store(uri)
    store.put_bytes(b"stale", "checkpoints/ckpt-1.data-00000-of-00001")
    _run_dir, k = _fake_run(tmp_path, t, it, uri=uri, saves=1)
    k.close()
    assert store.read_bytes("checkpoints/ckpt-1.data-00000-of-00001") != b"stale"
    assert fetch_run(uri, str(tmp_path / "fresh")).endswith("ckpt-1")


def test_backup_uploads_checkpoint_data_then_index_then_state_then_prunes(s3, tmp_path, monkeypatch):
    """The order of the requests the S3 server received: a checkpoint is named by the bucket's state
    file only after all its files are there, and pruned ones go only after that."""
    server, bucket = s3
    proxy = FaultProxy(server.port)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        t, it = _state()
        backup = Backup(f"s3://{bucket}/runs/00001-fake")
        k = CheckpointKeeper(_items(t, it), str(tmp_path / "checkpoints"), keep=1, backup=backup)
        for _ in range(2):
            _run(t, it, 1)
            k.save()
            assert backup.flush(60)  # else the second save's upload would replace the first's
        k.close()
    finally:
        proxy.stop()
    ops = [(m, p.split("?")[0].rsplit("/", 1)[-1]) for m, p, status in proxy.requests
           if status in (200, 204) and "/checkpoints/" in p and m in ("PUT", "DELETE")]
    assert ops == [("PUT", "ckpt-1.data-00000-of-00001"), ("PUT", "ckpt-1.index"), ("PUT", "checkpoint"),
                   ("PUT", "ckpt-2.data-00000-of-00001"), ("PUT", "ckpt-2.index"), ("PUT", "checkpoint"),
                   ("DELETE", "ckpt-1.data-00000-of-00001"), ("DELETE", "ckpt-1.index")]


def test_backup_to_an_unwritable_location_is_one_line_and_writes_nothing(s3, tmp_path):
    with pytest.raises(UserError) as e:
        Backup("s3://no-such-bucket-sg2ada/runs/00001-x")
    assert "\n" not in str(e.value) and "--backup-uri s3://no-such-bucket-sg2ada/runs/00001-x" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_non_chief_saves_to_a_private_temp_dir(tmp_path):
    t, it = _state()
    k = CheckpointKeeper(_items(t, it), str(tmp_path / "ckpts"), chief=False)
    k.save()
    assert not (tmp_path / "ckpts").exists()
    k.close()
