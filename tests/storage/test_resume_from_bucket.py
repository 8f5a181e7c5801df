"""A machine lost mid-run: `sg2ada train --backup-uri s3://... | gs://...` against loopback S3 and
GCS servers, the local run directory deleted, then the same command with `--resume latest` on the
empty --outdir fetches the run from the bucket and continues it at the same kimg and augmentation
probability; `--resume <bucket>/<run>` names the run directly (on S3: the choice between the bucket's
and a local copy does not depend on the store)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from object_store_servers import gcs, s3  # noqa: F401  (fixtures)

from sg2ada.cli.main import main as cli

TINY = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "4", "--batch-gpu", "4",
        "--aug", "ada", "--ada-kimg", "1", "--target", "0.1", "--metrics", "none", "--seed", "1", "--tick", "0.008",
        "--snap", "100"]


@pytest.fixture(scope="module")
def data8(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes8"
    convert_dataset("builtin:shapes", dest, resolution=8, max_images=32, log=lambda msg: None)
    return str(dest)


def _last(run_dir):
    return json.loads((run_dir / "stats.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("server", ["s3", "gcs"])
def test_a_lost_machine_resumes_from_the_bucket(server, request, data8, tmp_path, capsys):
    _, bucket = request.getfixturevalue(server)
    backup = f"{'s3' if server == 's3' else 'gs'}://{bucket}/runs"
    out = tmp_path / "runs"
    command = ["train", "--outdir", str(out), "--data", data8, *TINY, "--backup-uri", backup, "--resume", "latest"]
    assert cli([*command, "--kimg", "0.032"]) == 0
    (run,) = list(out.iterdir())
    before = _last(run)
    assert before["Progress/kimg"]["mean"] == pytest.approx(0.032) and before["Progress/augment"]["mean"] > 0
    shutil.rmtree(out)  # the machine and its disk are gone
    capsys.readouterr()

    assert cli([*command, "--kimg", "0.048"]) == 0  # the scheduler runs the same command on a fresh machine
    text = capsys.readouterr().out
    assert f"Fetching the run backed up at {backup}/{run.name}" in text
    resumed = re.search(r"Resumed from .*: kimg ([0-9.]+), tick \d+, augment p ([0-9.]+)", text)
    assert resumed, text
    assert float(resumed[1]) == pytest.approx(0.032)
    assert float(resumed[2]) == pytest.approx(before["Progress/augment"]["mean"], abs=1e-3)
    assert [p.name for p in out.iterdir()] == [run.name]  # the same run, under the same name
    after = _last(run)
    assert after["Progress/kimg"]["mean"] == pytest.approx(0.048)

    if server != "s3":
        return
    # Named directly, and with a local copy present: the local checkpoints are newer, so they win.
    assert cli(["train", "--outdir", str(out), "--resume", f"{backup}/{run.name}", "--kimg", "0.056"]) == 0
    assert "already holds this run's checkpoints" in capsys.readouterr().out
    assert _last(run)["Progress/kimg"]["mean"] == pytest.approx(0.056)


def test_a_bad_backup_uri_is_one_line_and_makes_nothing(s3, data8, tmp_path, capsys):
    out = tmp_path / "runs"
    status = cli(["train", "--outdir", str(out), "--data", data8, *TINY, "--kimg", "0.008",
                  "--backup-uri", "s3://no-such-bucket-sg2ada/runs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: --backup-uri s3://no-such-bucket-sg2ada/runs")
    assert not out.exists() or not list(out.iterdir())
