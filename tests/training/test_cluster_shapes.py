"""One run, every cluster shape: `sg2ada train` as a user types it, on one process, on two worker
processes on loopback (TF_CONFIG), on one process with two logical CPU devices, and with gradient
accumulation, trains the same trajectory (same per-tick losses and augmentation probability, same
final weights to float tolerance), leaving exactly one run directory each. A checkpoint resumes on
any other shape (elastic resume, both ways), and a two-worker run whose worker is SIGKILLed,
restarted on both workers with `--resume latest`, continues from its last checkpoint to the same
result. Ten training processes in all: the straight run and two chains of three hops (each hop a
change of shape), started in three waves so that the cores stay busy.

D's minibatch-stddev layer groups the images of one device, as NVIDIA's does, so its statistics
depend on how many images a device holds; `--mbstd 1` makes D per-sample and lets the test vary the
per-device batch freely (8, 4 and 2 images). Everything else (which images form global batch i, the
mirror flips, latents, noise, mixing cutoffs and augmentations) is the same by construction.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

# kimg: 16, 26 and 51 iterations of 8 images. The first tick ends after one iteration, the others every
# 0.04 kimg; K1 and K2 are tick boundaries, so the per-tick losses of a resumed run line up with a straight run's.
K1, K2, K3 = "0.128", "0.208", "0.408"
COMMON = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "8", "--mbstd", "1",
          "--mirror", "1", "--aug", "ada", "--ada-kimg", "2", "--target", "0.3", "--tick", "0.04",
          "--snap", "1000", "--metrics", "none", "--seed", "3"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env.pop("TF_CONFIG", None)
    env.pop("SG2ADA_CPU_DEVICES", None)
    return env


class Job:
    """`sg2ada train ARGS` on `workers` processes (a TF_CONFIG cluster on loopback when > 1)."""

    def __init__(self, tmp, name, args, workers=1, **env):
        self.name, self.procs, self.logs = name, [], []
        ports = _free_ports(workers)
        for i in range(workers):
            e = _env(**env)
            if workers > 1:
                e["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                             "task": {"type": "worker", "index": i}})
            log = open(tmp / f"{name}.{i}.log", "w")  # noqa: SIM115 (closed in wait)
            self.logs.append(log)
            self.procs.append(subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", *args], env=e,
                                               stdout=log, stderr=subprocess.STDOUT))

    def wait(self, timeout=1800):
        deadline = time.time() + timeout
        try:
            for p in self.procs:
                p.wait(timeout=max(deadline - time.time(), 1))
        finally:
            self.kill()
        for i, p in enumerate(self.procs):
            assert p.returncode == 0, f"{self.name} worker {i} exited {p.returncode}:\n" + \
                open(self.logs[i].name).read()[-3000:]
        return self

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


def _one_run(outdir):
    runs = [p for p in outdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"{outdir} holds {sorted(p.name for p in runs)}"
    return runs[0]


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def _weights(run):
    (snap,) = sorted(run.glob("network-snapshot-*"))
    with np.load(snap / "weights.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _initial_weights(run):
    """The weights every run starts from, built the way the training loop builds them."""
    import keras
    import tensorflow as tf

    from sg2ada.training.run_dir import read_options
    from sg2ada.training.trainer import Trainer

    opts = read_options(str(run))
    keras.utils.set_random_seed(opts.seed)
    t = Trainer(opts, tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name]))
    return {f"{k}/{n}": v.numpy() for k in ("G", "D", "G_ema") for n, v in getattr(t, k).named_variables().items()}


def _assert_same_trajectory(got, want, init, what):
    """Per-tick losses and p equal; final weights equal to 1e-3 of the training update's size."""
    gs, ws = _stats(got), _stats(want)
    assert [s["Progress/kimg"]["mean"] for s in gs] == [s["Progress/kimg"]["mean"] for s in ws], what
    for name in ("Loss/G/loss", "Loss/D/loss", "Progress/augment"):
        np.testing.assert_allclose([s[name]["mean"] for s in gs], [s[name]["mean"] for s in ws], rtol=1e-4,
                                   atol=1e-6, err_msg=f"{what}: {name} per tick")
    a, b = _weights(got), _weights(want)
    assert a.keys() == b.keys()
    for net in ("G", "D", "G_ema"):
        keys = [k for k in a if k.startswith(net + "/") and k in init]
        diff = np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in keys))
        update = np.sqrt(sum(np.sum((b[k] - init[k]) ** 2) for k in keys))
        assert update > 0 and diff < 1e-3 * update, f"{what}: {net} differs by {diff / update:.2e} of its update"


