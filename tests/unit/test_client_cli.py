"""The `dubfleet` client CLI with click's CliRunner against a small fake coordinator."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from dubfleet.cli import main

KEY = "dfc_test"
RESULT = b"dubbed video bytes" * 1000
TRANSCRIPT = b'{"segments": []}'


def artifact(name: str, data: bytes) -> dict:
    return {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": "application/octet-stream", "url": f"/jobs/j1/artifacts/{name}"}


class FakeCoordinator:
    """Just enough of the client API; `final` says how job j1 ends."""

    def __init__(self, final: str = "completed"):
        self.final = final
        self.submits: list[dict] = []
        self.views = 0

    def view(self) -> dict:
        self.views += 1
        if self.views == 1:
            return {"job_id": "j1", "kind": "dub", "status": "running", "stage": "transcribing",
                    "progress": 40, "message": "speech", "artifacts": []}
        view = {"job_id": "j1", "kind": "dub", "status": self.final, "progress": 100,
                "main_artifact": "dubbed.mp4", "attempts": 1, "max_attempts": 3,
                "error": "BadMedia: no audio stream" if self.final == "failed" else None,
                "artifacts": []}
        if self.final == "completed":
            view["artifacts"] = [artifact("transcript.json", TRANSCRIPT),
                                 artifact("dubbed.mp4", RESULT)]
        return view

    def handle(self, h: "Handler") -> tuple[int, object]:
        if h.headers.get("X-API-Key") != KEY:
            return 401, {"error": "unauthorized", "message": "unknown API key"}
        route, method = urlsplit(h.path).path, h.command
        query = {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}
        if (method, route) == ("POST", "/jobs"):
            body = h.rfile.read(int(h.headers["Content-Length"]))
            self.submits.append({"query": query, "headers": dict(h.headers), "body": body})
            return 202, {"job_id": "j1", "status": "queued", "queue_position": 1}
        if (method, route) == ("GET", "/jobs/j1"):
            return 200, self.view()
        if (method, route) == ("GET", "/jobs/j1/artifacts/dubbed.mp4"):
            return 200, RESULT
        if (method, route) == ("GET", "/jobs/j1/artifacts/transcript.json"):
            return 200, TRANSCRIPT
        if (method, route) == ("GET", "/jobs/j1/download"):
            return 200, RESULT
        if (method, route) == ("GET", "/jobs"):
            return 200, {"jobs": [self.view()], "total": 1, "limit": 50, "offset": 0,
                         "query": query}
        if (method, route) == ("DELETE", "/jobs/j1"):
            return 409, {"error": "conflict", "message": "job j1 is already completed"}
        if (method, route) == ("POST", "/jobs/j1/retry"):
            return 200, {"job_id": "j1", "status": "queued"}
        if (method, route) == ("GET", "/queue/info"):
            return 200, {"queued": 2, "running": 1, "workers_online": 3}
        return 404, {"error": "not_found", "message": f"no route {route}"}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        status, body = self.server.fake.handle(self)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        if isinstance(body, bytes):
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_DELETE = do_GET


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.fake = FakeCoordinator()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def run(server, *args: str, key: str = KEY):
    env = {"DUBFLEET_API_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "DUBFLEET_API_KEY": key}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_submit_streams_the_file_with_fields_in_the_query(server, tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"\x00video" * 5000)
    result = run(server, "submit", str(video), "--kind", "subtitle", "--to", "fr",
                 "--priority", "5", "--option", "voice=kokoro", "--option", "speed=1.2",
                 "--idempotency-key", "abc")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "j1"
    sent = server.fake.submits[0]
    assert sent["body"] == video.read_bytes()
    assert sent["headers"]["Content-Type"] == "application/octet-stream"
    assert sent["headers"]["Content-Length"] == str(video.stat().st_size)
    assert sent["headers"]["Idempotency-Key"] == "abc"
    query = sent["query"]
    assert query["filename"] == "talk.mp4" and query["kind"] == "subtitle"
    assert query["target_language"] == "fr" and query["source_language"] == "auto"
    assert query["priority"] == "5"
    assert json.loads(query["options"]) == {"voice": "kokoro", "speed": 1.2}


def test_submit_wait_downloads_every_artifact(server, tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"v" * 100)
    out = tmp_path / "results"
    result = run(server, "submit", str(video), "--wait", "--poll", "0.1", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "transcribing" in result.stderr and "completed" in result.stderr
    assert (out / "dubbed.mp4").read_bytes() == RESULT
    assert (out / "transcript.json").read_bytes() == TRANSCRIPT
    assert not list(out.glob("*.part"))


def test_submit_wait_on_a_failed_job_exits_non_zero(server, tmp_path):
    server.fake.final = "failed"
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"v")
    result = run(server, "submit", str(video), "--wait", "--poll", "0.1")
    assert result.exit_code == 1
    assert "failed" in result.output and "no audio stream" in result.output


def test_server_errors_print_the_message_without_a_traceback(server):
    result = run(server, "cancel", "j1")
    assert result.exit_code == 1
    assert "job j1 is already completed" in result.output and "Traceback" not in result.output
    bad = run(server, "queue", key="dfc_wrong")
    assert bad.exit_code == 1 and "unknown API key" in bad.output


def test_unreachable_coordinator_is_a_clean_error():
    env = {"DUBFLEET_API_URL": "http://127.0.0.1:9", "DUBFLEET_API_KEY": KEY}
    result = CliRunner().invoke(main, ["status", "j1"], env=env, catch_exceptions=False)
    assert result.exit_code == 1 and "cannot reach the coordinator" in result.output


def test_status_json_and_human(server):
    server.fake.views = 1  # next view is the completed one
    as_json = run(server, "status", "j1", "--json")
    assert json.loads(as_json.stdout)["status"] == "completed"
    human = run(server, "status", "j1")
    assert "completed" in human.stdout and "dubbed.mp4 (main)" in human.stdout


def test_download_main_and_all(server, tmp_path):
    server.fake.views = 1
    result = run(server, "download", "j1", "--output", str(tmp_path / "one"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one" / "dubbed.mp4").read_bytes() == RESULT
    everything = run(server, "download", "j1", "--all", "--output", str(tmp_path / "all"))
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["dubbed.mp4",
                                                                     "transcript.json"]
    assert len(everything.stdout.split()) == 2


def test_jobs_queue_and_retry(server):
    jobs = run(server, "jobs", "--status", "running")
    assert jobs.exit_code == 0 and "j1" in jobs.stdout
    queue = run(server, "queue")
    assert "workers_online: 3" in queue.stdout
    retry = run(server, "retry", "j1")
    assert retry.stdout.strip() == "j1: queued"


def test_bad_option_and_missing_file_are_usage_errors(server, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"v")
    assert run(server, "submit", str(video), "--option", "novalue").exit_code == 2
    assert run(server, "submit", str(tmp_path / "missing.mp4")).exit_code == 2
