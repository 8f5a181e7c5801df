"""Datasets in a bucket, against real protocol servers on loopback (moto S3, GCS emulator):
`sg2ada dataset --dest s3://...` uploads with dataset.json last; `open_dataset` and `sg2ada train
--data s3://...` read a private local copy that is gone when the command ends, SIGTERM included."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from object_store_servers import FaultProxy, gcs, s3  # noqa: F401 (fixtures)

from sg2ada.cli.main import main
from sg2ada.data import open_dataset, raw_labels
from sg2ada.data.remote import COPY_PREFIX, remove_copies

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
N = 24
MAKE = ["--source", "builtin:shapes", "--max-images", str(N), "--resolution", "8", "--shard-mb", "0.004"]
TRAIN = ["--cfg", "tiny", "--cbase", "128", "--cmax", "16", "--map", "1", "--batch", "4", "--batch-gpu", "4",
         "--aug", "noaug", "--metrics", "none", "--tick", "0.008"]


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch):
    """The process's temporary directory, pointed at an empty test folder (where copies would stay)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    remove_copies()


def copies(folder) -> list[str]:
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name.startswith(COPY_PREFIX))


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(params=["s3", "gs"])
def bucket_url(request):
    server, bucket = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return f"{request.param}://{bucket}/datasets/shapes"


def test_dataset_to_a_bucket_then_open_it(bucket_url, tmpdir_, tmp_path, capsys):
    assert main(["dataset", *MAKE, "--dest", str(tmp_path / "local")]) == 0
    assert main(["dataset", *MAKE, "--dest", bucket_url]) == 0
    assert copies(tmpdir_) == []  # the local conversion is gone
    info = open_dataset(bucket_url)
    assert (info.path, info.name, info.kind) == (bucket_url, "shapes", "tfrecords")
    assert (info.resolution, info.channels, info.count, info.label_dim) == (8, 3, N, 3) and len(info.shards) == 2
    assert copies(tmpdir_) == [os.path.basename(info.local_dir)]
    assert os.stat(info.local_dir).st_mode & 0o777 == 0o700
    np.testing.assert_array_equal(raw_labels(bucket_url), raw_labels(tmp_path / "local"))
    assert open_dataset(bucket_url + "/dataset.json").local_dir == info.local_dir  # fetched once
    remove_copies()
    assert copies(tmpdir_) == []
    capsys.readouterr()

    # An existing dataset is replaced only with --force; the replaced one leaves no file behind.
    assert main(["dataset", *MAKE, "--dest", bucket_url]) == 2
    assert error_lines(capsys) == [f"error: --dest {bucket_url} already holds a dataset; pass --force to replace "
                                   "it or choose another location"]
    assert main(["dataset", *MAKE[:3], "4", *MAKE[4:], "--dest", bucket_url, "--force"]) == 0
    info = open_dataset(bucket_url)
    assert info.count == 4 and len(info.shards) == 1
    from sg2ada.storage import open_store

    assert open_store(bucket_url).list() == ["data-00000-of-00001.tfrecords", "dataset.json", "labels.npy"]


def test_dataset_json_is_uploaded_last(s3, tmpdir_, monkeypatch):  # noqa: F811
    server, bucket = s3
    proxy = FaultProxy(server.port)  # records every request on its way to the S3 server
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        assert main(["dataset", *MAKE, "--dest", f"s3://{bucket}/shapes"]) == 0
    finally:
        proxy.stop()
    puts = [path.split("?")[0].rsplit("/", 1)[1] for method, path, _ in proxy.requests
            if method == "PUT" and ".sg2ada-write-check-" not in path]
    assert len(puts) > 3 and puts[-1] == "dataset.json" and puts.count("dataset.json") == 1
    assert copies(tmpdir_) == []


@pytest.mark.slow
def test_train_from_a_bucket_leaves_no_copy(s3, tmpdir_, tmp_path):  # noqa: F811
    url = f"s3://{s3[1]}/datasets/shapes"
    assert main(["dataset", *MAKE, "--dest", url]) == 0
    assert main(["train", "--outdir", str(tmp_path / "runs"), "--data", url, *TRAIN, "--kimg", "0.02"]) == 0
    assert copies(tmpdir_) == []
    run, = (tmp_path / "runs").iterdir()
    assert list(run.glob("network-snapshot-*")) and url in (run / "training_options.json").read_text()


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_copy(s3, tmp_path):  # noqa: F811
    url = f"s3://{s3[1]}/datasets/shapes"
    assert main(["dataset", *MAKE, "--dest", url]) == 0
    child_tmp = tmp_path / "child-tmp"
    child_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(child_tmp), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sg2ada.cli.main", "train", "--outdir", str(tmp_path / "runs"),
                                 "--data", url, *TRAIN, "--kimg", "1000"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while "Training for" not in log.read_text():  # the data is fetched and training has started
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, log.read_text()
            time.sleep(0.1)
        assert len(copies(child_tmp)) == 1
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 3, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Stopped by SIGTERM" in log.read_text() or "stopped by SIGTERM" in log.read_text()
    assert copies(child_tmp) == []


def test_missing_dataset_is_one_line(s3, tmp_path, tmpdir_, capsys):  # noqa: F811
    url = f"s3://{s3[1]}/datasets/nothing"
    assert main(["train", "--outdir", str(tmp_path / "runs"), "--data", url, *TRAIN, "--kimg", "0.02"]) == 2
    assert error_lines(capsys) == [f"error: --data {url}: no dataset there (no dataset.json); write one with: "
                                   f"sg2ada dataset --source SRC --dest {url}"]
    assert copies(tmpdir_) == [] and not (tmp_path / "runs").exists()


def test_missing_credentials_are_one_line(s3, tmp_path, tmpdir_, monkeypatch, capsys):  # noqa: F811
    url = f"s3://{s3[1]}/datasets/shapes"
    assert main(["dataset", *MAKE, "--dest", url]) == 0
    capsys.readouterr()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["train", "--outdir", str(tmp_path / "runs"), "--data", url, *TRAIN, "--kimg", "0.02"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: --data {url}: cannot read it (") and "credentials" in err[0]
    assert main(["dataset", *MAKE, "--dest", f"s3://{s3[1]}/other"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: --dest s3://{s3[1]}/other: cannot write there (")
    assert "AWS_ACCESS_KEY_ID" in err[0]
    assert copies(tmpdir_) == [] and not (tmp_path / "runs").exists()


def test_a_hostile_dataset_json_cannot_write_outside_the_copy(s3, tmpdir_):  # noqa: F811
    from sg2ada.errors import UserError
    from sg2ada.storage import open_store

    url = f"s3://{s3[1]}/evil"
    open_store(url).put_bytes(b'{"format": "sg2ada-dataset", "shards": [{"file": "../../x.tfrecords"}]}',
                              "dataset.json")
    with pytest.raises(UserError, match="names a file '../../x.tfrecords' that the dataset tool never writes"):
        open_dataset(url)
    assert copies(tmpdir_) == []
