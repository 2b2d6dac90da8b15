"""Cancel, retry, max attempts and warm shutdown with a real server and real workers."""
from __future__ import annotations

import signal
import time

import pytest

from tests.integration.procs import Api, start_worker

pytestmark = pytest.mark.integration

FAST = {"LEASE_SECONDS": "4", "REAPER_INTERVAL": "0.5", "RETRY_BACKOFF_SECONDS": "0.2"}


@pytest.fixture
def fast(coordinator_factory):
    """A coordinator with short leases and backoff, and its admin API."""
    coord = coordinator_factory(env=FAST).start()
    return coord, Api(coord.url, "dfa_test_admin_key_0123456789abcdef")


def _submit(admin: Api, options: str = "{}", **params) -> str:
    return admin.submit_bytes(b"payload" * 100, options=options, **params)["job_id"]


def test_cancel_queued_then_retry(fast, workers, tmp_path):
    coord, admin = fast
    job_id = _submit(admin)
    resp = admin.request("DELETE", f"/jobs/{job_id}")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert admin.request("DELETE", f"/jobs/{job_id}").status_code == 409
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo", "--burst"))
    assert workers[-1].wait(60) == 0
    assert admin.get(f"/jobs/{job_id}").json()["status"] == "cancelled"

    assert admin.post(f"/jobs/{job_id}/retry").json()["status"] == "queued"
    workers.append(start_worker(coord.url, tmp_path / "w", "w2", "--kinds", "echo", "--burst"))
    assert workers[-1].wait(60) == 0
    assert admin.get(f"/jobs/{job_id}").json()["status"] == "completed"


def test_cancel_running_job_and_worker_goes_on(fast, workers, tmp_path):
    coord, admin = fast
    slow = _submit(admin, options='{"delay": 60}')
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo"))
    admin.wait_status(slow, {"running"}, timeout=30)
    resp = admin.request("DELETE", f"/jobs/{slow}")
    assert resp.status_code == 200 and resp.json()["cancel_requested"] is True
    view = admin.wait_status(slow, {"cancelled", "completed", "failed"}, timeout=15)
    assert view["status"] == "cancelled"
    nxt = _submit(admin)
    assert admin.wait_status(nxt, {"completed", "failed"}, timeout=30)["status"] == "completed"


def test_failures_retry_and_max_attempts(fast, workers, tmp_path):
    coord, admin = fast
    permanent = _submit(admin, options='{"fail": "permanent"}')
    flaky = _submit(admin, options='{"fail": "retryable"}', max_attempts="2")
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo"))

    view = admin.wait_status(permanent, {"failed"}, timeout=30)
    assert view["attempts"] == 1 and "permanent" in view["error"]
    view = admin.wait_status(flaky, {"failed"}, timeout=30)
    assert view["attempts"] == 2 and view["error"]

    assert admin.post(f"/jobs/{permanent}/retry").json()["status"] == "queued"
    again = admin.wait_status(permanent, {"failed", "completed"}, timeout=30)
    assert again["status"] == "failed" and again["attempts"] == 1
    ok = _submit(admin)
    admin.wait_status(ok, {"completed"}, timeout=30)
    assert admin.post(f"/jobs/{ok}/retry").status_code == 409


def _running(fast, workers, tmp_path, delay: float):
    """Start a worker on a job that takes `delay` seconds; return (admin, job_id, process)."""
    coord, admin = fast
    job_id = _submit(admin, options=f'{{"delay": {delay}}}')
    proc = start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo")
    workers.append(proc)
    admin.wait_status(job_id, {"running"}, timeout=30)
    return admin, job_id, proc


def test_warm_shutdown_finishes_job(fast, workers, tmp_path):
    admin, job_id, proc = _running(fast, workers, tmp_path, delay=3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert admin.get(f"/jobs/{job_id}").json()["status"] == "completed"


def test_second_signal_releases_job(fast, workers, tmp_path):
    admin, job_id, proc = _running(fast, workers, tmp_path, delay=60)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "queued" and view["attempts"] == 0
