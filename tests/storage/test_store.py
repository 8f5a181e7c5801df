"""sg2ada.storage.Store against real protocol servers on loopback (moto S3, GCS emulator), local
paths and file:// URLs; the Azure path as far as it goes without a server (none is on PyPI)."""

from __future__ import annotations

import importlib
import sys

import pytest
from object_store_servers import FaultProxy, free_port, gcs, isolate_cloud_credentials, s3  # noqa: F401

from sg2ada.errors import UserError
from sg2ada.storage import open_store


@pytest.fixture(params=["local", "file", "s3", "gs"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "bucket" / "runs")
    if request.param == "file":
        return f"file://{tmp_path}/bucket/runs"
    server, bucket = request.getfixturevalue(request.param if request.param == "s3" else "gcs")
    return f"{request.param}://{bucket}/runs"


def test_put_get_list_delete(store_uri, tmp_path):
    store = open_store(store_uri)
    store.check_access()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "weights.npz").write_bytes(b"w" * 1000)
    (src / "snapshot.json").write_text("{}")
    (src / "sub" / "x.bin").write_bytes(b"x")
    store.put_tree(str(src), "snap", last=("snapshot.json",))
    store.put_bytes(b"hello", "a/b.txt")
    store.put_file(str(src / "weights.npz"), "a/w.npz")
    assert store.list("snap") == ["snapshot.json", "sub/x.bin", "weights.npz"]
    assert store.list() == ["a/b.txt", "a/w.npz", "snap/snapshot.json", "snap/sub/x.bin", "snap/weights.npz"]
    assert store.children() == ["a", "snap"]
    assert store.read_bytes("a/b.txt") == b"hello"
    store.get_file("a/w.npz", str(tmp_path / "down" / "w.npz"))
    assert (tmp_path / "down" / "w.npz").read_bytes() == b"w" * 1000
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["w.npz"]  # no temporary file left
    store.delete(["a/b.txt", "a/never-existed"])
    assert not store.exists("a/b.txt") and store.exists("a/w.npz")
    assert store.list("missing") == [] and store.children("missing") == []


def test_snapshot_manifest_is_uploaded_last(s3, tmp_path, monkeypatch):  # noqa: F811
    store = open_store(f"s3://{s3[1]}/runs")
    order = []
    put = store.fs.put_file
    monkeypatch.setattr(store.fs, "put_file", lambda lpath, rpath, **kw: (order.append(rpath), put(lpath, rpath, **kw)))
    src = tmp_path / "snap"
    src.mkdir()
    for name in ("a.bin", "snapshot.json", "weights.npz"):
        (src / name).write_bytes(b"1")
    store.put_tree(str(src), "s", last=("snapshot.json",))
    assert [p.rsplit("/", 1)[1] for p in order] == ["a.bin", "weights.npz", "snapshot.json"]


@pytest.mark.parametrize("uri, package", [("s3://b/runs", "s3fs"), ("gs://b/runs", "gcsfs"), ("az://c/runs", "adlfs"),
                                          ("abfs://c/runs", "adlfs")])
def test_missing_backend_package_is_one_line(uri, package, monkeypatch):
    registry = importlib.import_module("fsspec.registry")._registry
    monkeypatch.setitem(sys.modules, package, None)  # `import <package>` now fails, as when not installed
    for protocol in ("s3", "gs", "az", "abfs"):  # and fsspec has not imported it before
        monkeypatch.delitem(registry, protocol, raising=False)
    with pytest.raises(UserError) as e:
        open_store(uri)
    msg = str(e.value)
    assert "\n" not in msg and package in msg and "pip install 'sg2ada[cloud]'" in msg and uri in msg


def test_unknown_protocol_is_a_user_error():
    with pytest.raises(UserError, match="unknown storage protocol nosuch://"):
        open_store("nosuch://x/y")


def test_s3_without_credentials_is_one_line_naming_the_variables(s3, monkeypatch):  # noqa: F811
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError) as e:
        open_store(f"s3://{s3[1]}/runs").check_access()
    msg = str(e.value)
    assert "\n" not in msg and "cannot write there" in msg and "AWS_ACCESS_KEY_ID" in msg
    assert "credentials" in msg.lower()


def test_s3_wrong_bucket_is_one_line(s3):  # noqa: F811
    with pytest.raises(UserError) as e:
        open_store("s3://no-such-bucket-sg2ada/runs").check_access()
    assert "\n" not in str(e.value) and "s3://no-such-bucket-sg2ada/runs: cannot write there" in str(e.value)


def test_gcs_wrong_bucket_is_one_line(gcs):  # noqa: F811
    with pytest.raises(UserError) as e:
        open_store("gs://no-such-bucket-sg2ada/runs").check_access()
    assert "\n" not in str(e.value) and "gs://no-such-bucket-sg2ada/runs: cannot write there" in str(e.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(e.value)


def test_azure_without_credentials_is_one_line(monkeypatch):
    isolate_cloud_credentials(monkeypatch)
    with pytest.raises(UserError) as e:
        open_store("az://container/runs").check_access()
    msg = str(e.value)
    assert "\n" not in msg and "az://container/runs" in msg and "AZURE_STORAGE_CONNECTION_STRING" in msg


def test_azure_connection_string_reaches_its_endpoint(monkeypatch):
    """adlfs takes the account and endpoint from AZURE_STORAGE_CONNECTION_STRING and writes the probe
    blob there; an endpoint refusing the key fails as one line. (No Azure server is on PyPI: the
    endpoint here only answers 403, so uploads themselves are not exercised against Azure.)"""
    isolate_cloud_credentials(monkeypatch)
    endpoint = FaultProxy(free_port(), rule=lambda method, path: 403)
    try:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                           "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                           f"BlobEndpoint={endpoint.endpoint}/devstoreaccount1;")
        store = open_store("az://container/runs")
        assert store.root == "container/runs" and store.whole_objects
        with pytest.raises(UserError) as e:
            store.check_access()
    finally:
        endpoint.stop()
    assert "\n" not in str(e.value) and "az://container/runs: cannot write there" in str(e.value)
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(e.value)
    method, path, status = endpoint.requests[0]
    assert (method, status) == ("PUT", 403)
    assert path.startswith("/devstoreaccount1/container/runs/.sg2ada-write-check-")
