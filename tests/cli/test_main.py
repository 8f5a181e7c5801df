"""The dispatcher's first moments: a SIGTERM or SIGINT that arrives while `sg2ada` is still starting
(building its parser, importing TensorFlow) ends the command at once with exit 3 and one line, and
leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `sig` (the kernel's SigCgt mask)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


def _importing_tensorflow(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtensorflow" in f.read()


@pytest.mark.parametrize("moment", ["parser", "tensorflow-import"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_while_starting_exits_3_with_one_line(tmp_path, moment, sig):
    outdir = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sg2ada.cli.main", "train", "--outdir", str(outdir), "--data", "builtin:shapes",
         "--cfg", "tiny", "--kimg", "1", "--metrics", "none"],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGTERM is not caught by Python's default set-up: a handler for it means main() has begun.
        ready = (lambda: _catches(proc.pid, signal.SIGTERM)) if moment == "parser" else \
            (lambda: _importing_tensorflow(proc.pid))
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.002)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert err.splitlines() == [f"error: stopped by {sig.name} before anything was done; run the command again"]
    assert out == "" and not outdir.exists()
