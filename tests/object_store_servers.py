"""Object-store protocol servers for tests, on 127.0.0.1 and stopped by the fixtures that start them.

`S3Server`: moto's S3 server (`moto[server]`); clients find it through AWS_ENDPOINT_URL, the way a
user points sg2ada at MinIO, Ceph or R2. `GCSServer`: gcp-storage-emulator; clients find it through
STORAGE_EMULATOR_HOST. `FaultProxy`: an HTTP proxy in front of a server that can answer chosen
requests with a 500 or drop them, and records every request it saw.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import threading
import uuid

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self._cls = ThreadedMotoServer
        self._server = None
        self.start()

    def start(self):
        self._server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self):
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_bucket(self) -> str:
        import boto3

        name = f"bkt-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=name)
        return name


def use_s3(monkeypatch, endpoint: str) -> None:
    """The environment of a user with AWS credentials and an S3-compatible endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    isolate_cloud_credentials(monkeypatch)


def isolate_cloud_credentials(monkeypatch) -> None:
    """No credential file, and no instance-metadata lookups (they would leave the loopback)."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/sg2ada-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/sg2ada-test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("GCE_METADATA_HOST", closed)
    monkeypatch.setenv("GCE_METADATA_IP", closed)
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent/sg2ada-test")
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
                 "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class GCSServer:
    def __init__(self):
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
        self.port = free_port()
        self._server = create_server("127.0.0.1", self.port, in_memory=True)
        self._server.start()

    def stop(self):
        self._server.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_bucket(self) -> str:
        import requests

        name = f"bkt-{uuid.uuid4().hex[:10]}"
        r = requests.post(f"{self.endpoint}/storage/v1/b", json={"name": name}, timeout=10)
        r.raise_for_status()
        return name


class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of `target_port`.

    `rule(method, path)` returns None (forward), an HTTP status such as 500 (answer it without
    forwarding) or "drop" (close the connection without an answer). `requests` records (method, path, status or "drop").
    A request the target does not answer (it is down) is dropped, as a dead server would.
    """

    def __init__(self, target_port: int, rule=None):
        self.target_port = target_port
        self.rule = rule or (lambda method, path: None)
        self.requests: list[tuple[str, str, object]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size_line = self.rfile.readline()
                        size = int(size_line.split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)
                        chunks.append(size_line + chunk)
                        if size == 0:
                            # trailers until the blank line
                            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                                chunks.append(line)
                            chunks.append(b"\r\n")
                            return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                action = proxy.rule(self.command, self.path)
                if action == "drop":
                    proxy.requests.append((self.command, self.path, "drop"))
                    self.close_connection = True
                    return
                if isinstance(action, int):
                    proxy.requests.append((self.command, self.path, action))
                    msg = b"<Error><Code>InjectedError</Code><Message>injected by the test</Message></Error>"
                    self.send_response(action)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except OSError:
                    proxy.requests.append((self.command, self.path, "drop"))
                    self.close_connection = True
                    return
                proxy.requests.append((self.command, self.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def s3(monkeypatch):
    """A running S3 server, the environment pointing at it, and a fresh bucket: (server, bucket)."""
    server = S3Server()
    try:
        use_s3(monkeypatch, server.endpoint)
        yield server, server.make_bucket()
    finally:
        server.stop()


@pytest.fixture
def gcs(monkeypatch):
    """A running GCS emulator, STORAGE_EMULATOR_HOST pointing at it, and a fresh bucket."""
    server = GCSServer()
    try:
        isolate_cloud_credentials(monkeypatch)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        yield server, server.make_bucket()
    finally:
        server.stop()
