"""The hardened `coordinator serve`: slow clients, transport errors, SIGTERM drain."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest
import requests

from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api, Coordinator

pytestmark = pytest.mark.integration

GOAL_SECONDS = 2.0  # a legitimate request is answered within this while the server is attacked
SLOW_CONNECTIONS = 200


# --- raw HTTP helpers ---------------------------------------------------------------------------

def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A blocking TCP connection to the coordinator."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after the reply is fine)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length framed response from a connection that may stay open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status, headers = _parse_head(head)
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return status, headers, body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Parse a whole response read until the connection closed."""
    assert b"\r\n\r\n" in raw, f"no HTTP response: {raw[:200]!r}"
    head, body = raw.split(b"\r\n\r\n", 1)
    return (*_parse_head(head), body)


def _assert_json_error(status: int, headers: dict[str, str], body: bytes, code: str) -> dict:
    """The reply is `{"error": code, "message": ...}` as application/json."""
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    payload = json.loads(body)
    assert payload["error"] == code and isinstance(payload["message"], str), payload
    return payload


def _upload_head(path: str, length: int) -> bytes:
    """Request head of a raw-body submit."""
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {ADMIN_KEY}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n").encode()


def _within_goal(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    """Run a request; fail unless it is answered within GOAL_SECONDS."""
    t0 = time.monotonic()
    try:
        resp = call()
    except requests.Timeout:
        pytest.fail(f"no answer within {GOAL_SECONDS}s")
    elapsed = time.monotonic() - t0
    assert elapsed < GOAL_SECONDS, f"answered after {elapsed:.2f}s"
    return resp, elapsed


def _wait_for_log(coord: Coordinator, text: str, timeout: float = 10.0) -> None:
    """Wait until the coordinator's log contains `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in coord.log_path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in the coordinator log")


class SlowClients:
    """Connections that send a request's headers one byte per second and never finish."""

    def __init__(self, port: int, count: int):
        self.socks = [_connect(port) for _ in range(count)]
        for sock in self.socks:
            sock.setblocking(False)
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        prefix = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: "
        while not self._stop.is_set():
            byte = prefix[self.rounds:self.rounds + 1] or b"a"
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass
            self.rounds += 1
            self._stop.wait(1.0)

    def wait_rounds(self, rounds: int) -> None:
        """Block until every connection has sent `rounds` bytes."""
        while self.rounds < rounds:
            time.sleep(0.05)

    def open_count(self) -> int:
        """Connections the server has neither closed nor answered."""
        count = 0
        for sock in self.socks:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    def close(self) -> None:
        """Stop trickling and close every connection."""
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


# --- slow connections -------------------------------------------------------------------------

def test_slow_header_connections_do_not_block_others(coordinator_factory):
    coord = coordinator_factory().start()
    admin = Api(coord.url, ADMIN_KEY)
    slow = SlowClients(coord.port, SLOW_CONNECTIONS)
    try:
        slow.wait_rounds(3)
        health, _ = _within_goal(lambda: requests.get(f"{coord.url}/health", timeout=GOAL_SECONDS))
        assert health.status_code == 200, health.text
        submit, _ = _within_goal(lambda: admin.post(
            "/jobs", params={"kind": "echo", "filename": "a.bin"}, data=b"hello",
            headers={"Content-Type": "application/octet-stream"}, timeout=GOAL_SECONDS))
        assert submit.status_code == 202, submit.text
        assert slow.open_count() == SLOW_CONNECTIONS  # all were held at once, none dropped
    finally:
        slow.close()


def _trickle_headers(port: int) -> tuple[float, bytes]:
    """Send a never-ending header, 5 bytes a second; seconds until closed, and the reply."""
    sock = _connect(port, timeout=0.2)
    t0 = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    reply = b""
    try:
        while time.monotonic() - t0 < 30:
            try:
                sock.sendall(b"X")
            except OSError:  # closed: what it sent before is still readable
                reply += _read_until_closed(sock)
                break
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        return time.monotonic() - t0, reply
    finally:
        sock.close()


def _idle_keep_alive(port: int, idle: float) -> int:
    """Two requests on one connection with `idle` seconds between them; the second's status."""
    with _connect(port) as sock:
        request = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n"
        sock.sendall(request)
        assert _read_response(sock)[0] == 200
        time.sleep(idle)
        sock.sendall(request)
        return _read_response(sock)[0]


def _slow_body_upload(port: int, seconds: float) -> tuple[int, dict[str, str], bytes]:
    """Headers at once, then the body in pieces over `seconds`."""
    body = os.urandom(64 * 1024)
    pieces = 10
    with _connect(port, timeout=30) as sock:
        sock.sendall(_upload_head("/jobs?kind=echo&filename=slow.bin", len(body)))
        for i in range(pieces):
            time.sleep(seconds / pieces)
            sock.sendall(body[i * len(body) // pieces:(i + 1) * len(body) // pieces])
        return _read_response(sock)


def test_header_timeout_closes_only_slow_headers(coordinator_factory):
    timeout = 2.0
    coord = coordinator_factory(env={"HEADER_TIMEOUT": str(timeout)}).start()
    worker = Api(coord.url, WORKER_KEY)
    claim = {"worker": {"worker_id": "w", "session_id": "s1", "kinds": ["transcribe"]}, "wait": 4}
    with ThreadPoolExecutor(4) as pool:
        trickle = pool.submit(_trickle_headers, coord.port)
        idle = pool.submit(_idle_keep_alive, coord.port, timeout + 1.5)
        long_poll = pool.submit(worker.post, "/jobs/claim", json=claim)
        upload = pool.submit(_slow_body_upload, coord.port, timeout + 1.5)
        elapsed, reply = trickle.result()
        assert timeout - 0.1 <= elapsed < timeout + 3, elapsed
        status, headers, body = _parse(reply)
        assert status == 408
        _assert_json_error(status, headers, body, "request_timeout")
        # Not cut: an idle keep-alive connection, a long-polling claim, a slow body.
        assert idle.result() == 200
        assert long_poll.result().status_code == 204
        assert upload.result()[0] == 202


# --- transport errors are JSON ------------------------------------------------------------------

BIG_HEADER = b"X-Big: " + b"a" * (128 * 1024) + b"\r\n"
POST = b"POST /jobs HTTP/1.1\r\nHost: t\r\n"
TRANSPORT_ERRORS = {
    "content_length_over_limit": (POST + b"Content-Length: 100000000000\r\n\r\n",
                                  413, "payload_too_large"),
    "bad_content_length": (POST + b"Content-Length: 12abc\r\n\r\n", 400, "bad_request"),
    "bad_chunk_size": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                       400, "bad_request"),
    "header_too_large": (b"GET /health HTTP/1.1\r\nHost: t\r\n" + BIG_HEADER + b"\r\n",
                         431, "request_header_fields_too_large"),
    "garbage_request_line": (b"\x16\x03\x01 hello there\r\nHost: t\r\n\r\n", 400, "bad_request"),
    "nul_in_header": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Bad: a\x00b\r\n\r\n",
                      400, "bad_request"),
    "unsupported_transfer_encoding": (POST + b"Transfer-Encoding: gzip\r\n\r\n",
                                      501, "not_implemented"),
}


@pytest.fixture(scope="module")
def small_coordinator(tmp_path_factory):
    """One coordinator with a 1 MB upload limit for the transport error cases."""
    coord = Coordinator(tmp_path_factory.mktemp("transport"), env={"MAX_UPLOAD_MB": "1"}).start()
    yield coord
    coord.kill()


@pytest.mark.parametrize("case", list(TRANSPORT_ERRORS))
def test_transport_errors_are_json(small_coordinator, case):
    payload, status_code, code = TRANSPORT_ERRORS[case]
    with _connect(small_coordinator.port) as sock:
        sock.sendall(payload)
        status, headers, body = _parse(_read_until_closed(sock))
    assert status == status_code
    _assert_json_error(status, headers, body, code)


def _empty_claim(connection: str = "") -> bytes:
    body = b'{"worker": {"worker_id": "w", "session_id": "s", "kinds": ["echo"]}, "wait": 0}'
    return (f"POST /jobs/claim HTTP/1.1\r\nHost: t\r\nX-API-Key: {WORKER_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{connection}\r\n"
            ).encode() + body


def test_a_204_keeps_the_connection_open(small_coordinator):
    """An empty claim (204, no body, so no Content-Length) leaves a keep-alive connection open
    for the worker's next call (waitress alone would close it); a client that asked to close
    still gets its connection closed."""
    with _connect(small_coordinator.port) as sock:
        for _ in range(2):
            sock.sendall(_empty_claim())
            status, headers, body = _read_response(sock)
            assert (status, body) == (204, b"") and "connection" not in headers
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.sendall(_empty_claim("Connection: close\r\n"))
        status, headers, _ = _parse(_read_until_closed(sock))
        assert status == 204 and headers["connection"] == "close"


# --- graceful shutdown --------------------------------------------------------------------------

class SlowUpload(threading.Thread):
    """A raw-socket submit whose body is sent in pieces; `reply` holds the response."""

    def __init__(self, port: int, body: bytes, seconds: float, stall: bool = False):
        super().__init__(daemon=True)
        self.port, self.body, self.seconds, self.stall = port, body, seconds, stall
        self.started = threading.Event()
        self.reply: tuple[int, dict[str, str], bytes] | None = None
        self.sock = _connect(port, timeout=60)

    def run(self) -> None:
        pieces = 30
        size = len(self.body)
        self.sock.sendall(_upload_head("/jobs?kind=echo&filename=drain.bin", size)
                          + self.body[:size // pieces])
        self.started.set()
        if self.stall:
            return
        for i in range(1, pieces):
            time.sleep(self.seconds / pieces)
            self.sock.sendall(self.body[i * size // pieces:(i + 1) * size // pieces])
        self.reply = _read_response(self.sock)
        self.sock.close()


def _assert_shutting_down(url: str) -> None:
    """A new request during the drain gets 503 `shutting_down` and the connection closes."""
    resp = requests.get(f"{url}/health", timeout=5)
    assert resp.status_code == 503
    _assert_json_error(resp.status_code, {k.lower(): v for k, v in resp.headers.items()},
                       resp.content, "shutting_down")
    assert int(resp.headers["Retry-After"]) > 0
    assert resp.headers["Connection"].lower() == "close"


def test_sigterm_drains_an_upload_in_flight(coordinator_factory):
    grace = 15.0
    coord = coordinator_factory(env={"SHUTDOWN_GRACE_SECONDS": str(grace)}).start()
    body = os.urandom(4 * 1024 * 1024)
    with _connect(coord.port) as idle:  # an idle keep-alive connection must not hold the drain
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _read_response(idle)[0] == 200
        upload = SlowUpload(coord.port, body, seconds=3.0)
        upload.start()
        assert upload.started.wait(10)
        signalled = time.monotonic()
        coord.send_signal(signal.SIGTERM)
        _wait_for_log(coord, "draining")
        _assert_shutting_down(coord.url)
        upload.join(30)
        assert upload.reply is not None and upload.reply[0] == 202, upload.reply
        assert upload.reply[1]["connection"] == "close"  # draining: no keep-alive
        job_id = json.loads(upload.reply[2])["job_id"]
        assert coord.wait(timeout=grace) == 0
        assert time.monotonic() - signalled < grace
    coord.start()
    assert Api(coord.url, ADMIN_KEY).get(f"/jobs/{job_id}").json()["status"] == "queued"
    assert _claim_and_download(coord.url, job_id) == hashlib.sha256(body).hexdigest()


def _claim_and_download(url: str, job_id: str) -> str:
    """Claim the job as a worker and return the sha256 of its downloaded input."""
    worker = Api(url, WORKER_KEY)
    claim = worker.post("/jobs/claim", json={"worker": {"worker_id": "w", "session_id": "s1",
                                                        "kinds": ["echo"]}}).json()
    assert claim["job_id"] == job_id
    resp = worker.get(f"/jobs/{job_id}/download-input",
                      headers={"X-Lease-Token": claim["lease_token"], "X-Worker-Session": "s1"})
    assert resp.status_code == 200
    assert resp.headers["X-Content-SHA256"] == hashlib.sha256(resp.content).hexdigest()
    return hashlib.sha256(resp.content).hexdigest()


def test_second_sigterm_exits_at_once(coordinator_factory):
    coord = coordinator_factory().start()  # default grace: 30 s
    upload = SlowUpload(coord.port, os.urandom(1024 * 1024), seconds=0, stall=True)
    upload.start()
    assert upload.started.wait(10)
    coord.send_signal(signal.SIGTERM)
    _wait_for_log(coord, "draining")
    _assert_shutting_down(coord.url)  # alive and draining: the stalled upload holds it open
    coord.send_signal(signal.SIGTERM)
    assert coord.wait(timeout=5) != 0
    upload.sock.close()


def test_sigterm_ends_idle_long_polls_at_once(coordinator_factory):
    """Workers long-polling for jobs do not hold the drain: their polls end (204) at once."""
    coord = coordinator_factory().start()
    replies: list[int] = []

    def long_poll() -> None:
        resp = requests.post(coord.url + "/jobs/claim", json={"worker": {"kinds": ["echo"]}, "wait": 20},
                             headers={"X-API-Key": WORKER_KEY, "X-Worker-Session": "s"}, timeout=30)
        replies.append(resp.status_code)
    polls = [threading.Thread(target=long_poll) for _ in range(3)]
    for poll in polls:
        poll.start()
    time.sleep(1.0)
    started = time.monotonic()
    coord.send_signal(signal.SIGTERM)
    assert coord.wait(timeout=10) == 0
    for poll in polls:
        poll.join(10)
    assert time.monotonic() - started < 5, "idle long polls held the drain"
    assert replies == [204, 204, 204]


# --- open-file limit ------------------------------------------------------------------------------

def test_fd_budget_raises_the_soft_limit_or_caps_connections(monkeypatch, caplog):
    import resource

    from coordinator import serving
    calls = []
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert serving.fd_budget(1000, 32) == 1000  # the hard limit allows raising the soft one
    others = serving.FD_RESERVE + serving.FDS_PER_THREAD * 32
    assert calls == [(serving.FDS_PER_CONNECTION * 1000 + others, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    with caplog.at_level("WARNING", logger="coordinator.serving"):
        allowed = serving.fd_budget(1000, 32)
    assert allowed == (1024 - others) // serving.FDS_PER_CONNECTION
    assert "ulimit -n" in caplog.text
