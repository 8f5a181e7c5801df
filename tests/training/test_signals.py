"""Acceptance: SIGTERM (and SIGINT) make a real `sg2ada train` process save a checkpoint where it is and
exit with status 3 (EXIT_PREEMPTED); `sg2ada train --resume RUN_DIR` then ends where an uninterrupted
run ends."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import tensorflow as tf
from test_resume import (
    TRAIN,
    assert_same_stats,
    assert_same_weights,
    data8,  # noqa: F401 (a fixture)
    env,
    final_weights,
    output,
    run_dir,
    signal_after_checkpoints,
    stats_lines,
    train,
    wait_all,
)

from sg2ada.training.checkpoint import list_checkpoints
from sg2ada.training.training_loop import EXIT_PREEMPTED

SIGNALS = (signal.SIGTERM, signal.SIGINT)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # training processes on two shared cores


@pytest.fixture(scope="module")
def runs(data8, tmp_path_factory):  # noqa: F811 (fixture)
    """An uninterrupted run, and one run stopped by each signal after its second checkpoint, all at once."""
    base = tmp_path_factory.mktemp("signals")
    outs = {name: base / name for name in ["straight", *(sig.name for sig in SIGNALS)]}
    procs = {name: train(out, "--outdir", str(out), "--data", data8, *TRAIN) for name, out in outs.items()}
    try:
        signal_after_checkpoints([(procs[sig.name], outs[sig.name], sig) for sig in SIGNALS], 2)
    finally:
        wait_all(list(procs.values()))
    assert procs["straight"].returncode == 0, output(outs["straight"])
    return {name: (procs[name].returncode, out) for name, out in outs.items()}


def stopped_at_nimg(out, sig) -> int:
    m = re.search(rf"Stopped by {sig.name} at kimg ([0-9.]+)", out)
    assert m, out
    return round(float(m.group(1)) * 1000)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_signal_saves_checkpoint_and_exits_3(runs, sig):
    status, outdir = runs[sig.name]
    out = output(outdir)
    assert status == EXIT_PREEMPTED, out
    assert "--resume" in out
    run = run_dir(outdir)
    assert f"Stopped by {sig.name}" in (run / "log.txt").read_text()
    nimg = stopped_at_nimg(out, sig)
    assert 0 < nimg < 400  # stopped part-way

    # the checkpoint holds the state at the stop itself, not at the previous tick
    reader = tf.train.load_checkpoint(list_checkpoints(str(run / "checkpoints"))[0])
    key = next(k for k in reader.get_variable_to_shape_map() if k.startswith("cur_nimg"))
    assert reader.get_tensor(key) == nimg
    # the ticks before the stop are the uninterrupted run's
    ref = stats_lines(run_dir(runs["straight"][1]))
    got = stats_lines(run)
    assert got and got[-1]["Progress/kimg"]["mean"] * 1000 <= nimg
    assert_same_stats(got, ref[: len(got)])


def test_resume_after_sigterm_matches_uninterrupted_run(runs):
    status, outdir = runs["SIGTERM"]
    assert status == EXIT_PREEMPTED
    run, ref = run_dir(outdir), run_dir(runs["straight"][1])
    before = stats_lines(run)
    res = subprocess.run([sys.executable, "-m", "sg2ada.cli.main", "train", "--resume", str(run)], check=False,
                         env=env(), timeout=1200, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"kimg {stopped_at_nimg(output(outdir), signal.SIGTERM) / 1000:.3f}" in res.stdout  # "Resumed from ..."
    assert_same_weights(final_weights(run), final_weights(ref))
    got, want = stats_lines(run), stats_lines(ref)
    assert got[: len(before)] == before  # the history before the stop is kept as it was
    # The ticks keep the uninterrupted run's boundaries; the one that spans the stop reports only
    # the iterations after it (those before the stop are in no line), the later ones are the same.
    assert [s["Progress/kimg"]["mean"] for s in got] == [s["Progress/kimg"]["mean"] for s in want]
    assert_same_stats(got[len(before) + 1:], want[len(before) + 1:])
