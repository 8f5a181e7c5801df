"""`sg2ada train`: option parsing, --dry-run, run directory naming, and short real training runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sg2ada.cli.main import main as cli


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A 64-image copy of the built-in shapes dataset (32x32, 3 class labels)."""
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes"
    convert_dataset("builtin:shapes", dest, max_images=64, log=lambda msg: None)
    return str(dest)


def test_dry_run_prints_options_and_writes_nothing(shapes, tmp_path, capsys):
    out = tmp_path / "runs"
    before = sorted(os.listdir(shapes))
    assert cli(["train", "--outdir", str(out), "--data", shapes, "--cfg", "tiny", "--mirror", "--gamma", "0.5",
                "--kimg", "12", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Dry run; exiting." in text
    assert f"{os.path.join(str(out), '00000-shapes-mirror-tiny-gamma0.5-kimg12')}" in text
    assert '"r1_gamma": 0.5' in text and '"mirror": true' in text and '"snap": 50' in text
    assert not out.exists()
    assert sorted(os.listdir(shapes)) == before


@pytest.mark.parametrize("argv,message", [
    (["--cfg", "bogus"], "--cfg"),
    (["--snap", "0"], "--snap"),
    (["--keep", "0"], "--keep"),
    (["--aug", "fixed"], "--p"),
    (["--metrics", "nonsense"], "--metrics"),
])
def test_bad_options_are_one_line_user_errors(shapes, tmp_path, capsys, argv, message):
    assert cli(["train", "--outdir", str(tmp_path / "r"), "--data", shapes, "--cfg", "tiny", *argv, "-n"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "r").exists()


def test_missing_data_and_outdir(tmp_path, capsys):
    assert cli(["train", "--outdir", str(tmp_path), "--data", str(tmp_path / "nope"), "-n"]) == 2
    assert "--data" in capsys.readouterr().err
    assert cli(["train", "--data", str(tmp_path), "-n"]) == 2
    assert "--outdir" in capsys.readouterr().err
    assert cli(["train", "--resume", "latest", "-n"]) == 2
    assert "--resume latest needs --outdir" in capsys.readouterr().err
    assert cli(["train", "--outdir", str(tmp_path), "--data", str(tmp_path), "--resume", "/no/such/run"]) == 2
    assert "--resume /no/such/run: no such" in capsys.readouterr().err


def test_resume_latest_without_runs_starts_a_new_run(shapes, tmp_path, capsys):
    assert cli(["train", "--outdir", str(tmp_path), "--data", shapes, "--cfg", "tiny", "--resume", "latest",
                "-n"]) == 0
    out = capsys.readouterr().out
    assert "starting a new run" in out and "00000-shapes-tiny" in out and "resumecustom" not in out


def test_boolean_options_take_nvidia_spellings():
    from sg2ada.cli.main import build_parser

    p = build_parser()
    a = p.parse_args(["train", "--mirror", "--data", "x"])
    assert a.mirror is True
    assert p.parse_args(["train", "--mirror=0"]).mirror is False
    assert p.parse_args(["train", "--mirror", "1", "--cond", "false"]).cond is False
    assert p.parse_args(["train", "--no-xla"]).xla is False
    assert p.parse_args(["train"]).xla is None


@pytest.mark.slow
def test_train_then_continue_the_same_run(shapes, tmp_path, capsys):
    """A real (tiny) training run end to end, then `--resume RUN_DIR` continuing it in place."""
    out = tmp_path / "runs"
    common = ["--data", shapes, "--cfg", "tiny", "--batch", "4", "--batch-gpu", "4", "--cbase", "256",
              "--cmax", "16", "--map", "1", "--tick", "0.008", "--snap", "2", "--keep", "2", "--aug", "noaug"]
    assert cli(["train", "--outdir", str(out), *common, "--kimg", "0.016"]) == 0
    (run,) = list(out.iterdir())
    assert run.name == "00000-shapes-tiny-kimg0.016-batch4-noaug"
    names = set(os.listdir(run))
    assert {"training_options.json", "log.txt", "stats.jsonl", "reals.png", "fakes_init.png", "fakes000000.png",
            "network-snapshot-000000", "checkpoints"} <= names, names
    opts = json.loads((run / "training_options.json").read_text())
    assert opts["batch_size"] == 4 and opts["snap"] == 2 and opts["kimg_per_tick"] == 0.008
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["Progress/kimg"]["mean"] == pytest.approx(0.016)
    assert {"Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/scores/fake", "Progress/augment"} <= set(stats[-1])
    log = (run / "log.txt").read_text()
    assert "tick 0" in log and "Exiting" in log
    from sg2ada import load_network

    nets = load_network(str(run / "network-snapshot-000000"))
    assert nets.G_ema.config.img_resolution == 32

    capsys.readouterr()
    assert cli(["train", "--resume", str(run), "--kimg", "0.032"]) == 0
    text = capsys.readouterr().out
    assert "Resumed from" in text and "kimg 0.0" in text
    assert list(out.iterdir()) == [run]  # continued in place, no new run directory
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["Progress/kimg"]["mean"] == pytest.approx(0.032)
    ticks = [s["Progress/tick"]["mean"] for s in stats]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert json.loads((run / "training_options.json").read_text())["total_kimg"] == 0.032
    assert len(list((run / "checkpoints").glob("*.index"))) == 2  # --keep 2 survives the restart
    assert np.isfinite(stats[-1]["Loss/G/loss"]["mean"])
