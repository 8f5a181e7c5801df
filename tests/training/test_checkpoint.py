"""CheckpointKeeper on the real Trainer at 8x8: full-state round trip, crash-safety of the write order,
fallback past damaged checkpoints, --keep, refusing a checkpoint of another configuration, and
--backup-uri: the mirror of a run on a mounted path, a loopback S3 server and a GCS emulator,
fetch_run and latest_run."""

from __future__ import annotations

import glob
import os
import pathlib
import warnings

import keras
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
from sg2ada.training.options import resolve_options
from sg2ada.training.trainer import Trainer


@pytest.fixture(scope="module")
def trainer():
    """The real Trainer at 8x8 with a few channels, stepped once so that every phase is traced once."""
    opts = resolve_options(resolution=8, img_channels=3, label_dim=0, cfg="tiny", cbase=128, cmax=16, map=1,
                           batch=4, batch_gpu=4, aug="noaug", metrics="none")
    t = Trainer(opts, tf.distribute.get_strategy())
    _run(t, 1)
    return t


def _run(t, n):
    images = np.random.RandomState(0).uniform(-1, 1, [4, 8, 8, 3]).astype(np.float32)
    batches = iter(tf.data.Dataset.from_tensors((images, np.zeros([4, 0], np.float32))).repeat())
    for _ in range(n):
        t.step(batches)


def _values(t) -> dict:
    """The whole training state of `t`, by object and position: what a checkpoint must bring back."""
    out = {}
    for key in ("G", "D", "G_ema", "G_opt", "D_opt", "ada", "pl_mean", "cur_nimg", "batch_idx", "rng_seed"):
        item = getattr(t, key)
        for i, v in enumerate(getattr(item, "variables", [item])):
            out[f"{key}/{i}"] = np.array(v.numpy())
    return out


def _changed(a, b) -> set:
    """The checkpoint items whose values differ between two `_values`."""
    return {k.split("/")[0] for k in a if not np.array_equal(a[k], b[k])}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _corrupt(prefix):
    data = pathlib.Path(glob.glob(prefix + ".data-*")[0])
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def test_round_trip_restores_everything_and_continues_identically(trainer, tmp_path):
    keeper = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    _run(trainer, 3)
    keeper.save()
    saved = _values(trainer)
    _run(trainer, 2)
    after = _values(trainer)
    # what two iterations move (rng_seed is fixed, and ADA is off): restoring must bring it all back
    assert _changed(saved, after) >= {"G", "D", "G_ema", "G_opt", "D_opt", "pl_mean", "cur_nimg", "batch_idx"}

    assert CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path)).restore() == keeper.latest
    _assert_same(_values(trainer), saved)
    _run(trainer, 2)  # same data, same noise, same optimizer moments -> same result
    _assert_same(_values(trainer), after)

    keras.utils.set_random_seed(5)  # a fresh Trainer with other weights: everything comes from the checkpoint
    fresh = Trainer(trainer.opts, tf.distribute.get_strategy())
    assert _changed(_values(fresh), saved) >= {"G", "D", "G_ema", "cur_nimg", "batch_idx"}
    CheckpointKeeper(fresh.checkpoint_items(), str(tmp_path)).restore()
    _assert_same(_values(fresh), saved)


def test_no_checkpoint_returns_none_unless_required(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path / "c"))
    assert k.restore() is None
    with pytest.raises(UserError, match="no checkpoint"):
        k.restore(require=True)


def test_keep_limits_checkpoints(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=2)
    for _ in range(4):
        k.save()
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.index"))) == ["ckpt-3.index", "ckpt-4.index"]
    with pytest.raises(UserError, match="--keep"):
        CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path / "x"), keep=0)


