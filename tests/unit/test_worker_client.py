"""CoordinatorClient against a tiny in-process HTTP server: resume, checksums, error mapping."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.protocol import ClaimedJob, Heartbeat, WorkerInfo
from worker.client import CoordinatorClient
from worker.errors import (Backoff, CoordinatorError, CoordinatorUnavailable, JobFailed,
                           LeaseLost, PermanentJobError)
from worker.transfer import backoff_delay, parse_retry_after

DATA = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(DATA).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the test's `app(handler)`."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.app(self)

    do_POST = do_DELETE = do_GET

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status: int, body: bytes | dict = b"", headers: dict | None = None) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """Start a server; the test sets `server.app`; yields it with `.url` and `.seen`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.seen = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_client(server, **kw) -> CoordinatorClient:
    return CoordinatorClient(server.url, "dfw_key", "session-1", sleep=lambda s: None, **kw)


def job(**kw) -> ClaimedJob:
    base = dict(job_id="j1", kind="echo", lease_token="tok", lease_expires_at=time.time() + 60,
                attempt=1, max_attempts=3, heartbeat_interval=5.0, input_sha256=SHA)
    return ClaimedJob(**{**base, **kw})


def serve_input(cut_first: bool, bad_sha: bool = False) -> Callable:
    """A download-input endpoint with Range; optionally cuts the first reply short."""
    state = {"n": 0}

    def app(h: Handler) -> None:
        h.server.seen.append(dict(h.headers))
        state["n"] += 1
        start = int(h.headers["Range"].split("=")[1].rstrip("-")) if "Range" in h.headers else 0
        body = DATA[start:]
        status = 206 if start else 200
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("X-Content-SHA256", "0" * 64 if bad_sha else SHA)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        h.end_headers()
        if cut_first and state["n"] == 1:
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)
    return app


def test_download_resumes_with_range_and_checks_sha256(server, tmp_path):
    server.app = serve_input(cut_first=True)
    dest = make_client(server).download_input(job(), tmp_path / "input.bin")
    assert dest.read_bytes() == DATA
    first, second = server.seen
    assert "Range" not in first and first["X-Lease-Token"] == "tok"
    assert first["X-API-Key"] == "dfw_key" and first["X-Worker-Session"] == "session-1"
    offset = int(second["Range"].split("=")[1].rstrip("-"))
    assert 0 < offset < len(DATA)


def test_download_with_wrong_sha256_fails_the_attempt(server, tmp_path):
    server.app = serve_input(cut_first=False)
    with pytest.raises(JobFailed, match="sha256"):
        make_client(server, attempts=2).download_input(job(input_sha256="f" * 64),
                                                      tmp_path / "input.bin")
    assert not (tmp_path / "input.bin").exists()


def test_download_uses_the_server_sha256_when_the_claim_has_none(server, tmp_path):
    server.app = serve_input(cut_first=False, bad_sha=True)
    with pytest.raises(JobFailed):
        make_client(server, attempts=1).download_input(job(input_sha256=None),
                                                      tmp_path / "input.bin")


def test_source_url_job_fetches_without_the_api_key(server, tmp_path):
    server.app = serve_input(cut_first=False)
    claimed = job(input_sha256=None, source_url=server.url + "/media/clip.mp4")
    make_client(server, allow_private_urls=True).download_input(claimed, tmp_path / "input.mp4")
    assert (tmp_path / "input.mp4").read_bytes() == DATA
    assert "X-API-Key" not in server.seen[0] and "X-Lease-Token" not in server.seen[0]


def test_source_url_404_is_permanent(server, tmp_path):
    server.app = lambda h: h.reply(404, b"nope")
    claimed = job(input_sha256=None, source_url=server.url + "/gone.mp4")
    with pytest.raises(PermanentJobError, match="404"):
        make_client(server, allow_private_urls=True).download_input(claimed, tmp_path / "input.mp4")


