"""Real processes for integration tests and benchmarks: a waitress coordinator and workers."""
from __future__ import annotations

import functools
import time
from pathlib import Path

import requests

from dubfleet import local
from dubfleet.local import free_port, stop_all, wait_http  # noqa: F401 (re-exported)

WORKER_KEY = "dfw_test_worker_key_0123456789abcdef"
ADMIN_KEY = "dfa_test_admin_key_0123456789abcdef"

Coordinator = functools.partial(local.Coordinator, worker_key=WORKER_KEY, admin_key=ADMIN_KEY)


def start_worker(api_url: str, work_dir: Path, worker_id: str, *args: str, **kw):
    """Start a real worker process with the test worker key."""
    kw.setdefault("api_key", WORKER_KEY)
    return local.start_worker(api_url, work_dir, worker_id, *args, **kw)


class Api:
    """A tiny requests wrapper that sends the API key."""

    def __init__(self, base: str, key: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = key

    def request(self, method: str, path: str, **kw) -> requests.Response:
        """Send a request to the coordinator."""
        kw.setdefault("timeout", 30)
        return self.session.request(method, self.base + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        """GET `path`."""
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        """POST `path`."""
        return self.request("POST", path, **kw)

    def submit_bytes(self, data: bytes, kind: str = "echo", filename: str = "in.bin",
                     **params) -> dict:
        """Submit a raw-body job and return the 202 reply."""
        resp = self.post("/jobs", params={"kind": kind, "filename": filename, **params}, data=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code in (200, 202), resp.text
        return resp.json()

    def download_artifacts(self, view: dict, out: Path) -> dict[str, Path]:
        """Save every artifact of a job view under `out`: {name: path}."""
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for art in view["artifacts"]:
            path = out / art["name"]
            path.write_bytes(self.get(f"/jobs/{view['job_id']}/artifacts/{art['name']}").content)
            files[art["name"]] = path
        return files

    def all_jobs(self, **params) -> list[dict]:
        """Every job this key can see, following pagination."""
        views: list[dict] = []
        while True:
            page = self.get("/jobs", params={**params, "limit": 100, "offset": len(views)}).json()
            views.extend(page["jobs"])
            if not page["jobs"] or len(views) >= page["total"]:
                return views

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 60) -> dict:
        """Poll a job until its status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        view: dict = {}
        while time.monotonic() < deadline:
            view = self.get(f"/jobs/{job_id}").json()
            if view.get("status") in statuses:
                return view
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {view.get('status')} after {timeout}s: {view}")