@pytest.fixture(scope="module")
def data8(tmp_path_factory):
    from sg2ada.data import convert_dataset

    dest = tmp_path_factory.mktemp("data") / "shapes8"
    convert_dataset("builtin:shapes", dest, resolution=8, max_images=48, log=lambda msg: None)
    return str(dest)


def test_every_cluster_shape_trains_the_same_run_and_resumes_on_any_other(data8, tmp_path):
    def args(out, *extra):
        return ["--outdir", str(out), "--data", data8, *COMMON, *extra]

    def resume(out, kimg, *extra):
        return ["--resume", str(_one_run(out)), "--kimg", kimg, *extra]

    hops_a, hops_b = tmp_path / "workers_killed_one", tmp_path / "devices_rounds_workers"
    jobs = []
    try:
        # Wave 1 (the two cores take turns): the straight run, and the first hop of each chain.
        ref = Job(tmp_path, "ref", args(tmp_path / "ref", "--kimg", K3, "--batch-gpu", "8"))
        devices = Job(tmp_path, "devices", args(hops_b, "--kimg", K1), SG2ADA_CPU_DEVICES="2")
        killed = Job(tmp_path, "killed", args(hops_a, "--kimg", K2), workers=2)
        jobs += [ref, devices, killed]
        # SIGKILL the non-chief worker once the chief has checkpointed twice (mid-run), then the
        # chief, which would otherwise wait for its peer forever: a scheduler restarts both.
        deadline = time.time() + 1800
        while time.time() < deadline and len(list(hops_a.glob("*/checkpoints/ckpt-*.index"))) < 2:
            assert all(p.poll() is None for p in killed.procs), open(killed.logs[0].name).read()[-3000:]
            time.sleep(0.05)
        killed.procs[1].send_signal(signal.SIGKILL)
        time.sleep(1)
        killed.kill()
        devices.wait()
        assert _stats(_one_run(hops_a))[-1]["Progress/kimg"]["mean"] < float(K2), \
            "the kill came after the end of the run"

        # Wave 2: restart the killed run with one command; two devices -> one device, 4 rounds of 2.
        restart = Job(tmp_path, "restart", ["--outdir", str(hops_a), "--resume", "latest", "--kimg", K2], workers=2)
        rounds = Job(tmp_path, "rounds", resume(hops_b, K2, "--batch-gpu", "2"))
        jobs += [restart, rounds]
        restart.wait()
        rounds.wait()
        assert "Resumed from" in open(restart.logs[0].name).read()

        # Wave 3: two workers -> one process (2 rounds of 4); one process -> two workers (4 images each).
        one = Job(tmp_path, "one", resume(hops_a, K3))
        workers = Job(tmp_path, "workers", resume(hops_b, K3, "--batch-gpu", "4"), workers=2)
        jobs += [one, workers]
        for job in (one, workers, ref):
            job.wait()
    finally:
        for job in jobs:
            job.kill()

    ref_run = _one_run(tmp_path / "ref")
    init = _initial_weights(ref_run)
    assert _stats(ref_run)[-1]["Progress/augment"]["mean"] > 0  # p moved: its continuation means something
    # One process with 8 images per round is the reference: each chain starts on another shape and
    # moves through two more, and every hop of it matches the straight run.
    _assert_same_trajectory(_one_run(hops_a), ref_run, init,
                            "two workers, killed, restarted with --resume latest, then one process")
    _assert_same_trajectory(_one_run(hops_b), ref_run, init, "two devices, then four rounds, then two workers")
