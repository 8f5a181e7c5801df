"""Acceptance: a run killed with SIGKILL at an arbitrary moment and resumed ends exactly where an
uninterrupted run ends (same kimg, same augment p, same weights), using a real training process."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
FAKE = HERE / "test_loop_fakes.py"
KIMG, TICK = "0.16", "0.02"  # 40 iterations of 4 images, a checkpoint every 5


def fake_cmd(run_dir, *extra):
    return [sys.executable, str(FAKE), str(run_dir), "--kimg", KIMG, "--tick", TICK, *extra]


def env():
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), e.get("PYTHONPATH", "")])
    return e


def wait_for_checkpoints(proc, ckpt_dir, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}: {proc.stdout.read()}")
        if ckpt_dir.is_dir() and len(list(ckpt_dir.glob("ckpt-*.index"))) >= n:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoints appeared in time")


def straight_run(run_dir):
    """The uninterrupted reference, in a fresh process like the killed run. (In the pytest process,
    random state left behind by earlier tests, e.g. TensorFlow's global seed that tf.data folds into
    its shuffle seed, would make the reference differ from any fresh process.)"""
    res = subprocess.run(fake_cmd(run_dir), check=False, env=env(), timeout=180, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return np.load(run_dir / "final_G.npy"), np.load(run_dir / "final_state.npy")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    want_G, want_state = straight_run(tmp_path / "straight")

    run = tmp_path / "killed"
    proc = subprocess.Popen(fake_cmd(run, "--step-sec", "0.05"), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_checkpoints(proc, run / "checkpoints", 3)
        time.sleep(0.13)  # land somewhere inside a tick, not on a checkpoint boundary
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "final_G.npy").exists()  # it really died before the end

    res = subprocess.run(fake_cmd(run, "--resume"), check=False, env=env(), timeout=180, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Resumed from" in res.stdout
    got_G, got_state = np.load(run / "final_G.npy"), np.load(run / "final_state.npy")
    assert got_state[0] == want_state[0] == 160  # same cur_nimg
    assert got_state[1] == want_state[1]  # same augment p
    np.testing.assert_allclose(got_G, want_G, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The same with the real Trainer and the real CLI (slow: every process traces the training step).

REAL_ARGS = ["--cfg", "tiny", "--batch", "4", "--batch-gpu", "4", "--cbase", "256", "--cmax", "16", "--map", "1",
             "--kimg", "0.1", "--tick", "0.008", "--snap", "1000", "--ada-kimg", "1", "--seed", "3"]


def cli_cmd(*args):
    return [sys.executable, "-m", "sg2ada.cli.main", "train", *args]


def final_snapshot(run_dir):
    snaps = sorted(run_dir.glob("network-snapshot-*"))
    assert snaps, f"no snapshot in {run_dir}"
    with np.load(snaps[-1] / "weights.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def last_stats(run_dir):
    import json

    return json.loads((run_dir / "stats.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("real") / "shapes"
    convert_dataset("builtin:shapes", dest, max_images=64, log=lambda msg: None)
    return str(dest)


@pytest.mark.slow
def test_real_training_sigkill_then_resume_matches(real_data, tmp_path):
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    # both start together: the two cores trace the two graphs in parallel
    straight = subprocess.Popen(cli_cmd("--outdir", str(straight_out), "--data", real_data, *REAL_ARGS), env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = subprocess.Popen(cli_cmd("--outdir", str(killed_out), "--data", real_data, *REAL_ARGS), env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 500
        ckpt_dirs = []
        while not ckpt_dirs and time.time() < deadline:
            ckpt_dirs = list(killed_out.glob("*/checkpoints"))
            time.sleep(0.2)
        assert ckpt_dirs, "the run never made its checkpoint directory"
        wait_for_checkpoints(killed, ckpt_dirs[0], 3, timeout=deadline - time.time())
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        out, _ = straight.communicate(timeout=600)
        assert straight.returncode == 0, out
    finally:
        for p in (straight, killed):
            if p.poll() is None:
                p.kill()
    (run,) = list(killed_out.iterdir())
    assert last_stats(run)["Progress/kimg"]["mean"] < 0.1, "killed too late: the run had already finished"

    res = subprocess.run(cli_cmd("--resume", str(run)), check=False, env=env(), timeout=600, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Resumed from" in res.stdout
    (ref,) = list(straight_out.iterdir())
    got, want = last_stats(run), last_stats(ref)
    assert got["Progress/kimg"]["mean"] == want["Progress/kimg"]["mean"] == pytest.approx(0.1)
    assert want["Progress/augment"]["mean"] > 0  # p moved, so the comparison below means something
    assert got["Progress/augment"]["mean"] == pytest.approx(want["Progress/augment"]["mean"], abs=1e-7)
    a, b = final_snapshot(run), final_snapshot(ref)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
