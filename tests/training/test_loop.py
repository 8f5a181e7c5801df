"""The training loop with a fake trainer: ticks, files, TensorBoard tags, resume, NaN stop."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_loop_fakes import make_loop
from test_monitor import read_events

from sg2ada.training.training_loop import (
    EXIT_DONE,
    NonFiniteLossError,
    settings_from_options,
)


def test_run_writes_the_run_directory(tmp_path, capsys):
    loop = make_loop(str(tmp_path), kimg=0.04, tick_kimg=0.016, snap=2)
    assert loop.run() == EXIT_DONE
    names = set(os.listdir(tmp_path))
    assert {"reals.png", "fakes_init.png", "fakes000000.png", "network-snapshot-000000", "log.txt", "stats.jsonl",
            "checkpoints"} <= names
    # batches of 4 -> 10 iterations; tick 0 after 1, then every 16 images: ticks at 4, 20, 36, 40 (done)
    stats = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [s["Progress/kimg"]["mean"] for s in stats] == pytest.approx([0.004, 0.020, 0.036, 0.040])
    assert [s["Progress/tick"]["mean"] for s in stats] == [0, 1, 2, 3]
    assert stats[1]["Loss/G/loss"]["num"] == 4  # every iteration of the tick is in the mean
    log = (tmp_path / "log.txt").read_text()
    tick_lines = [line for line in log.splitlines() if line.startswith("tick ")]
    assert len(tick_lines) == 4
    for word in ("kimg", "time", "sec/tick", "sec/kimg", "maintenance", "cpumem", "augment", "loss/G", "loss/D"):
        assert word in tick_lines[0]
    assert "Exiting" in capsys.readouterr().out

    acc = read_events(tmp_path)
    tags = set(acc.Tags()["tensors"])
    want = {"Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/signs/real", "Progress/augment", "Progress/kimg",
            "Progress/tick", "Timing/sec_per_tick", "Timing/sec_per_kimg", "Timing/total_hours",
            "Resources/cpu_mem_gb", "Images/fakes", "Images/reals", "Images/interpolation"}
    assert want <= tags, want - tags
    assert "Resources/peak_gpu_mem_gb" not in tags  # no GPU: not reported rather than reported as 0
    assert [e.step for e in acc.Tensors("Progress/kimg")] == [4, 20, 36, 40]
    assert [e.step for e in acc.Tensors("Images/fakes")] == [4, 36, 40]  # ticks 0, 2 and the end
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_resume_in_process_matches_straight_run(tmp_path):
    straight = make_loop(str(tmp_path / "a"), kimg=0.048, tick_kimg=0.008)
    os.makedirs(straight.run_dir)
    straight.run()

    os.makedirs(tmp_path / "b")
    first = make_loop(str(tmp_path / "b"), kimg=0.024, tick_kimg=0.008)
    first.run()
    second = make_loop(str(tmp_path / "b"), kimg=0.048, tick_kimg=0.008)
    second.run(resume_from=str(tmp_path / "b" / "checkpoints"))
    assert int(second.trainer.cur_nimg.numpy()) == 48
    np.testing.assert_array_equal(second.trainer.w.numpy(), straight.trainer.w.numpy())
    assert float(second.trainer.augment_p.numpy()) == float(straight.trainer.augment_p.numpy())
    # one continuous history: the resumed run continues tick numbers and appends to stats.jsonl
    ticks = [json.loads(x)["Progress/tick"]["mean"] for x in (tmp_path / "b" / "stats.jsonl").read_text().splitlines()]
    assert ticks == list(range(len(ticks)))
    assert (tmp_path / "b" / "fakes_init.png").stat().st_size != 0


def test_already_finished_run_does_nothing(tmp_path, capsys):
    make_loop(str(tmp_path), kimg=0.008, tick_kimg=0.004).run()
    ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
    again = make_loop(str(tmp_path), kimg=0.008, tick_kimg=0.004)
    assert again.run() == EXIT_DONE
    assert "nothing to do" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ckpts


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    loop = make_loop(str(tmp_path), kimg=1, tick_kimg=0.008, nan_at_nimg=30)
    with pytest.raises(NonFiniteLossError, match=r"Loss/G/loss became nan at kimg 0\.0.*intact") as e:
        loop.run()
    assert e.value.exit_code == 4
    resumed = make_loop(str(tmp_path), kimg=1, tick_kimg=0.008)
    resumed.trainer.build()
    from sg2ada.training.checkpoint import CheckpointKeeper

    CheckpointKeeper(resumed._checkpoint_items(), str(tmp_path / "checkpoints")).restore()
    assert int(resumed.trainer.cur_nimg.numpy()) == 28  # ticks end at 4, 12, 20, 28; the NaN comes at 32
    assert np.all(np.isfinite(resumed.trainer.w.numpy()))


def test_settings_from_options_reads_training_options_names():
    s = settings_from_options({"total_kimg": 12, "kimg_per_tick": 2, "snap": 5, "metrics": "none", "seed": 3,
                               "keep": 2, "backup_uri": "/b"})
    assert (s.total_kimg, s.kimg_per_tick, s.snap, s.metrics, s.seed, s.keep, s.backup_uri) == \
        (12.0, 2.0, 5, [], 3, 2, "/b")
    assert settings_from_options({"kimg": 3, "metrics": "fid50k_full,kid50k_full"}).metrics == \
        ["fid50k_full", "kid50k_full"]


def test_backup_uri_mirrors_checkpoints_snapshots_and_logs(tmp_path):
    run = tmp_path / "00000-x"
    run.mkdir()
    loop = make_loop(str(run), kimg=0.016, tick_kimg=0.008, snap=1, keep=2, backup_uri=str(tmp_path / "mnt"))
    assert loop.run() == EXIT_DONE
    remote = tmp_path / "mnt" / "00000-x"
    assert sorted(p.name for p in (remote / "checkpoints").glob("*.index")) == \
        sorted(p.name for p in (run / "checkpoints").glob("*.index"))
    assert (remote / "checkpoints" / "checkpoint").read_text() == (run / "checkpoints" / "checkpoint").read_text()
    assert (remote / "network-snapshot-000000" / "G_ema.npy").exists()
    assert (remote / "stats.jsonl").read_text() == (run / "stats.jsonl").read_text()
    assert not list(remote.rglob("*.tmp-backup"))


def test_metrics_at_snapshots_go_to_tensorboard(tmp_path):
    seen = []

    def metrics_fn(snapshot_path, trainer, settings):
        seen.append(os.path.basename(snapshot_path))
        return {"fid50k_full": 42.0 + len(seen)}

    loop = make_loop(str(tmp_path), kimg=0.012, tick_kimg=0.004, snap=2)
    loop.metrics_fn = metrics_fn
    loop.run()
    assert seen == ["network-snapshot-000000", "network-snapshot-000000"]  # ticks 0 and 2 (the end)
    acc = read_events(tmp_path)
    assert [e.step for e in acc.Tensors("Metrics/fid50k_full")] == [4, 12]


def test_unknown_metrics_fail_before_training(tmp_path):
    from sg2ada.errors import UserError

    loop = make_loop(str(tmp_path), kimg=0.012, tick_kimg=0.004)
    loop.s.metrics = ["no_such_metric"]
    with pytest.raises(UserError, match="no_such_metric"):
        loop.run()
    assert not list(tmp_path.glob("fakes0*.png")) and "tick 0" not in (tmp_path / "log.txt").read_text()


def test_transfer_learning_copies_matching_weights():
    """`--resume SNAPSHOT` for a new run: G, D and G_ema take the snapshot's weights by name."""
    import tempfile

    from sg2ada.networks.snapshot import save_snapshot
    from sg2ada.training.options import resolve_options
    from sg2ada.training.trainer import Trainer
    from sg2ada.training.training_loop import load_transfer_weights

    opts = resolve_options(data=None, resolution=16, img_channels=3, label_dim=0, cfg="tiny", cbase=128, cmax=8,
                           map=1, batch=4, batch_gpu=4, aug="noaug")
    src = Trainer(opts.replace(seed=1), None)
    dst = Trainer(opts.replace(seed=2), None)
    for v in src.G.named_variables().values():  # make the source unmistakable
        v.assign(v + 1.0)
    name = "synthesis/4x4/Conv/weight"
    assert not np.allclose(src.G.named_variables()[name].numpy(), dst.G.named_variables()[name].numpy())
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "snap")
        save_snapshot(path, src.G, src.D, src.G_ema)
        load_transfer_weights(dst, path)
    for key in ("G", "D", "G_ema"):
        a, b = getattr(src, key).named_variables(), getattr(dst, key).named_variables()
        for n in a:
            np.testing.assert_array_equal(a[n].numpy(), b[n].numpy(), err_msg=f"{key}/{n}")
