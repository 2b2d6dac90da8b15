"""Signed webhooks end to end: a real coordinator, a real echo worker, a real local receiver.

The receiver is a tiny `http.server` on 127.0.0.1 (so the coordinator runs with
ALLOW_PRIVATE_CALLBACKS=1); it verifies signatures with the secret `coordinator create-key`
printed, exactly as README "Webhooks" shows a receiver doing it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from dubfleet.local import BIN, free_port
from tests.integration.procs import Api, start_worker

pytestmark = pytest.mark.integration

FAST = {"ALLOW_PRIVATE_CALLBACKS": "1", "WEBHOOK_BACKOFF_SECONDS": "0.2",
        "WEBHOOK_BACKOFF_CAP_SECONDS": "1", "WEBHOOK_POLL_SECONDS": "0.2", "CALLBACK_TIMEOUT": "2"}


class Receiver(BaseHTTPRequestHandler):
    """Records each POST (headers, body) and answers with the next of the server's statuses."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.lock:
            server.seen.append((dict(self.headers), body))
            status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def receiver(port: int = 0, statuses: list[int] | None = None) -> ThreadingHTTPServer:
    """Start a receiver on 127.0.0.1:`port`; stop it with `.shutdown()`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    httpd.daemon_threads = True
    httpd.seen, httpd.statuses, httpd.lock = [], list(statuses or []), threading.Lock()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


@pytest.fixture
def receivers():
    """Receivers made by a test; shut down at teardown."""
    made: list[ThreadingHTTPServer] = []

    def make(port: int = 0, statuses: list[int] | None = None) -> ThreadingHTTPServer:
        made.append(receiver(port, statuses))
        return made[-1]

    yield make
    for httpd in made:
        httpd.shutdown()
        httpd.server_close()


def create_key(coord, name: str) -> tuple[str, str]:
    """A client key and its webhook secret, from the real CLI's output (first and last line)."""
    out = subprocess.run([str(BIN / "coordinator"), "create-key", "--kind", "client", "--name",
                          name], env=coord.env, capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    assert lines[0].startswith("dfc_") and lines[-1].startswith("whsec_"), out
    return lines[0], lines[-1]


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README's receiver check, written out: parse, check the time, compare the HMAC."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def wait_for(check: Callable[[], object], timeout: float = 30, what: str = "") -> object:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def deliveries(api: Api, job_id: str) -> list[dict]:
    """The job's delivery log."""
    resp = api.get(f"/jobs/{job_id}/deliveries")
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


def settled(api: Api, job_id: str, count: int = 1) -> list[dict] | None:
    """The delivery log once `count` deliveries exist and none is pending, else None."""
    log = deliveries(api, job_id)
    done = len(log) >= count and all(d["status"] != "pending" for d in log)
    return log if done else None


def run_echo(coord, tmp_path, workers: list) -> None:
    """One real echo worker until the queue is empty."""
    proc = start_worker(coord.url, tmp_path / "w", f"w{len(workers)}", "--kinds", "echo",
                        "--burst", "--claim-wait", "0")
    workers.append(proc)
    assert proc.wait(90) == 0


def test_signed_delivery_verifies_end_to_end(coordinator_factory, receivers, workers, tmp_path):
    coord = coordinator_factory(env=FAST).start()
    hook = receivers()
    key, secret = create_key(coord, "alice")
    other, _ = create_key(coord, "bob")
    alice = Api(coord.url, key)
    job_id = alice.submit_bytes(b"payload", callback_url=hook.url)["job_id"]
    run_echo(coord, tmp_path, workers)
    [entry] = wait_for(lambda: settled(alice, job_id), what="the delivery")
    [(headers, body)] = hook.seen
    assert verify_signature(secret, headers["X-Dubfleet-Signature"], body)
    assert not verify_signature(secret.replace("_", "-", 1) + "x", headers["X-Dubfleet-Signature"], body)
    assert headers["X-Dubfleet-Event"] == "job.completed"
    assert headers["X-Dubfleet-Delivery"] == entry["id"] and "X-API-Key" not in headers
    view = json.loads(body)
    assert view["job_id"] == job_id and view["status"] == "completed"
    assert {k: entry[k] for k in ("event", "status", "attempts", "signed", "last_http_status",
                                  "last_error")} == {
        "event": "job.completed", "status": "delivered", "attempts": 1, "signed": True,
        "last_http_status": 200, "last_error": None}
    assert entry["delivered_at"] and entry["url"] == hook.url
    assert Api(coord.url, other).get(f"/jobs/{job_id}/deliveries").status_code == 404


def test_receiver_failing_twice_gets_three_attempts(coordinator_factory, receivers, workers,
                                                    tmp_path):
    coord = coordinator_factory(env=FAST).start()
    hook = receivers(statuses=[500, 500, 200])
    key, secret = create_key(coord, "alice")
    alice = Api(coord.url, key)
    job_id = alice.submit_bytes(b"payload", callback_url=hook.url)["job_id"]
    run_echo(coord, tmp_path, workers)
    [entry] = wait_for(lambda: settled(alice, job_id), what="the delivery")
    assert (entry["status"], entry["attempts"], entry["last_http_status"]) == ("delivered", 3, 200)
    assert len(hook.seen) == 3
    assert len({headers["X-Dubfleet-Delivery"] for headers, _ in hook.seen}) == 1
    assert all(verify_signature(secret, h["X-Dubfleet-Signature"], b) for h, b in hook.seen)


def test_receiver_down_fails_after_bounded_attempts(coordinator_factory, workers, tmp_path):
    coord = coordinator_factory(env={**FAST, "WEBHOOK_MAX_ATTEMPTS": "3"}).start()
    key, _ = create_key(coord, "alice")
    alice = Api(coord.url, key)
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    job_id = alice.submit_bytes(b"payload", callback_url=nobody)["job_id"]
    run_echo(coord, tmp_path, workers)
    [entry] = wait_for(lambda: settled(alice, job_id), what="the delivery to give up")
    assert (entry["status"], entry["attempts"], entry["last_http_status"]) == ("failed", 3, None)
    assert "ConnectionError" in entry["last_error"] and entry["delivered_at"] is None


def test_cancel_retry_cancel_delivers_each_ending_once(coordinator_factory, receivers):
    coord = coordinator_factory(env=FAST).start()
    hook = receivers()
    key, _ = create_key(coord, "alice")
    alice = Api(coord.url, key)
    job_id = alice.submit_bytes(b"payload", callback_url=hook.url)["job_id"]
    assert alice.request("DELETE", f"/jobs/{job_id}").json()["status"] == "cancelled"
    assert alice.post(f"/jobs/{job_id}/retry").json()["status"] == "queued"
    assert alice.request("DELETE", f"/jobs/{job_id}").json()["status"] == "cancelled"
    log = wait_for(lambda: settled(alice, job_id, count=2), what="two deliveries")
    assert [(d["event"], d["status"]) for d in log] == [("job.cancelled", "delivered")] * 2
    assert sorted(h["X-Dubfleet-Delivery"] for h, _ in hook.seen) == sorted(d["id"] for d in log)


def test_pending_delivery_is_sent_once_after_a_crash(coordinator_factory, receivers, workers,
                                                     tmp_path):
    env = {**FAST, "WEBHOOK_BACKOFF_SECONDS": "1", "WEBHOOK_MAX_ATTEMPTS": "30"}
    coord = coordinator_factory(env=env).start()
    key, secret = create_key(coord, "alice")
    alice = Api(coord.url, key)
    port = free_port()  # the receiver is down until the coordinator has crashed
    job_id = alice.submit_bytes(b"payload", callback_url=f"http://127.0.0.1:{port}/hook")["job_id"]
    run_echo(coord, tmp_path, workers)
    wait_for(lambda: deliveries(alice, job_id) and deliveries(alice, job_id)[0]["attempts"] >= 1,
             what="a failed first attempt")
    coord.kill()
    hook = receivers(port=port)
    coord.start()
    [entry] = wait_for(lambda: settled(alice, job_id), what="the delivery after the restart")
    assert entry["status"] == "delivered"
    time.sleep(1.0)  # a few delivery-loop polls: nothing more may be sent
    [(headers, body)] = hook.seen
    assert headers["X-Dubfleet-Delivery"] == entry["id"]
    assert verify_signature(secret, headers["X-Dubfleet-Signature"], body)