def test_corrupt_newest_falls_back_with_warning(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    _run(trainer, 1)
    k.save()
    good = _values(trainer)
    _run(trainer, 1)
    newest = k.save()
    _corrupt(newest)
    _run(trainer, 1)  # move on, so that the restore shows

    k2 = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    with pytest.warns(CheckpointCorruptWarning, match="ckpt-2"):
        assert k2.restore().endswith("ckpt-1")
    _assert_same(_values(trainer), good)
    # the next save takes a fresh number past the restored one, replacing the damaged file
    _run(trainer, 1)
    assert k2.save().endswith("ckpt-2")
    want = _values(trainer)
    _run(trainer, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path)).restore().endswith("ckpt-2")
    _assert_same(_values(trainer), want)


def test_truncated_and_all_unreadable(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    p1 = k.save()
    pathlib.Path(glob.glob(p1 + ".data-*")[0]).write_bytes(b"")  # truncated to nothing
    with pytest.warns(CheckpointCorruptWarning), pytest.raises(UserError, match="unreadable"):
        CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path)).restore()


def test_kill_before_state_update_keeps_previous(trainer, tmp_path):
    """A kill after the data files are written but before the state file is updated: the state file
    still names the previous checkpoint, which is what a restart must load."""
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    _run(trainer, 1)
    k.save()
    good = _values(trainer)
    _run(trainer, 1)
    # what the manager does first, without its state-file callback: an orphan ckpt-2 on disk
    tf.train.Checkpoint(**trainer.checkpoint_items()).write(str(tmp_path / "ckpt-2"))
    _corrupt(str(tmp_path / "ckpt-2"))  # even half-written, it is never looked at
    assert orphaned_files(str(tmp_path))
    assert list_checkpoints(str(tmp_path)) == [str(tmp_path / "ckpt-1")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path)).restore()
    _assert_same(_values(trainer), good)


def test_leftovers_of_interrupted_saves_are_removed_at_start(trainer, tmp_path):
    """A kill inside a save leaves `ckpt-N_temp/`; a full disk during the state file's write leaves
    `checkpoint.tmp<hex>`. Neither is named by the state file: the next keeper removes both."""
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    k.save()
    (tmp_path / "ckpt-2_temp").mkdir()
    (tmp_path / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    (tmp_path / "checkpoint.tmp0123abcd").write_text('model_checkpoint_path: "ckpt-')
    k2 = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    assert k2.restore().endswith("ckpt-1")


def test_state_file_is_replaced_atomically(trainer, tmp_path, monkeypatch):
    """CheckpointManager writes the state file through a temporary file and a rename."""
    from tensorflow.python.lib.io import file_io

    calls = []
    real = file_io.atomic_write_string_to_file
    monkeypatch.setattr(file_io, "atomic_write_string_to_file", lambda *a, **kw: (calls.append(a[0]), real(*a, **kw)))
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path))
    k.save()
    assert calls and all(c == str(tmp_path / "checkpoint") for c in calls)


def test_garbled_state_file_falls_back_to_listing(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path), keep=3)
    k.save()
    _run(trainer, 1)
    k.save()
    want = _values(trainer)
    _run(trainer, 1)
    (tmp_path / "checkpoint").write_text("garbage {{{ not a proto")
    assert CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path)).restore().endswith("ckpt-2")
    _assert_same(_values(trainer), want)


def test_mismatched_checkpoint_is_a_user_error(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path))
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


def _fake_run(tmp_path, t, keep=2, saves=3, **backup_kwargs):
    """A run directory with its files, `saves` checkpoints and a snapshot, backed up to `uri`."""
    run_dir = tmp_path / "local" / "00003-fake"
    run_dir.mkdir(parents=True)
    for name, text in [("training_options.json", '{"cfg": "tiny"}'), ("stats.jsonl", "{}\n"), ("log.txt", "hi\n")]:
        (run_dir / name).write_text(text)
    backup = Backup(backup_kwargs.pop("uri"), retry_sec=0.05, **backup_kwargs)
    k = CheckpointKeeper(t.checkpoint_items(), str(run_dir / "checkpoints"), keep=keep, backup=backup)
    for _ in range(saves):
        _run(t, 1)
        k.save()
    backup.copy_run_files(str(run_dir))
    snap = run_dir / "network-snapshot-000001"
    (snap / "sub").mkdir(parents=True)
    (snap / "sub" / "w.npz").write_bytes(b"abc")
    (snap / "snapshot.json").write_text("{}")
    backup.copy_tree(str(snap), snap.name)
    return run_dir, k


