"""The `worker` command: options, and one echo job end to end against a fake coordinator."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from worker.cli import main, parse_kinds
from worker.pipelines import default_registry

PAYLOAD = b"hello dubfleet " * 5000


class FakeCoordinator:
    """One echo job: claim -> download-input -> upload-result (final, completes), then 204s."""

    def __init__(self) -> None:
        self.claimed = False
        self.calls: list[tuple[str, str, dict]] = []
        self.uploaded = b""

    def handle(self, h: "Handler") -> tuple[int, object]:
        route = urlsplit(h.path).path
        query = {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        self.calls.append((h.command, route, dict(h.headers)))
        if route == "/jobs/claim":
            if self.claimed:
                return 204, b""
            self.claimed = True
            self.claim_body = json.loads(body)
            return 200, {"job_id": "j1", "kind": "echo", "lease_token": "tok",
                         "lease_expires_at": time.time() + 60, "attempt": 1, "max_attempts": 3,
                         "heartbeat_interval": 15, "input_name": "in.txt",
                         "input_size": len(PAYLOAD),
                         "input_sha256": hashlib.sha256(PAYLOAD).hexdigest()}
        if route == "/jobs/j1/download-input":
            return 200, PAYLOAD
        if route == "/jobs/j1/upload-result":
            self.uploaded = body
            self.upload_query = query
            return 200, {"artifact": {"name": query["name"], "size": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest()},
                         "status": "completed" if query.get("final") == "1" else "running"}
        if route == "/jobs/j1/complete":
            self.complete_body = json.loads(body)
            return 200, {"status": "completed"}
        return 404, {"error": "not_found", "message": route}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        status, body = self.server.fake.handle(self)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    do_GET = do_POST


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.fake = FakeCoordinator()
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_once_runs_one_echo_job_and_exits(server, tmp_path):
    url = f"http://127.0.0.1:{server.server_address[1]}"
    result = CliRunner().invoke(main, ["--once", "--kinds", "echo", "--work-dir",
                                       str(tmp_path), "--worker-id", "w-test"],
                                env={"DUBFLEET_API_URL": url, "WORKER_API_KEY": "dfw_k"},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    fake = server.fake
    assert fake.uploaded == PAYLOAD
    assert fake.upload_query == {"name": "result", "final": "1",
                                 "content_type": "text/plain"}
    worker = fake.claim_body["worker"]
    assert worker["worker_id"] == "w-test" and worker["kinds"] == ["echo"]
    assert len(worker["session_id"]) == 32 and fake.claim_body["wait"] == 0
    assert all(h["X-API-Key"] == "dfw_k" for _, _, h in fake.calls)
    assert [r for _, r, _ in fake.calls] == ["/jobs/claim", "/jobs/j1/download-input",
                                             "/jobs/j1/upload-result"]
    assert list(tmp_path.iterdir()) == []


def test_missing_url_and_unknown_kind_are_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["--api-key", "k"], env={"DUBFLEET_API_URL": ""}).exit_code == 2
    bad = runner.invoke(main, ["--api-url", "http://x", "--api-key", "k", "--kinds", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_bad_key_exits_cleanly(server, tmp_path):
    server.fake.handle = lambda h: (401, {"error": "unauthorized", "message": "unknown key"})
    url = f"http://127.0.0.1:{server.server_address[1]}"
    result = CliRunner().invoke(main, ["--api-url", url, "--api-key", "bad", "--burst",
                                       "--kinds", "echo", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1 and "unknown key" in result.output


def test_kinds_parsing_and_registry():
    assert parse_kinds(" echo, ECHO ,dub") == ["echo", "dub"]
    assert parse_kinds("") is None
    assert default_registry(["echo"]).kinds() == ("echo",)
