"""`sg2ada report` on a run directory made by a real (tiny) `sg2ada train` run plus `sg2ada metrics
--metrics copy1k_full`: one HTML file with the plots and pictures embedded, no external URL, written
atomically; health warnings and `Health/` numbers appear when the run has them; bad paths are
one-line errors. The tiny run's statistics also go through the health monitor, which must stay quiet."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest

from sg2ada.cli.main import main as cli

_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from sg2ada.data import convert_dataset

    base = tmp_path_factory.mktemp("report")
    data = base / "shapes"
    convert_dataset("builtin:shapes", data, max_images=32, resolution=8, log=lambda msg: None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SG2ADA_CACHE", str(base / "cache"))  # no Inception file: the metric uses pixel features
        mp.setenv("SG2ADA_OFFLINE", "1")
        mp.delenv("SG2ADA_INCEPTION", raising=False)
        assert cli(["train", "--outdir", str(base / "runs"), "--data", str(data), "--cfg", "tiny", "--batch", "4",
                    "--batch-gpu", "4", "--cbase", "256", "--cmax", "16", "--map", "1", "--tick", "0.008",
                    "--snap", "2", "--kimg", "0.024", "--metrics", "none"]) == 0
        (run_dir,) = list((base / "runs").iterdir())
        assert cli(["metrics", "--network", str(run_dir / "network-snapshot-000000"), "--metrics", "copy1k_full",
                    "--num-gen", "16", "--offline"]) == 0
    return run_dir


def _check_offline(page: str) -> None:
    """No network request: every src is embedded data, no scripts/styles/links from elsewhere."""
    text = _DATA_URI.sub("DATA", page)
    assert "://" not in text and "//cdn" not in text and "www." not in text
    assert re.findall(r'src="([^"]*)"', text) and set(re.findall(r'src="([^"]*)"', text)) == {"DATA"}
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text


def test_report_of_a_real_run(run, capsys):
    capsys.readouterr()
    assert cli(["report", str(run)]) == 0
    path = run / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    page = path.read_text()
    _check_offline(page)
    assert not [f for f in os.listdir(run) if f.startswith(".tmp")]  # written through a temporary, then renamed
    for heading in ("Summary", "Losses", "Augmentation and overfitting", "Metrics", "Health", "Generated images",
                    "Memorisation", "Resolved configuration"):
        assert f"<h2>{heading}" in page, heading
    assert "no metric-*.jsonl" not in page and "copy1k_full" in page  # the metric curve and the picture
    assert "no warnings in log.txt" in page
    options = json.loads((run / "training_options.json").read_text())
    assert f"&quot;r1_gamma&quot;: {options['r1_gamma']}" in page
    images = _DATA_URI.findall(page)
    # losses, p/r_t, metrics and health plots; init grid, one grid, reals; the nearest-neighbour picture
    assert len(images) == 8
    assert all(base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for uri in images)


def test_warnings_health_numbers_and_grids_over_kimg(run, tmp_path):
    copy = tmp_path / "00001-copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report.html", "checkpoints", "network-snapshot-*"))
    for kimg in (4, 8, 12, 16, 20):  # more grids than shown: the first and the last must be among those picked
        shutil.copy(run / "fakes000000.png", copy / f"fakes{kimg:06d}.png")
    with open(copy / "log.txt", "a") as f:
        f.write("warning: kimg 12.5: D is overfitting: r_t = 0.95 stays above 0.80; fix: --aug ada\n")
        f.write("tick 9     kimg 16.0     time 1m\nwarning: something else <b>\n")
    with open(copy / "stats.jsonl", "a") as f:
        f.write(json.dumps({"Progress/kimg": {"num": 1, "mean": 20.0, "std": 0},
                            "Health/diversity": {"num": 1, "mean": 0.9, "std": 0}}) + "\n")
        f.write('{"Progress/kimg": {"num": 1, "mea')  # a run still writing: half a line
    out = tmp_path / "elsewhere.html"
    assert cli(["report", str(copy), "--out", str(out), "--grids", "3"]) == 0
    page = out.read_text()
    _check_offline(page)
    assert not (copy / "report.html").exists()
    assert "kimg 12.5: D is overfitting: r_t = 0.95" in page
    assert "kimg 16: something else &lt;b&gt;" in page  # placed at the tick before it, escaped
    assert "Health/ numbers" in page
    assert re.findall(r"<figcaption>fakes (kimg \d+|at initialisation)", page) == [
        "at initialisation", "kimg 0", "kimg 8", "kimg 20"]


def test_tiny_run_is_healthy(run):
    from sg2ada.training.health import HealthMonitor

    options = json.loads((run / "training_options.json").read_text())
    monitor = HealthMonitor(aug=options["aug"], ada_target=options["ada_target"], ada_kimg=options["ada_kimg"],
                            p_max=options["ada_p_max"], r1_gamma=options["r1_gamma"])
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert len(rows) >= 3
    for row in rows:
        health = monitor.update(row)
        assert health.warnings == [] and health.numbers["Health/warnings"] == 0


def test_bad_run_directories_are_one_line_errors(tmp_path, capsys):
    assert cli(["report", str(tmp_path / "nope")]) == 2
    assert cli(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "no such directory" in err[0] and "training_options.json" in err[1]