def test_backup_mirrors_the_run_prunes_per_keep_and_fetch_run_restores_it(trainer, backup_root, tmp_path):
    t = trainer
    uri = f"{backup_root}/00003-fake"
    run_dir, k = _fake_run(tmp_path, t, uri=uri)
    want = _values(t)
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
    _run(t, 1)  # move away from the backed-up state, then fetch it back
    k2 = CheckpointKeeper(t.checkpoint_items(), str(fresh / "checkpoints"), keep=2)
    assert k2.restore().endswith("ckpt-3")
    _assert_same(_values(t), want)
    _run(t, 1)
    assert k2.save().endswith("ckpt-4")  # numbering continues after the fetched checkpoint

    # The newest run with a complete checkpoint; a newer run that has none yet does not count.
    open_store(f"{backup_root}/00007-fake").put_bytes(b"{}", "training_options.json")
    open_store(f"{backup_root}/00009-fake").put_bytes(b"{}", "checkpoints/ckpt-1.index")
    assert latest_run(backup_root) == uri
    assert latest_run(f"{backup_root}/00009-fake") is None


def test_fetch_run_skips_a_checkpoint_that_is_not_complete_in_the_bucket(trainer, tmp_path):
    uri = str(tmp_path / "mnt" / "00001-fake")
    _run_dir, k = _fake_run(tmp_path, trainer, uri=uri)
    k.close()
    store = open_store(uri)
    store.delete(["checkpoints/ckpt-3.data-00000-of-00001"])  # a damaged backup: newest data gone
    assert fetch_run(uri, str(tmp_path / "fresh")).endswith("ckpt-2")
    store.delete(["checkpoints/ckpt-2.index"])
    assert fetch_run(uri, str(tmp_path / "fresh2")) is None
    assert (tmp_path / "fresh2" / "training_options.json").exists()
    with pytest.raises(UserError, match="nothing there"):
        fetch_run(str(tmp_path / "mnt" / "00002-none"), str(tmp_path / "fresh3"))


def test_backup_reuploads_files_left_by_an_interrupted_upload(trainer, tmp_path):
    """A checkpoint name not recorded by the backup's state file may hold files of an interrupted
    upload from an earlier session (same number, other content): they are uploaded again."""
    uri = str(tmp_path / "mnt" / "00001-fake")
    store = open_store(uri)
    store.put_bytes(b"stale", "checkpoints/ckpt-1.data-00000-of-00001")
    _run_dir, k = _fake_run(tmp_path, trainer, uri=uri, saves=1)
    k.close()
    assert store.read_bytes("checkpoints/ckpt-1.data-00000-of-00001") != b"stale"
    assert fetch_run(uri, str(tmp_path / "fresh")).endswith("ckpt-1")


def test_backup_uploads_checkpoint_data_then_index_then_state_then_prunes(trainer, s3, tmp_path, monkeypatch):
    """The order of the requests the S3 server received: a checkpoint is named by the bucket's state
    file only after all its files are there, and pruned ones go only after that."""
    server, bucket = s3
    proxy = FaultProxy(server.port)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        backup = Backup(f"s3://{bucket}/runs/00001-fake")
        k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path / "checkpoints"), keep=1, backup=backup)
        for _ in range(2):
            _run(trainer, 1)
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


def test_non_chief_saves_to_a_private_temp_dir(trainer, tmp_path):
    k = CheckpointKeeper(trainer.checkpoint_items(), str(tmp_path / "ckpts"), chief=False)
    k.save()
    assert not (tmp_path / "ckpts").exists()
    k.close()
