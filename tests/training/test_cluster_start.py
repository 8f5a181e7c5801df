"""Cluster start-up (`distribute.wait_for_cluster`): every task of a TF_CONFIG cluster waits for the
others over plain sockets before TensorFlow joins them, names the missing ones, gives up after
--cluster-timeout with one line (exit 2), and ends at once on SIGTERM/SIGINT (exit 3), leaving nothing
in --outdir. The real two-worker start is tests/training/test_cluster_shapes.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from sg2ada.errors import UserError
from sg2ada.training.distribute import wait_for_cluster


def _free_ports(n):
    """n distinct loopback ports that nothing listens on (the kernel's choices for port 0)."""
    ports = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def _tf_config(ports, index):
    return {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}


class Train:
    """`sg2ada train` as a user types it, as one task of a two-worker cluster whose other task never
    starts; its output lines are collected with the time each arrived."""

    def __init__(self, tmp_path, index, timeout_min):
        self.ports = _free_ports(2)
        self.outdir = tmp_path / "runs"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps(_tf_config(self.ports, index)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sg2ada.cli.main", "train", "--outdir", str(self.outdir), "--data",
             "builtin:shapes", "--cfg", "tiny", "--metrics", "none", "--cluster-timeout", str(timeout_min)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = {"out": [], "err": []}  # (arrival time, line)
        self.readers = [threading.Thread(target=self._read, args=(f, self.lines[k]), daemon=True)
                        for k, f in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for r in self.readers:
            r.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    def wait_for_line(self, which, start):
        """(arrival time, line) of the first `which` ("out"/"err") line starting with `start`;
        TensorFlow loads first, which takes long on a busy machine."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = [(t, line) for t, line in self.lines[which] if line.startswith(start)]
            if found:
                return found[0]
            assert self.proc.poll() is None or any(r.is_alive() for r in self.readers), self.lines
            time.sleep(0.01)
        raise AssertionError(f"no line starting {start!r}: {self.lines}")

    def finish(self):
        """(exit status, stderr lines) once the process has ended."""
        self.proc.wait(timeout=300)  # the interpreter's own exit takes seconds on a busy machine
        for r in self.readers:
            r.join(10)
        return self.proc.returncode, [line for _, line in self.lines["err"]]

    def left_nothing(self):
        return not self.outdir.exists() or not list(self.outdir.iterdir())


def _error_lines(err):
    return [line for line in err if line.startswith("error:")]


@pytest.mark.parametrize("index", [0, 1], ids=["chief", "worker"])
def test_a_missing_task_is_named_while_waiting_and_ends_the_start_with_one_line_at_the_timeout(tmp_path, index):
    timeout_sec = 6
    job = Train(tmp_path, index, timeout_sec / 60)
    # The first report comes 1 s into the wait, so the wait ends timeout_sec - 1 s after it.
    waiting_time, waiting = job.wait_for_line("out", "Waiting for the cluster")
    error_time = job.wait_for_line("err", "error:")[0]
    status, err = job.finish()
    missing = f"1 of 2 tasks: worker 1 (127.0.0.1:{job.ports[1]})" if index == 0 else \
        f"the chief, worker 0 (127.0.0.1:{job.ports[0]})"
    assert waiting.endswith(f"missing {missing}"), waiting
    assert status == 2, err
    assert _error_lines(err) == [f"error: the cluster did not form within --cluster-timeout 0.1 min: missing "
                                 f"{missing}; start {'it' if index == 0 else 'every task'} with the same TF_CONFIG "
                                 "cluster, or check TF_CONFIG's addresses and the firewall"], err
    assert timeout_sec - 1 - 0.5 < error_time - waiting_time < timeout_sec - 1 + 3, error_time - waiting_time
    assert job.left_nothing()


@pytest.mark.parametrize("index, sig", [(0, signal.SIGTERM), (1, signal.SIGINT)],
                         ids=["chief-SIGTERM", "worker-SIGINT"])
def test_a_signal_while_waiting_for_the_cluster_ends_the_wait_at_once_with_one_line(tmp_path, index, sig):
    job = Train(tmp_path, index, 10)
    job.wait_for_line("out", "Waiting for the cluster")
    signal_time = time.monotonic()
    job.proc.send_signal(sig)
    error_time = job.wait_for_line("err", "error:")[0]
    status, err = job.finish()
    assert status == 3, err
    assert _error_lines(err) == [f"error: stopped by {sig.name} before anything was saved; run the command again"], err
    assert error_time - signal_time < 5, error_time - signal_time
    assert job.left_nothing()


def _start(cfg, timeout_sec, results, delay_sec=0.0):
    def run():
        time.sleep(delay_sec)
        try:
            wait_for_cluster(cfg, timeout_sec, report_sec=0.5)
            results[cfg["task"]["index"]] = "ok"
        except UserError as e:
            results[cfg["task"]["index"]] = str(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_three_tasks_started_at_different_times_all_go_and_the_chief_port_is_free_at_once():
    ports = _free_ports(3)
    results = {}
    threads = [_start(_tf_config(ports, i), 30, results, delay_sec=d) for i, d in [(1, 0), (2, 0.5), (0, 1.5)]]
    for t in threads:
        t.join(40)
    assert results == {0: "ok", 1: "ok", 2: "ok"}
    # The workers closed first, so no TIME_WAIT holds the chief's port: it binds even without SO_REUSEADDR.
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_the_chief_waits_for_a_worker_to_close_first_so_no_time_wait_holds_its_port():
    ports = _free_ports(2)
    cfg = _tf_config(ports, 0)
    results = {}
    chief = _start(cfg, 30, results)
    deadline = time.monotonic() + 10
    while True:  # a worker that speaks the protocol by hand, slow to close after `go`
        try:
            conn = socket.create_connection(("127.0.0.1", ports[0]), timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    with conn:
        conn.sendall(json.dumps({"task": ["worker", 1], "cluster": cfg["cluster"]}).encode() + b"\n")
        received = b""
        while not received.endswith(b"go\n"):
            received += conn.recv(4096)
        time.sleep(0.5)
        assert chief.is_alive()
    chief.join(10)
    assert results == {0: "ok"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_task_with_another_cluster_is_turned_away_and_the_chief_waits_on(capsys):
    ports = _free_ports(3)
    results = {}
    chief = _start(_tf_config(ports[:2], 0), 3, results)
    other = _tf_config(ports[:2] + ports[2:], 1)  # a cluster of three
    time.sleep(0.3)
    with pytest.raises(UserError, match="differs from the chief's"):
        wait_for_cluster(other, 10, report_sec=0.5)
    chief.join(10)
    assert results[0].startswith(f"the cluster did not form within --cluster-timeout 0.05 min: missing 1 of 2 "
                                 f"tasks: worker 1 (127.0.0.1:{ports[1]})"), results
    assert "warning: turned away a task: worker 1's TF_CONFIG cluster" in capsys.readouterr().err


def test_a_task_that_is_not_in_its_cluster_is_one_line():
    cfg = _tf_config(_free_ports(2), 2)
    with pytest.raises(UserError, match="is not a chief or worker of its cluster"):
        wait_for_cluster(cfg, 1)


def test_a_cluster_timeout_that_is_not_positive_is_one_line(tmp_path):
    from sg2ada.cli.train import train

    with pytest.raises(UserError, match="--cluster-timeout must be a positive number of minutes, got 0"):
        train(outdir=str(tmp_path), data="builtin:shapes", cfg="tiny", cluster_timeout=0)
    assert not list(tmp_path.iterdir())
