"""sg2ada.console: NVIDIA's compact elapsed time, and the TensorFlow import without its banner."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from sg2ada.console import TF_IMPORT_NOISE, format_time

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
# TensorFlow's C++ error, warning and fatal lines (absl's format: level letter, MMDD, time, thread, file:line]).
TF_LOG_LINE = re.compile(r"^[EWF]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\]", re.M)


@pytest.mark.parametrize("sec,text", [(0.4, "0s"), (42, "42s"), (59.6, "1m 00s"), (187, "3m 07s"),
                                      (7509, "2h 05m 09s"), (93780, "1d 02h 03m")])
def test_format_time(sec, text):
    assert format_time(sec) == text


def test_cli_drops_the_tensorflow_banner_and_keeps_its_warnings(tmp_path):
    """A real TensorFlow warning printed on import (an invalid TF_ENABLE_ONEDNN_OPTS) reaches the
    user's stderr, before the command's `error:` line; the start-up banner does not."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="maybe", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command's own default
    res = subprocess.run([sys.executable, "-m", "sg2ada.cli.main", "report", str(tmp_path / "no-run")], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert lines[-1].startswith("error: ") and "no-run" in lines[-1], lines
    warnings = [ln for ln in lines if TF_LOG_LINE.match(ln)]
    assert warnings and all("TF_ENABLE_ONEDNN_OPTS is not set to either" in ln for ln in warnings), lines
    assert not [ln for ln in lines if any(noise[:30] in ln for noise in TF_IMPORT_NOISE)], lines
    assert res.stdout == ""
