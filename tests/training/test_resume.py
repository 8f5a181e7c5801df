"""Acceptance: a real `sg2ada train` process killed with SIGKILL at an arbitrary moment and resumed with
`sg2ada train --resume RUN_DIR` ends exactly where an uninterrupted run ends: same kimg, same ADA p,
same weights, and the same stats.jsonl (the lines the killed run wrote after its last checkpoint are
dropped and those ticks trained again). Also the process helpers of `test_signals.py`."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_console import TF_LOG_LINE
from test_loop import TINY, data8  # noqa: F401 (data8 is a fixture)

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
# 100 iterations of 4 images, a tick (and checkpoint) every 5: a stop after the second checkpoint
# lands well before the end. No snapshots but the final one.
TRAIN = [*TINY, "--kimg", "0.4", "--tick", "0.02", "--snap", "1000"]
# Stats that depend on the clock or the machine, not on the training; Health/ diagnostics keep a
# history in the process that a resumed session starts afresh.
UNCOMPARED = ("Timing/", "Resources/", "Health/", "timestamp")


def env():
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    return e


def train(outdir, *args) -> subprocess.Popen:
    """`python -m sg2ada.cli.main train ARGS` as a user runs it; stdout and stderr go to OUTDIR.log."""
    log = open(f"{outdir}.log", "w")  # noqa: SIM115 (the child owns it; closed below)
    try:
        return subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", *args], env=env(), stdout=log,
                                stderr=subprocess.STDOUT, text=True)
    finally:
        log.close()


def output(outdir) -> str:
    return pathlib.Path(f"{outdir}.log").read_text()


def run_dir(outdir) -> pathlib.Path:
    (run,) = [p for p in pathlib.Path(outdir).iterdir() if p.is_dir()]
    return run


def signal_after_checkpoints(runs, n, timeout=1200):
    """Send each (process, outdir, signal) its signal once its run directory holds `n` checkpoints,
    a moment later so that it lands inside a tick rather than on a checkpoint."""
    deadline = time.time() + timeout
    pending = list(runs)
    while pending:
        assert time.time() < deadline, "no checkpoints appeared in time"
        for proc, outdir, sig in list(pending):
            assert proc.poll() is None, f"training exited early with {proc.returncode}: {output(outdir)}"
            if len(list(pathlib.Path(outdir).glob("*/checkpoints/ckpt-*.index"))) >= n:
                time.sleep(0.1)
                proc.send_signal(sig)
                pending.remove((proc, outdir, sig))
        time.sleep(0.05)


def wait_all(procs, timeout=1200):
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def final_weights(run) -> dict:
    snaps = sorted(run.glob("network-snapshot-*"))
    assert snaps, f"no snapshot in {run}"
    with np.load(snaps[-1] / "weights.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def stats_lines(run) -> list[dict]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def assert_same_weights(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def assert_same_stats(got: list[dict], want: list[dict]):
    """The same ticks with the same values, except the clock and the machine's."""
    assert len(got) == len(want), ([s["Progress/kimg"]["mean"] for s in got],
                                   [s["Progress/kimg"]["mean"] for s in want])
    for g, w in zip(got, want):
        keys = sorted(k for k in w if not k.startswith(UNCOMPARED))
        assert sorted(k for k in g if not k.startswith(UNCOMPARED)) == keys
        for k in keys:
            assert g[k]["num"] == w[k]["num"], (k, g["Progress/kimg"], w["Progress/kimg"])
            np.testing.assert_allclose([g[k]["mean"], g[k]["std"]], [w[k]["mean"], w[k]["std"]], rtol=1e-5,
                                       atol=1e-6, err_msg=f"{k} at kimg {w['Progress/kimg']['mean']}")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # three training processes, two of them at once, on two shared cores
def test_real_training_sigkill_then_resume_matches(data8, tmp_path):  # noqa: F811 (fixture)
    args = ["--data", data8, *TRAIN, "--aug", "ada", "--ada-kimg", "1"]  # ADA state must resume too
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    # both start together: the two cores trace the two graphs in parallel
    straight = train(straight_out, "--outdir", str(straight_out), *args)
    killed = train(killed_out, "--outdir", str(killed_out), *args)
    try:
        signal_after_checkpoints([(killed, killed_out, signal.SIGKILL)], 3)
    finally:
        wait_all([straight, killed])
    assert straight.returncode == 0, output(straight_out)
    assert not TF_LOG_LINE.search(output(straight_out)), output(straight_out)  # a healthy run is quiet
    assert killed.returncode == -signal.SIGKILL
    run, ref = run_dir(killed_out), run_dir(straight_out)
    assert stats_lines(run)[-1]["Progress/kimg"]["mean"] < 0.4, "killed too late: the run had already finished"

    res = subprocess.run([sys.executable, "-m", "sg2ada.cli.main", "train", "--resume", str(run)], check=False,
                         env=env(), timeout=1200, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Resumed from" in res.stdout
    assert not TF_LOG_LINE.search(res.stderr), res.stderr
    got, want = stats_lines(run), stats_lines(ref)
    assert want[-1]["Progress/kimg"]["mean"] == pytest.approx(0.4)
    assert want[-1]["Progress/augment"]["mean"] > 0  # p moved, so comparing it means something
    assert_same_stats(got, want)
    assert_same_weights(final_weights(run), final_weights(ref))