def test_upload_streams_with_sha256_and_retries_5xx(server, tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(DATA)
    got: list = []

    def app(h: Handler) -> None:
        body = h.body()
        got.append((h.query, dict(h.headers), body))
        if len(got) == 1:
            return h.reply(503, {"error": "busy", "message": "try later"}, {"Retry-After": "0"})
        art = {"name": h.query["name"], "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        h.reply(200, {"artifact": art, "status": "running"})

    server.app = app
    info = make_client(server).upload_result(job(), path, "result", final=False,
                                             content_type="video/mp4")
    assert info.sha256 == SHA and info.size == len(DATA)
    query, headers, body = got[-1]
    assert query == {"name": "result", "final": "0", "content_type": "video/mp4"}
    assert headers["X-Content-SHA256"] == SHA and headers["X-Lease-Token"] == "tok"
    assert headers["Content-Length"] == str(len(DATA)) and body == DATA
    assert len(got) == 2


def test_upload_409_is_lease_lost_and_413_permanent(server, tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"abc")
    server.app = lambda h: (h.body(), h.reply(409, {"error": "lease_lost", "message": "stale"}))
    with pytest.raises(LeaseLost):
        make_client(server).upload_result(job(), path, "result")
    server.app = lambda h: (h.body(), h.reply(413, {"error": "too_large", "message": "big"}))
    with pytest.raises(PermanentJobError):
        make_client(server).upload_result(job(), path, "result")


def test_claim_204_200_and_429(server):
    replies = [(204, b"", {"Retry-After": "2"}),
               (200, job().to_dict(), {}),
               (429, {"error": "rate_limited", "message": "slow down"}, {"Retry-After": "3"})]
    bodies: list = []

    def app(h: Handler) -> None:
        bodies.append(json.loads(h.body()))
        h.reply(*replies[len(bodies) - 1])

    server.app = app
    client = make_client(server)
    info = WorkerInfo(worker_id="w", session_id="session-1")
    assert client.claim(info, wait=50) is None and client.last_retry_after == 2.0
    assert bodies[0]["wait"] == 20.0 and bodies[0]["worker"]["worker_id"] == "w"
    assert client.claim(info).lease_token == "tok"
    with pytest.raises(Backoff) as caught:
        client.claim(info)
    assert caught.value.retry_after == 3.0


def test_heartbeat_errors_map_to_worker_errors(server):
    server.app = lambda h: (h.body(), h.reply(409, {"error": "lease_lost", "message": "x"}))
    client = make_client(server)
    with pytest.raises(LeaseLost):
        client.heartbeat(job(), Heartbeat(stage="downloading"))
    server.app = lambda h: (h.body(), h.reply(403, {"error": "forbidden", "message": "no"}))
    with pytest.raises(CoordinatorError) as caught:
        client.heartbeat(job(), Heartbeat())
    assert caught.value.status == 403 and not isinstance(caught.value, CoordinatorUnavailable)
    server.app = lambda h: (h.body(), h.reply(200, {"cancel_requested": True,
                                                   "lease_expires_at": 1.0,
                                                   "heartbeat_interval": 7}))
    assert client.heartbeat(job(), Heartbeat()).cancel_requested is True


def test_unreachable_coordinator_is_unavailable():
    client = CoordinatorClient("http://127.0.0.1:9", "k", "s", timeout=2)
    with pytest.raises(CoordinatorUnavailable):
        client.complete(job(), "result")


def test_fail_and_complete_bodies(server):
    seen: list = []
    server.app = lambda h: (seen.append((h.route, json.loads(h.body()))), h.reply(200, {}))
    client = make_client(server)
    client.complete(job(), "dubbed", "en")
    client.fail(job(), "x" * 10000, retryable=False)
    client.release(job())
    assert seen[0] == ("/jobs/j1/complete", {"main_artifact": "dubbed", "detected_language": "en"})
    assert seen[1][0] == "/jobs/j1/fail" and seen[1][1]["retryable"] is False
    assert len(seen[1][1]["reason"]) <= 4000
    assert seen[2][0] == "/jobs/j1/release"


def test_backoff_helpers():
    assert backoff_delay(0, 1, 60, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, 1, 60, rand=lambda: 0.0) == 4.0
    assert backoff_delay(30, 1, 60, rand=lambda: 1.0) == 60.0
    assert parse_retry_after("5") == 5.0 and parse_retry_after("junk") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- per-request overhead ----------------------------------------------------------------------

REQUESTS = [
    dict(method="POST", url="http://h:1/jobs/j1/upload-result",
         params={"name": "a b/ñ", "final": 1, "next": 1, "skip": None, "many": ["x", "y"]},
         data=b"bytes", headers={"X-Lease-Token": "t", "Content-Type": "application/octet-stream"}),
    dict(method="post", url="http://h:1/jobs/claim?x=1", json={"worker": {"id": "w"}, "wait": 0.0}),
    dict(method="GET", url="http://h:1/jobs/j1/download-input",
         headers={"X-Lease-Token": "t", "User-Agent": None, "Range": "bytes=5-"}),
    dict(method="POST", url="http://u:p@h:1/jobs/j1/fail", json={"reason": "x"},
         params={}),
]


@pytest.mark.parametrize("req", REQUESTS)
def test_session_prepares_requests_as_requests_does(req):
    """The client's session builds a request directly (no cookie jars or settings to merge):
    the same method, URL, headers and body as requests' own prepare_request."""
    session = CoordinatorClient("http://h:1", "dfw_key", "session-1").session
    assert session._plain(requests.Request(**req))  # the direct path, not requests' own
    mine = session.prepare_request(requests.Request(**req))
    theirs = requests.Session.prepare_request(session, requests.Request(**req))
    assert (mine.method, mine.url, mine.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(mine.headers) == dict(theirs.headers)
    assert "Cookie" not in mine.headers and mine._cookies is not None


def test_session_takes_requests_path_when_it_has_cookies(server):
    """A cookie set by a reply is sent back, as a plain requests session would."""
    seen: list = []

    def app(h: Handler) -> None:
        seen.append(h.headers.get("Cookie"))
        h.reply(200, {}, {"Set-Cookie": "sid=abc; Path=/"})

    server.app = app
    client = make_client(server)
    client.fail(job(), "x")
    client.fail(job(), "y")
    assert seen == [None, "sid=abc"]


def test_session_reads_netrc_once_per_host(monkeypatch):
    import worker.wire as module
    calls: list[str] = []
    monkeypatch.setattr(module, "get_netrc_auth", lambda url: calls.append(url) or ("u", "p"))
    session = CoordinatorClient("http://h:1", "dfw_key", "session-1").session
    for path in ("/a", "/b"):
        prepared = session.prepare_request(requests.Request("GET", "http://h:1" + path))
        assert prepared.headers["Authorization"].startswith("Basic ")
    # once by the client (credentials for the coordinator: its calls all go through requests,
    # which sends them), once by the session for the host
    assert calls == ["http://h:1", "http://h:1/a"]
    assert not session.lean


@pytest.mark.parametrize("content", [b"tiny", b""])
def test_small_upload_is_sent_from_memory(server, tmp_path, content):
    """Bytes the caller already read go as the body (with a Content-Length); progress is
    reported once they are sent."""
    path = tmp_path / "out.bin"
    path.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    got: list = []

    def app(h: Handler) -> None:
        got.append((h.query, h.headers.get("Content-Length"), h.headers.get("X-Content-SHA256"),
                    h.body()))
        h.reply(200, {"artifact": {"name": "result", "size": len(content), "sha256": sha}})

    server.app = app
    progress: list = []
    info = make_client(server).upload_result(
        job(), path, "result", final=True, data=content, sha256=sha,
        on_progress=lambda done, total: progress.append((done, total)))
    assert got == [({"name": "result", "content_type": "application/octet-stream", "final": "1"},
                    str(len(content)), sha, content)]
    assert progress == [(len(content), len(content))] and info.sha256 == sha
