"""The worker's lean wire to the coordinator (worker.wire) against real in-process HTTP servers:
one kept-alive connection, reconnects after the server closes it, the same request bytes as
requests, certificate checks as requests does them, and requests wherever a proxy or ~/.netrc
applies."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from shared.protocol import ClaimedJob, Heartbeat, WorkerInfo
from worker.client import CoordinatorClient
from worker.errors import CoordinatorError, CoordinatorUnavailable, LeaseLost
from worker.wire import Reply, lean_allowed


class Keepalive(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; records what it received and which connection carried it."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"method": self.command, "path": self.path, "body": body,
                                 "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "peer": self.client_address[1]})
        status, reply, extra = self.server.answer(self)
        raw = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)
        if self.server.drop_after_reply:  # close without saying so (an idle timeout)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    do_GET = do_POST


def _start(handler=Keepalive, context: ssl.SSLContext | None = None):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.seen, httpd.drop_after_reply = [], False
    httpd.answer = lambda h: (200, {"ok": True}, {})
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if context else "http"
    httpd.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


@pytest.fixture
def server():
    httpd = _start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def _job() -> ClaimedJob:
    return ClaimedJob(job_id="j1", kind="echo", lease_token="tok", lease_expires_at=time.time() + 60,
                      attempt=1, max_attempts=3, heartbeat_interval=5.0)


def _client(url: str) -> CoordinatorClient:
    return CoordinatorClient(url, "dfw_key", "session-1", sleep=lambda s: None)


def test_calls_share_one_kept_alive_connection(server):
    server.answer = lambda h: (200, {"cancel_requested": False, "lease_expires_at": time.time() + 60,
                                     "heartbeat_interval": 5.0}, {})
    client = _client(server.url)
    assert client.session.lean
    for _ in range(3):
        assert not client.heartbeat(_job(), Heartbeat(progress=0.5)).cancel_requested
    assert len(server.seen) == 3
    assert len({s["peer"] for s in server.seen}) == 1


def test_a_connection_the_server_dropped_while_idle_is_replaced(server):
    server.drop_after_reply = True
    client = _client(server.url)
    for _ in range(3):
        client.fail(_job(), "boom")
        time.sleep(0.2)  # idle: the server's close has arrived
    assert len(server.seen) == 3
    assert len({s["peer"] for s in server.seen}) == 3


def test_connection_close_from_the_server_opens_a_new_connection(server):
    server.answer = lambda h: (200, {}, {"Connection": "close"})
    client = _client(server.url)
    client.release(_job())
    client.release(_job())
    assert len({s["peer"] for s in server.seen}) == 2


def test_the_wire_sends_what_requests_sends(server):
    """A JSON call and a bytes upload: same method, path, query, body and our headers."""
    client = _client(server.url)
    wire_session = client.session
    plain = requests.Session()
    plain.headers.update({k: v for k, v in wire_session.headers.items()})
    url = server.url + "/jobs/j1/upload-result"
    params = {"name": "a b/ñ", "final": 1, "next": 1, "skip": None}
    wire_session.call("POST", url, 5, params=params, data=b"bytes", headers={"X-Lease-Token": "t"})
    plain.post(url, params=params, data=b"bytes", headers={"X-Lease-Token": "t"}, timeout=5)
    wire_session.call("POST", server.url + "/jobs/claim", 5, json={"wait": 0.0, "x": [1, "é"]})
    plain.post(server.url + "/jobs/claim", json={"wait": 0.0, "x": [1, "é"]}, timeout=5)
    mine, theirs = server.seen[0], server.seen[1]
    assert (mine["method"], mine["path"], mine["body"]) == (theirs["method"], theirs["path"], theirs["body"])
    for name in ("x-api-key", "x-worker-session", "user-agent", "x-lease-token", "content-length"):
        assert mine["headers"][name] == theirs["headers"][name]
    mine, theirs = server.seen[2], server.seen[3]
    assert json.loads(mine["body"]) == json.loads(theirs["body"])
    assert mine["headers"]["content-type"] == theirs["headers"]["content-type"] == "application/json"


def test_replies_map_to_worker_errors(server):
    """A 409 is a lost lease and a reply's fields reach the caller, as through requests."""
    server.answer = lambda h: (409, {"error": "conflict", "message": "lease gone",
                                     "job_status": "queued"}, {})
    client = _client(server.url)
    with pytest.raises(LeaseLost, match="lease gone") as info:
        client.heartbeat(_job(), Heartbeat())
    assert info.value.job_status == "queued"
    server.answer = lambda h: (200, {"job_id": "j2", "kind": "echo", "lease_token": "t2",
                                     "lease_expires_at": time.time() + 60, "attempt": 1,
                                     "max_attempts": 3, "heartbeat_interval": 5.0},
                               {"Retry-After": "3"})
    claimed = client.claim(WorkerInfo(worker_id="w", session_id="s", kinds=("echo",)))
    assert claimed.job_id == "j2" and client.last_retry_after == 3.0


def test_a_redirect_says_which_address_to_use(server):
    """The wire follows no redirect (an http:// address that a proxy sends to https://): the
    worker is told which address to set instead of failing on the body."""
    server.answer = lambda h: (301, {}, {"Location": "https://example.test/jobs/claim"})
    with pytest.raises(CoordinatorError, match="301 redirect to https://example.test") as info:
        _client(server.url).claim(WorkerInfo(worker_id="w", session_id="s", kinds=("echo",)))
    assert info.value.status == 301 and not isinstance(info.value, CoordinatorUnavailable)


def test_refused_and_silent_coordinators_are_unavailable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(CoordinatorUnavailable):
        _client(f"http://127.0.0.1:{port}").fail(_job(), "x")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    try:
        client = CoordinatorClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "k", "s", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(CoordinatorUnavailable, match="timed out"):
            client.fail(_job(), "x")
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_proxies_and_netrc_keep_requests(monkeypatch, tmp_path):
    url = "http://coordinator.example:8000"
    assert lean_allowed(url)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not lean_allowed(url)
    monkeypatch.setenv("NO_PROXY", "coordinator.example")
    assert lean_allowed(url)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine coordinator.example login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert not lean_allowed(url)
    assert not lean_allowed("http://u:p@coordinator.example")


def test_streamed_and_redirect_calls_go_through_requests(server, tmp_path):
    client = _client(server.url)
    reply = client.session.call("GET", server.url + "/x", 5, allow_redirects=False, stream=True)
    assert isinstance(reply, requests.Response)
    reply = client.session.call("GET", server.url + "/x", 5, headers={"A": "b"})
    assert isinstance(reply, Reply) and reply.json() == {"ok": True}
    other = server.url.replace("127.0.0.1", "localhost")  # another address: never the wire
    assert isinstance(client.session.call("GET", other + "/x", 5), requests.Response)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_https_checks_certificates_against_requests_bundle(tmp_path, monkeypatch):
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = _start(context=context)
    try:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(CoordinatorUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            _client(httpd.url).fail(_job(), "x")  # certifi's bundle does not know it
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        client = _client(httpd.url)
        client.fail(_job(), "x")
        client.fail(_job(), "y")
        assert len(httpd.seen) == 2 and len({s["peer"] for s in httpd.seen}) == 1
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_header_with_a_line_break_is_refused_before_sending(server):
    client = _client(server.url)
    with pytest.raises(ValueError, match="line break"):
        client.session.call("POST", server.url + "/x", 5, json={}, headers={"X-Lease-Token": "t\r\nX-Evil: 1"})
    assert server.seen == []
