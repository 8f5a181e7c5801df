"""The fast cases of the fault campaign (`bench/bench_faults.py`): faults that `sg2ada train` meets
before any training step, each run as a user types it. Every one must end in a single `error:` line
with exit status 2 and change nothing in the run directory. The slow cases (kills and faults in the
middle of training, each followed by a resume to the end) are the benchmark's.

The disk-full and read-only cases need root (a tmpfs and a read-only bind mount: root ignores mode
bits) and skip without it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_faults import fill, flip_bytes  # noqa: E402 (the campaign's own fault injectors)

ARGS = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "4", "--batch-gpu", "4",
        "--metrics", "none", "--tick", "0.02", "--snap", "2", "--seed", "1", "--kimg", "0.4", "--aug", "ada",
        "--ada-kimg", "2"]


def env():
    e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", SG2ADA_OFFLINE="1")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), e.get("PYTHONPATH", "")])
    return e


def train(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sg2ada.cli.main", "train", *args], env=env(), timeout=timeout,
                          capture_output=True, text=True, check=False)


def assert_one_error_line(res, *words):
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error:")]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]


def digest(folder):
    """Every file's content under `folder` (what a failed start must leave untouched)."""
    out = {}
    for p in sorted(pathlib.Path(folder).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("faults") / "shapes"
    convert_dataset("builtin:shapes", dest, resolution=8, max_images=32, log=lambda msg: None)
    return dest


@pytest.fixture
def run_dir(data, tmp_path):
    """A run killed before its first checkpoint: the options file, written by the real writer."""
    from sg2ada.training.options import resolve_options
    from sg2ada.training.run_dir import write_options

    opts = resolve_options(data=str(data), cfg="tiny", cbase=128, cmax=16, map=1, batch=4, batch_gpu=4, kimg=0.4,
                           aug="ada", ada_kimg=2, metrics="none", tick=0.02, snap=2, seed=1)
    run = tmp_path / "00000-shapes-tiny"
    run.mkdir()
    write_options(str(run), opts)
    return run


def _mount(*args):
    if os.geteuid() != 0:
        pytest.skip("needs root (tmpfs / bind mount)")
    res = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"mount not allowed here: {res.stderr.strip()}")


def test_new_run_on_a_corrupted_shard_is_one_line_naming_the_shard(data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    shard = next(bad.glob("data-*.tfrecords"))
    flip_bytes(str(shard), random.Random(0))
    res = train("--outdir", str(tmp_path / "runs"), "--data", str(bad), *ARGS)
    assert_one_error_line(res, shard.name)
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")  # no half-made run left


def test_resume_into_a_read_only_run_directory_is_one_line(run_dir):
    before = digest(run_dir)
    _mount("--bind", str(run_dir), str(run_dir))
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(run_dir)], check=True, capture_output=True)
        res = train("--resume", str(run_dir))
    finally:
        subprocess.run(["umount", str(run_dir)], check=True, capture_output=True)
    assert_one_error_line(res, str(run_dir))
    assert digest(run_dir) == before


def test_resume_on_a_full_disk_is_one_line_and_changes_nothing(run_dir, tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt))
    try:
        run = mnt / run_dir.name
        shutil.copytree(run_dir, run)
        fill(str(mnt))  # the filler stays: the disk is full for the whole resume
        before = digest(run)
        res = train("--resume", str(run))
        after = digest(run)
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    assert_one_error_line(res, "space")
    assert after == before


@pytest.mark.slow
def test_a_second_writer_on_a_run_is_refused_in_one_line(run_dir):
    first = subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", "--resume", str(run_dir)],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        log = run_dir / "log.txt"
        while not (log.exists() and "Building the trainer" in log.read_text()):
            assert first.poll() is None and time.time() < deadline, "the first writer did not start"
            time.sleep(0.1)
        try:
            res = train("--resume", str(run_dir), timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the second writer was not refused: it kept running")
    finally:
        first.kill()
        first.wait()
    assert_one_error_line(res, str(run_dir))
