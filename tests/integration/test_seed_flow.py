"""The seed-003 worker flow by raw HTTP against a real waitress server."""
from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.integration.procs import Api

pytestmark = pytest.mark.integration


def _worker_info(name: str) -> dict:
    return {"worker_id": name, "session_id": uuid.uuid4().hex, "kinds": ["echo"]}


def test_next_claim_download_upload_completes(coordinator, admin: Api, worker_api: Api):
    payload = b"hello dubfleet " * 1000
    job_id = admin.submit_bytes(payload)["job_id"]

    nxt = worker_api.get("/jobs/next", params={"kinds": "echo"})
    assert nxt.status_code == 200 and nxt.json()["job_id"] == job_id

    claim = worker_api.post(f"/jobs/{job_id}/claim", json=_worker_info("w1"))
    assert claim.status_code == 200, claim.text
    token = claim.json()["lease_token"]
    assert claim.json()["attempt"] == 1

    second = worker_api.post(f"/jobs/{job_id}/claim", json=_worker_info("w2"))
    assert second.status_code == 409
    assert set(second.json()) >= {"error", "message"}

    lease = {"X-Lease-Token": token}
    got = worker_api.get(f"/jobs/{job_id}/download-input", headers=lease)
    assert got.status_code == 200 and got.content == payload
    part = worker_api.get(f"/jobs/{job_id}/download-input",
                          headers={**lease, "Range": "bytes=6-13"})
    assert part.status_code == 206 and part.content == payload[6:14]

    digest = hashlib.sha256(payload).hexdigest()
    up = worker_api.post(f"/jobs/{job_id}/upload-result", params={"name": "result"},
                         data=payload, headers={**lease, "X-Content-SHA256": digest,
                                                "Content-Type": "application/octet-stream"})
    assert up.status_code == 200, up.text

    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "completed" and view["attempts"] == 1
    assert admin.get(f"/jobs/{job_id}/download").content == payload
    assert worker_api.get("/jobs/next", params={"kinds": "echo"}).status_code == 204


def test_stale_token_is_fenced(coordinator, admin: Api, worker_api: Api):
    job_id = admin.submit_bytes(b"x" * 10)["job_id"]
    token = worker_api.post(f"/jobs/{job_id}/claim", json=_worker_info("w1")).json()["lease_token"]
    bad = {"X-Lease-Token": token + "nope"}
    for method, path, kw in [
        ("GET", f"/jobs/{job_id}/download-input", {}),
        ("POST", f"/jobs/{job_id}/heartbeat", {"json": {"progress": 50}}),
        ("POST", f"/jobs/{job_id}/upload-result", {"data": b"zz"}),
        ("POST", f"/jobs/{job_id}/fail", {"json": {"reason": "x", "retryable": False}}),
        ("POST", f"/jobs/{job_id}/release", {}),
    ]:
        resp = worker_api.request(method, path, headers=bad, **kw)
        assert resp.status_code == 409, (path, resp.text)
        assert resp.json()["error"] == "lease_lost"
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "running" and view["artifacts"] == []


def test_health_and_queue_info(coordinator, admin: Api):
    health = admin.get("/health")
    assert health.status_code == 200
    assert health.json()["database"] == "ok" and health.json()["storage"] == "ok"
    admin.submit_bytes(b"abc")
    info = admin.get("/queue/info").json()
    assert info["queued"] == 1 and info["running"] == 0
