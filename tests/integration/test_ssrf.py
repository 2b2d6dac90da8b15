"""SSRF protection end to end: a real coordinator, real worker processes, local HTTP servers.

Every local server is on loopback, so by default a worker must refuse to fetch from it and the
coordinator must refuse to call back to it; `--allow-private-urls` / `ALLOW_PRIVATE_CALLBACKS`
lift those rules. The redirect, DNS-rebinding and TLS cases need a fake public network and are
covered in-process by tests/unit/test_netguard.py.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from tests.integration.procs import ADMIN_KEY, Api, start_worker

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SECRET = b"internal-only: db password hunter2\n"
BIG = bytes(range(256)) * (3 * MIB // 256)  # 3 MB


class Handler(BaseHTTPRequestHandler):
    """Serves the server's `routes`; records every request (method, path, headers, body)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            route(self)
        except OSError:  # the worker hung up once it had enough
            self.close_connection = True

    do_POST = do_GET


def sized(data: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route that sends `data` with a Content-Length."""
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    return route


def chunked(data: bytes, chunk: int = 64 * 1024) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route that streams `data` without a Content-Length (chunked encoding)."""
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
    return route


def no_content(h: BaseHTTPRequestHandler) -> None:
    """A 204 reply (a callback receiver)."""
    h.send_response(204)
    h.end_headers()


@pytest.fixture
def site() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1; tests set `site.routes` and read `site.seen`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.seen = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def submit_source(api: Api, url: str) -> str:
    """Submit an echo job that fetches `url`; return its id."""
    resp = api.post("/jobs", json={"source_url": url, "kind": "echo"})
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def run_burst(coord, tmp_path, workers: list, *args: str) -> None:
    """Run one real worker until the queue is empty."""
    proc = start_worker(coord.url, tmp_path / "w", f"w{len(workers)}", "--kinds", "echo",
                        "--burst", "--claim-wait", "0", *args)
    workers.append(proc)
    assert proc.wait(90) == 0


def test_source_url_on_loopback_is_refused_without_a_request(coordinator, admin, site, workers,
                                                              tmp_path):
    site.routes["/secret"] = sized(SECRET)
    job_id = submit_source(admin, f"{site.url}/secret")
    run_burst(coordinator, tmp_path, workers)
    view = admin.wait_status(job_id, {"failed", "completed"}, timeout=30)
    assert view["status"] == "failed" and view["attempts"] == 1, view
    assert view["error"] == ("source_url address 127.0.0.1 (loopback) is not allowed; start the "
                             "worker with --allow-private-urls to allow private addresses")
    assert site.seen == [], "the worker must not send the internal service a single request"
    assert view["artifacts"] == []


def test_allow_private_urls_fetches_exactly_the_served_bytes(coordinator, admin, site, workers,
                                                             tmp_path):
    site.routes["/clip.bin"] = sized(SECRET)
    job_id = submit_source(admin, f"{site.url}/clip.bin")
    run_burst(coordinator, tmp_path, workers, "--allow-private-urls")
    view = admin.wait_status(job_id, {"failed", "completed"}, timeout=30)
    assert view["status"] == "completed", view
    assert admin.get(f"/jobs/{job_id}/download").content == SECRET
    assert [(m, p) for m, p, _, _ in site.seen] == [("GET", "/clip.bin")]
    assert "X-API-Key" not in site.seen[0][2], "the worker's key never goes to a source host"


def test_sources_over_max_source_mb_fail_with_a_clear_reason(coordinator_factory, site, workers,
                                                             tmp_path):
    coord = coordinator_factory(env={"MAX_SOURCE_MB": "1"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    site.routes.update({"/sized.bin": sized(BIG), "/chunked.bin": chunked(BIG),
                        "/small.bin": chunked(SECRET)})
    jobs = {path: submit_source(admin, site.url + path)
            for path in ("/sized.bin", "/chunked.bin", "/small.bin")}
    run_burst(coord, tmp_path, workers, "--allow-private-urls")
    for path in ("/sized.bin", "/chunked.bin"):
        view = admin.wait_status(jobs[path], {"failed", "completed"}, timeout=30)
        assert view["status"] == "failed" and view["attempts"] == 1, view
        assert view["error"] == "source_url is larger than the 1 MB limit (MAX_SOURCE_MB)"
    small = admin.wait_status(jobs["/small.bin"], {"failed", "completed"}, timeout=30)
    assert small["status"] == "completed", small
    assert not any((tmp_path / "w").glob("w*/*/*")), "no partial download is left behind"


def test_callback_to_loopback_is_422(coordinator, admin, site):
    site.routes["/hook"] = no_content
    resp = admin.post("/jobs", params={"kind": "echo", "callback_url": f"{site.url}/hook"},
                      data=b"abc", headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "validation_failed" and body["field"] == "callback_url"
    assert body["message"] == ("callback_url address 127.0.0.1 (loopback) is not allowed; set "
                               "ALLOW_PRIVATE_CALLBACKS=1 on the coordinator to allow private "
                               "addresses")
    assert admin.get("/jobs").json()["total"] == 0
    resp = admin.post("/jobs", json={"source_url": "https://example.com/a.mp4", "kind": "echo",
                                     "callback_url": "http://localhost:9/hook"})
    assert resp.status_code == 422 and "localhost name" in resp.json()["message"]


def test_allowed_private_callback_is_delivered(coordinator_factory, site, workers, tmp_path):
    coord = coordinator_factory(env={"ALLOW_PRIVATE_CALLBACKS": "1"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    site.routes["/hook"] = no_content
    job_id = admin.submit_bytes(b"payload", callback_url=f"{site.url}/hook")["job_id"]
    run_burst(coord, tmp_path, workers)
    assert admin.wait_status(job_id, {"completed", "failed"}, timeout=30)["status"] == "completed"
    for _ in range(100):
        if site.seen:
            break
        threading.Event().wait(0.1)
    method, path, headers, body = site.seen[0]
    assert (method, path) == ("POST", "/hook")
    view = json.loads(body)
    assert view["job_id"] == job_id and view["status"] == "completed"
    assert "X-API-Key" not in headers


def test_worker_settings_from_the_environment(coordinator, admin, site, workers, tmp_path):
    site.routes.update({"/big.bin": sized(BIG), "/small.bin": sized(SECRET)})
    big, small = (submit_source(admin, site.url + path) for path in ("/big.bin", "/small.bin"))
    proc = start_worker(coordinator.url, tmp_path / "w", "env-worker", "--kinds", "echo",
                        "--burst", "--claim-wait", "0",
                        env={"DUBFLEET_ALLOW_PRIVATE_URLS": "1", "DUBFLEET_MAX_SOURCE_MB": "2"})
    workers.append(proc)
    assert proc.wait(90) == 0
    view = admin.wait_status(big, {"failed", "completed"}, timeout=30)
    assert view["status"] == "failed" and view["attempts"] == 1, view
    assert view["error"] == "source_url is larger than the 2 MB limit (worker --max-source-mb)"
    assert admin.wait_status(small, {"failed", "completed"}, timeout=30)["status"] == "completed"
    assert admin.get(f"/jobs/{small}/download").content == SECRET
