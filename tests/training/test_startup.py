"""SIGTERM in the first seconds of `sg2ada train` (while TensorFlow loads) ends it with one line and
exit 3, leaving no run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _train(*args, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def data8(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes8"
    convert_dataset("builtin:shapes", dest, resolution=8, max_images=16, log=lambda msg: None)
    return str(dest)


def test_sigterm_in_the_first_second_is_one_line_exit_3_and_leaves_nothing(data8, tmp_path):
    proc = _train("--outdir", str(tmp_path / "runs"), "--data", data8, "--cfg", "tiny", "--metrics", "none")
    time.sleep(1.0)  # TensorFlow is still loading
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert _error_lines(err) == ["error: stopped by SIGTERM before anything was saved; run the command again"]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
