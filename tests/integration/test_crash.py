"""Crash-safety by crashing: SIGKILL workers mid-transfer and the coordinator under traffic."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time

import pytest
import requests

from tests.integration.procs import Api, start_worker, stop_all

pytestmark = pytest.mark.integration

FAST_LEASE = {"LEASE_SECONDS": "3", "REAPER_INTERVAL": "0.5"}


def _lease_token(db_path, job_id: str) -> str:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT lease_token FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


@pytest.mark.parametrize("stage", ["downloading", "uploading"])
def test_worker_killed_mid_transfer(coordinator_factory, workers, tmp_path, stage):
    coord = coordinator_factory(env=FAST_LEASE).start()
    admin = Api(coord.url, "dfa_test_admin_key_0123456789abcdef")
    data = os.urandom(4 * 1024 * 1024)
    job_id = admin.submit_bytes(data)["job_id"]

    victim = start_worker(coord.url, tmp_path / "w", "victim", "--kinds", "echo",
                          "--max-transfer-rate", "1")
    workers.append(victim)
    admin_view = _wait_stage(admin, job_id, stage)
    assert admin_view["worker_id"] == "victim"
    time.sleep(0.5)
    old_token = _lease_token(coord.data_dir / "coordinator.db", job_id)
    victim.kill()
    victim.wait(10)

    requeued = admin.wait_status(job_id, {"queued"}, timeout=30)
    assert requeued["attempts"] == 1 and requeued["artifacts"] == []

    workers.append(start_worker(coord.url, tmp_path / "w", "rescuer", "--kinds", "echo"))
    done = admin.wait_status(job_id, {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert done["worker_id"] == "rescuer"
    result = admin.get(f"/jobs/{job_id}/download").content
    assert hashlib.sha256(result).hexdigest() == hashlib.sha256(data).hexdigest()

    worker_api = Api(coord.url, "dfw_test_worker_key_0123456789abcdef")
    stale = {"X-Lease-Token": old_token}
    assert worker_api.post(f"/jobs/{job_id}/heartbeat", json={}, headers=stale).status_code == 409
    late = worker_api.post(f"/jobs/{job_id}/upload-result", data=b"late", headers=stale)
    assert late.status_code == 409
    assert admin.get(f"/jobs/{job_id}/download").content == result


def _wait_stage(admin: Api, job_id: str, stage: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = admin.get(f"/jobs/{job_id}").json()
        if view["status"] == "running" and view["stage"] == stage:
            return view
        time.sleep(0.05)
    raise TimeoutError(f"job never reached stage {stage}: {view}")


def test_coordinator_killed_under_traffic(coordinator_factory, workers, tmp_path):
    coord = coordinator_factory(env={"LEASE_SECONDS": "5", "REAPER_INTERVAL": "0.5"}).start()
    admin = Api(coord.url, "dfa_test_admin_key_0123456789abcdef")
    workers.extend(start_worker(coord.url, tmp_path / "w", f"w{n}", "--kinds", "echo",
                                "--poll-interval", "0.5") for n in range(4))
    expected: dict[str, str] = {}
    submitted = threading.Event()

    def submit_all() -> None:
        for i in range(150):
            data = os.urandom(64 * 1024 + i)
            key = f"job-{i}"
            expected[key] = hashlib.sha256(data).hexdigest()
            _submit_until_accepted(admin, data, key)
        submitted.set()

    thread = threading.Thread(target=submit_all)
    thread.start()
    _wait_completed(admin, 30)
    coord.kill()
    time.sleep(1.0)
    coord.start()
    thread.join(120)
    assert submitted.is_set()

    views = _wait_all_done(admin, len(expected), timeout=120)
    assert len(views) == len(expected), "a job was lost or duplicated"
    by_key = {v["options"].get("tag"): v for v in views}
    for key, digest in expected.items():
        view = by_key[key]
        assert view["status"] == "completed", view
        body = admin.get(f"/jobs/{view['job_id']}/download").content
        assert hashlib.sha256(body).hexdigest() == digest, "a half-written result was served"
    with sqlite3.connect(coord.data_dir / "coordinator.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stop_all(workers)


def _submit_until_accepted(admin: Api, data: bytes, key: str) -> None:
    for _ in range(200):
        try:
            resp = admin.post("/jobs", params={"kind": "echo", "options": f'{{"tag": "{key}"}}'},
                              data=data, headers={"Content-Type": "application/octet-stream",
                                                  "Idempotency-Key": key}, timeout=5)
            if resp.status_code in (200, 202):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"could not submit {key}")


def _wait_completed(admin: Api, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin.get("/jobs", params={"status": "completed", "limit": 1}).json()["total"] >= count:
            return
        time.sleep(0.1)
    raise TimeoutError("workers did not complete jobs")


def _wait_all_done(admin: Api, total: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = admin.all_jobs()
        if len(views) >= total and all(v["status"] == "completed" for v in views):
            return views
        time.sleep(0.2)
    raise TimeoutError(f"jobs not done: { {v['status'] for v in views} }")


def _claims_answered(admin: Api) -> float:
    """How many POST /jobs/claim calls got a job (the coordinator's own counter)."""
    for line in admin.get("/metrics").text.splitlines():
        if line.startswith("dubfleet_http_request_duration_seconds_count") and \
                'route="/jobs/claim"' in line and 'status="200"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_worker_killed_holding_a_handed_over_job(coordinator_factory, workers, tmp_path):
    """Claim-on-complete: a worker gets its second job in the reply of its first job's upload
    (no claim call), is SIGKILLed while running it, and that job is not lost: its lease runs out,
    the reaper requeues it and another worker completes it, exactly once."""
    coord = coordinator_factory(env=FAST_LEASE).start()
    admin = Api(coord.url, "dfa_test_admin_key_0123456789abcdef")
    first = admin.submit_bytes(b"first job", priority=5)["job_id"]
    second = admin.submit_bytes(b"second job", options='{"delay": 8}')["job_id"]

    victim = start_worker(coord.url, tmp_path / "w", "victim", "--kinds", "echo", "--claim-wait", "0")
    workers.append(victim)
    running = admin.wait_status(second, {"running"}, timeout=30)
    assert running["worker_id"] == "victim"
    assert admin.get(f"/jobs/{first}").json()["status"] == "completed"
    assert _claims_answered(admin) == 1  # the second job came in the first one's upload reply
    victim.kill()
    victim.wait(10)

    requeued = admin.wait_status(second, {"queued"}, timeout=30)
    assert requeued["artifacts"] == [] and requeued["worker_id"] is None
    workers.append(start_worker(coord.url, tmp_path / "w", "rescuer", "--kinds", "echo", "--burst"))
    done = admin.wait_status(second, {"completed", "failed"}, timeout=90)
    assert done["status"] == "completed" and done["worker_id"] == "rescuer", done
    assert done["attempts"] == 2  # the killed run counted (its inline input started it)
    assert admin.get(f"/jobs/{second}/download").content == b"second job"
    assert admin.get(f"/jobs/{first}").json()["attempts"] == 1
