"""The training loop on real tiny runs, through `sg2ada train` as a user types it: the run
directory, the tick schedule, stats.jsonl and TensorBoard, backups, an already finished run, a
non-finite loss, and transfer learning."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_monitor import read_events

from sg2ada.cli.main import main as cli

# 8x8 images and a few channels: every phase traces in seconds.
TINY = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "4", "--batch-gpu", "4",
        "--aug", "noaug", "--metrics", "none", "--seed", "1"]


@pytest.fixture(scope="module")
def data8(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes8"
    convert_dataset("builtin:shapes", dest, resolution=8, max_images=32, log=lambda msg: None)
    return str(dest)


@pytest.fixture(scope="module")
def run(data8, tmp_path_factory):
    """One finished run: 10 iterations of 4 images, a tick every 16 images, snapshots every 2 ticks, 8 of
    the 32 images held out."""
    out = tmp_path_factory.mktemp("runs")
    status = cli(["train", "--outdir", str(out), "--data", data8, *TINY, "--kimg", "0.04", "--tick", "0.016",
                  "--snap", "2", "--keep", "2", "--backup-uri", str(out / "bucket"), "--val", "8"])
    assert status == 0
    (run_dir,) = [p for p in out.iterdir() if p.name != "bucket"]
    return run_dir


@pytest.mark.slow
def test_run_directory_ticks_and_tensorboard(run):
    names = set(os.listdir(run))
    assert {"training_options.json", "reals.png", "fakes_init.png", "fakes000000.png", "network-snapshot-000000",
            "log.txt", "stats.jsonl", "checkpoints"} <= names, names
    # tick 0 after the first iteration, then every 16 images: ticks end at 4, 20, 36 and 40 (done)
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["Progress/kimg"]["mean"] for s in stats] == pytest.approx([0.004, 0.020, 0.036, 0.040])
    assert [s["Progress/tick"]["mean"] for s in stats] == [0, 1, 2, 3]
    assert stats[1]["Loss/G/loss"]["num"] == 4  # every iteration of the tick is in the mean
    # D's sign on training reals minus on the held-out ones: a difference of two means of +-1
    assert all(-2 <= s["Health/val_gap"]["mean"] <= 2 for s in stats)
    log = (run / "log.txt").read_text()
    tick_lines = [line for line in log.splitlines() if line.startswith("tick ")]
    assert len(tick_lines) == 4
    for word in ("kimg", "time", "sec/tick", "sec/kimg", "maintenance", "cpumem", "augment", "loss/G", "loss/D"):
        assert word in tick_lines[0]
    assert "Exiting" in log

    acc = read_events(run)
    tags = set(acc.Tags()["tensors"])
    want = {"Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/signs/real", "Progress/augment", "Progress/kimg",
            "Progress/tick", "Timing/sec_per_tick", "Timing/sec_per_kimg", "Timing/total_hours",
            "Resources/cpu_mem_gb", "Images/fakes", "Images/reals", "Images/interpolation", "Health/val_gap"}
    assert want <= tags, want - tags
    assert "Resources/peak_gpu_mem_gb" not in tags  # no GPU: not reported rather than reported as 0
    assert [e.step for e in acc.Tensors("Progress/kimg")] == [4, 20, 36, 40]
    assert [e.step for e in acc.Tensors("Images/fakes")] == [4, 36, 40]  # ticks 0, 2 and the end
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


@pytest.mark.slow
def test_backup_mirrors_checkpoints_snapshots_and_logs(run):
    remote = run.parent / "bucket" / run.name
    assert sorted(p.name for p in (remote / "checkpoints").glob("*.index")) == \
        sorted(p.name for p in (run / "checkpoints").glob("*.index"))
    assert len(list((run / "checkpoints").glob("*.index"))) == 2  # --keep 2, here and in the backup
    assert (remote / "network-snapshot-000000" / "weights.npz").exists()
    assert (remote / "stats.jsonl").read_text() == (run / "stats.jsonl").read_text()


@pytest.mark.slow
def test_finished_run_does_nothing_and_changes_nothing(run, capsys):
    ckpts = sorted(os.listdir(run / "checkpoints"))
    stats = (run / "stats.jsonl").read_text()
    assert cli(["train", "--resume", str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert sorted(os.listdir(run / "checkpoints")) == ckpts
    assert (run / "stats.jsonl").read_text() == stats


@pytest.mark.slow
def test_non_finite_loss_stops_with_exit_4_and_keeps_the_last_good_checkpoint(data8, tmp_path, capsys):
    # A learning rate this large makes the losses overflow after a dozen iterations or so.
    status = cli(["train", "--outdir", str(tmp_path), "--data", data8, *TINY, "--kimg", "0.2", "--tick", "0.004",
                  "--glr", "30", "--dlr", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 4
    assert err[-1].startswith(("error: Loss/", "error: the weights of")) and "intact" in err[-1]
    (run,) = list(tmp_path.iterdir())
    from sg2ada.training.checkpoint import list_checkpoints

    latest = list_checkpoints(str(run / "checkpoints"))[0]
    assert latest in err[-1]
    import tensorflow as tf

    # the networks (Adam's second moments may already have overflowed: they are not weights)
    values = [np.asarray(tf.train.load_variable(latest, name)) for name, _ in tf.train.list_variables(latest)
              if not name.startswith(("G_opt", "D_opt"))]
    values = [v for v in values if np.issubdtype(v.dtype, np.floating)]
    assert len(values) > 50 and all(np.all(np.isfinite(v)) for v in values)


def test_transfer_learning_copies_matching_weights(tmp_path):
    """`--resume SNAPSHOT` for a new run: G, D and G_ema take the snapshot's weights by name."""
    import tensorflow as tf

    from sg2ada.networks.snapshot import save_snapshot
    from sg2ada.training.options import resolve_options
    from sg2ada.training.trainer import Trainer
    from sg2ada.training.transfer import load_transfer_weights

    opts = resolve_options(data=None, resolution=16, img_channels=3, label_dim=0, cfg="tiny", cbase=128, cmax=8,
                           map=1, batch=4, batch_gpu=4, aug="noaug")
    one = tf.distribute.get_strategy()
    src = Trainer(opts.replace(seed=1), one)
    dst = Trainer(opts.replace(seed=2), one)
    for v in src.G.named_variables().values():  # make the source unmistakable
        v.assign(v + 1.0)
    name = "synthesis/4x4/Conv/weight"
    assert not np.allclose(src.G.named_variables()[name].numpy(), dst.G.named_variables()[name].numpy())
    path = str(tmp_path / "snap")
    save_snapshot(path, src.G, src.D, src.G_ema)
    load_transfer_weights(dst, path)
    for key in ("G", "D", "G_ema"):
        a, b = getattr(src, key).named_variables(), getattr(dst, key).named_variables()
        for n in a:
            np.testing.assert_array_equal(a[n].numpy(), b[n].numpy(), err_msg=f"{key}/{n}")
