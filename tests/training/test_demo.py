"""`make demo` driver: dataset reuse, the train command it runs, its final report and picture.
(The training itself is covered by test_cli_train; here `sg2ada train` is replaced by a stand-in.)"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import pytest

from sg2ada.cli import demo


def _grid(path, value):
    PIL.Image.fromarray(np.full([64, 128, 3], value, np.uint8)).save(path)


def test_demo_runs_tiny_with_a_time_limit_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "demo-data" / "shapes"
    data.mkdir(parents=True)
    (data / "dataset.json").write_text("{}")  # present: the demo must not rebuild it
    monkeypatch.setenv("SG2ADA_DEMO_MINUTES", "0.5")
    calls = []

    def fake_cli(argv):
        calls.append(argv)
        run = tmp_path / "runs" / "00000-shapes-tiny"
        run.mkdir(parents=True)
        _grid(run / "fakes_init.png", 10)
        _grid(run / "fakes000000.png", 100)
        _grid(run / "fakes000004.png", 200)
        (run / "stats.jsonl").write_text('{"Progress/kimg": {"num": 1, "mean": 4.0, "std": 0.0}}\n')
        return 0

    monkeypatch.setattr("sg2ada.cli.main.main", fake_cli)
    assert demo.main() == 0
    (argv,) = calls
    assert argv[:2] == ["train", "--outdir"] and "--cfg" in argv and argv[argv.index("--cfg") + 1] == "tiny"
    assert argv[argv.index("--time-limit") + 1] == "0.5"
    assert argv[argv.index("--data") + 1] == os.path.join("demo-data", "shapes")
    out = capsys.readouterr().out
    assert "Using the demo dataset" in out
    assert os.path.join("runs", "00000-shapes-tiny", "fakes000004.png") in out
    assert "tensorboard --logdir runs" in out
    report = tmp_path / "runs" / "00000-shapes-tiny" / "report.html"
    assert f"Report:         {os.path.join('runs', '00000-shapes-tiny', 'report.html')}" in out and report.is_file()
    pic = np.asarray(PIL.Image.open(tmp_path / "runs" / "00000-shapes-tiny" / "demo-before-after.png"))
    # left panel from fakes_init (10), right panel from the newest grid (200), white gap between
    assert pic[0, 0, 0] == 10 and pic[0, -1, 0] == 200 and (pic[:, pic.shape[1] // 2] == 255).all()


def test_bad_minutes_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SG2ADA_DEMO_MINUTES", "soon")
    assert demo.main() == 2
    assert "SG2ADA_DEMO_MINUTES" in capsys.readouterr().err


@pytest.mark.parametrize("raw,want", [(None, demo.DEFAULT_MINUTES), ("2", 2.0)])
def test_minutes(monkeypatch, raw, want):
    if raw is None:
        monkeypatch.delenv("SG2ADA_DEMO_MINUTES", raising=False)
    else:
        monkeypatch.setenv("SG2ADA_DEMO_MINUTES", raw)
    assert demo._minutes() == want
