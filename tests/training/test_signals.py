"""Acceptance: SIGTERM (and SIGINT) make a training process save a checkpoint and exit with status 3
(EXIT_PREEMPTED); the saved state resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
from test_resume import env, fake_cmd, straight_run, wait_for_checkpoints

from sg2ada.training.training_loop import EXIT_PREEMPTED


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint_and_exits_3(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(fake_cmd(run, "--step-sec", "0.05"), env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_checkpoints(proc, run / "checkpoints", 2)
        time.sleep(0.12)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, out
    assert f"Stopped by {sig.name}" in out and "--resume" in out
    assert f"Stopped by {sig.name}" in (run / "log.txt").read_text()
    final = np.load(run / "final_state.npy")
    assert 0 < final[0] < 160  # stopped part-way

    # the checkpoint holds the state at the stop itself, not at the previous tick
    import tensorflow as tf

    from sg2ada.training.checkpoint import list_checkpoints

    newest = list_checkpoints(str(run / "checkpoints"))[0]
    reader = tf.train.load_checkpoint(newest)
    key = next(k for k in reader.get_variable_to_shape_map() if k.startswith("cur_nimg"))
    assert reader.get_tensor(key) == final[0]

    if sig == signal.SIGTERM:  # one resume is enough to show the saved state is complete
        want_G, want_state = straight_run(tmp_path / "straight")
        res = subprocess.run(fake_cmd(run, "--resume"), check=False, env=env(), timeout=180, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        np.testing.assert_allclose(np.load(run / "final_G.npy"), want_G, rtol=0, atol=1e-7)
        assert np.array_equal(np.load(run / "final_state.npy"), want_state)
