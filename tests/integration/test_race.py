"""Many real worker processes race for many jobs: every job is done, each claimed once."""
from __future__ import annotations

import hashlib

import pytest

from tests.integration.procs import start_worker, stop_all

pytestmark = pytest.mark.integration

JOBS = 500
WORKERS = 8


def test_eight_workers_five_hundred_jobs(coordinator, admin, workers, tmp_path):
    payloads = {}
    for i in range(JOBS):
        data = f"job {i} ".encode() * (1 + i % 7)
        payloads[admin.submit_bytes(data)["job_id"]] = hashlib.sha256(data).hexdigest()
    assert len(payloads) == JOBS

    workers.extend(start_worker(coordinator.url, tmp_path / "w", f"racer{n}", "--burst",
                                "--kinds", "echo", "--claim-wait", "0") for n in range(WORKERS))
    for proc in workers:
        assert proc.wait(240) == 0

    views = admin.all_jobs()
    assert len(views) == JOBS
    assert {v["status"] for v in views} == {"completed"}
    assert {v["attempts"] for v in views} == {1}, "a job was claimed more than once"
    assert len({v["worker_id"] for v in views}) > 1, "only one worker did any work"
    for view in views:
        art = {a["name"]: a for a in view["artifacts"]}[view["main_artifact"]]
        assert art["sha256"] == payloads[view["job_id"]]
    stop_all(workers)

