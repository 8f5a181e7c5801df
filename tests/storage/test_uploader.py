"""sg2ada.storage.Uploader: background uploads that survive a failing store, against moto's S3 server
behind a fault-injecting proxy (a 500 answer; the server stopping mid-upload and coming back)."""

from __future__ import annotations

import threading

import pytest
from object_store_servers import FaultProxy, S3Server, use_s3

from sg2ada.storage import LocalFileMissing, Uploader, open_store


@pytest.fixture
def s3_behind_proxy(monkeypatch):
    """(moto server, proxy in front of it, bucket); the environment points at the proxy."""
    server = S3Server()
    proxy = FaultProxy(server.port)
    try:
        use_s3(monkeypatch, proxy.endpoint)
        # One attempt per request inside botocore (s3fs still retries a few times): its default of
        # five, each retried by s3fs, takes ~40 s to give up on a dead server.
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        yield server, proxy, server.make_bucket()
    finally:
        proxy.stop()
        server.stop()


def _files(tmp_path, n):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"f{i}.bin").write_bytes(bytes([i]) * 100)
    return src


def test_a_500_answer_is_retried(s3_behind_proxy, tmp_path):
    _server, proxy, bucket = s3_behind_proxy
    failed = []

    def rule(method, path):
        if method == "PUT" and "f0.bin" in path and not failed:
            failed.append(path)
            return 500
        return None

    proxy.rule = rule
    store = open_store(f"s3://{bucket}/runs")
    lines = []
    up = Uploader(store.uri, retry_sec=0.05, log=lines.append)
    src = _files(tmp_path, 2)
    up.submit("tree", lambda: store.put_tree(str(src), "t"))
    assert up.close(60)
    assert [s for m, p, s in proxy.requests if "f0.bin" in p and m == "PUT"] == [500, 200]
    assert store.read_bytes("t/f0.bin") == bytes([0]) * 100 and store.read_bytes("t/f1.bin") == bytes([1]) * 100
    # With one attempt per request in the S3 client, the retry is ours: one warning, one recovery line.
    assert len(lines) == 2 and "InjectedError" in lines[0] and "works again" in lines[1]


def test_server_stopping_during_an_upload_and_coming_back(s3_behind_proxy, tmp_path):
    """The server dies after the first of three files; uploads fail until it is back; the job is
    retried until complete, with one warning line and one recovery line, and nothing raised."""
    server, proxy, bucket = s3_behind_proxy
    state = {"stopped": False}

    def rule(method, path):
        if method == "PUT" and "f1.bin" in path and not state["stopped"]:
            state["stopped"] = True
            server.stop()  # the request that triggered this then finds no server: dropped
        return None

    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("warning:") and server._server is None:
            server.start()  # back only after the uploader itself gave up once

    proxy.rule = rule
    store = open_store(f"s3://{bucket}/runs")
    up = Uploader(store.uri, retry_sec=0.05, log=log)
    src = _files(tmp_path, 3)
    up.submit("tree", lambda: store.put_tree(str(src), "t"))
    assert up.close(120)
    assert state["stopped"]
    assert store.list("t") == ["f0.bin", "f1.bin", "f2.bin"]
    assert len(lines) == 2 and lines[0].startswith(f"warning: backup to {store.uri} failed (")
    assert lines[1].startswith(f"backup to {store.uri} works again")
    assert any(s == "drop" for _m, _p, s in proxy.requests)


def test_a_newer_job_with_the_same_key_replaces_a_waiting_one():
    gate, ran = threading.Event(), []
    up = Uploader("mem", log=print)
    up.submit("block", gate.wait)
    for i in range(5):
        up.submit("stats", lambda i=i: ran.append(i))
    up.submit("other", lambda: ran.append("other"))
    gate.set()
    assert up.close(10)
    assert ran == [4, "other"]


def test_a_store_that_stays_down_never_raises_and_close_is_bounded():
    lines, attempts = [], []

    def job():
        attempts.append(1)
        raise ConnectionError("connection refused\nsecond line")

    up = Uploader("s3://b/r", retry_sec=0.01, max_retry_sec=0.05, log=lines.append)
    up.submit("ckpt", job)
    assert not up.flush(0.5)
    assert len(attempts) > 3
    assert not up.close(0.1)
    assert lines[0] == ("warning: backup to s3://b/r failed (ConnectionError: connection refused); training goes "
                        "on, the run directory keeps everything and the upload is retried in the background")
    assert len(lines) == 2 and lines[1].startswith("warning: backup to s3://b/r: 1 upload(s) not finished")
    up._thread.join(5)
    assert not up._thread.is_alive()


def test_a_job_whose_local_file_is_gone_is_dropped(tmp_path):
    store = open_store(str(tmp_path / "mnt"))
    lines = []
    up = Uploader(store.uri, log=lines.append)
    up.submit("a", lambda: store.put_file(str(tmp_path / "pruned"), "x"))
    assert up.close(10)
    assert lines == [] and store.list() == []
    with pytest.raises(LocalFileMissing):
        store.put_file(str(tmp_path / "pruned"), "x")
