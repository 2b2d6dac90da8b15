"""Workers with `--batch`: short jobs' results delivered in batch calls that claim the next jobs,
a long job giving the jobs claimed ahead back, and a batching worker killed with SIGKILL."""
from __future__ import annotations

import time

import pytest

from tests.integration.procs import Api, start_worker

pytestmark = pytest.mark.integration

FAST_LEASE = {"LEASE_SECONDS": "3", "START_LEASE_SECONDS": "3", "REAPER_INTERVAL": "0.5"}


def _views(admin: Api, ids) -> dict[str, dict]:
    return {job_id: admin.get(f"/jobs/{job_id}").json() for job_id in ids}


def _logs(tmp_path, names) -> str:
    return "".join((tmp_path / f"{name}.log").read_text() for name in names)


def test_batching_workers_complete_every_job_once(coordinator, admin, workers, tmp_path):
    inputs = {admin.submit_bytes(f"job {n}".encode())["job_id"]: f"job {n}".encode() for n in range(120)}
    names = ["b0", "b1"]
    for name in names:
        workers.append(start_worker(coordinator.url, tmp_path, name, "--kinds", "echo", "--batch", "8",
                                    "--burst", "--claim-wait", "0"))
    assert [proc.wait(120) for proc in workers] == [0, 0]
    views = _views(admin, inputs)
    assert {(v["status"], v["attempts"]) for v in views.values()} == {("completed", 1)}
    for job_id, data in inputs.items():
        assert admin.get(f"/jobs/{job_id}/download").content == data
    batched = _logs(tmp_path, names).count("completed (result delivered in a batch call)")
    assert batched >= 60, batched  # jobs slower than 0.1 s on a loaded machine upload alone


def test_a_long_job_gives_the_jobs_claimed_ahead_back(coordinator, admin, workers, tmp_path):
    first = admin.submit_bytes(b"first")["job_id"]
    long = admin.submit_bytes(b"long", options='{"delay": 2}')["job_id"]
    rest = [admin.submit_bytes(f"short {n}".encode())["job_id"] for n in range(6)]
    workers.append(start_worker(coordinator.url, tmp_path, "solo", "--kinds", "echo", "--batch", "8"))
    admin.wait_status(long, {"completed"}, timeout=60)
    for job_id in rest:
        admin.wait_status(job_id, {"completed"}, timeout=60)
    views = _views(admin, [first, long, *rest])
    assert {(v["status"], v["attempts"]) for v in views.values()} == {("completed", 1)}
    # The long job's heartbeat delivered the first job's held result at once ...
    assert views[first]["finished_at"] < views[long]["finished_at"] - 1.0
    log = _logs(tmp_path, ["solo"])
    # ... and gave back the jobs claimed ahead of it, unstarted (no attempt counted).
    assert log.count("given back to the queue unstarted") == len(rest), log


def _held_by(admin: Api, worker_id: str) -> set[str]:
    """The ids of the running jobs whose lease `worker_id` holds."""
    return {j["job_id"] for j in admin.all_jobs(status="running") if j["worker_id"] == worker_id}


def test_a_killed_batching_worker_loses_no_job_and_finishes_none_twice(coordinator_factory, workers,
                                                                       tmp_path):
    coord = coordinator_factory(env=FAST_LEASE).start()
    admin = Api(coord.url, "dfa_test_admin_key_0123456789abcdef")
    inputs = {admin.submit_bytes(f"k{n}".encode())["job_id"]: f"k{n}".encode() for n in range(300)}
    victim = start_worker(coord.url, tmp_path, "victim", "--kinds", "echo", "--batch", "8")
    workers.append(victim)
    deadline = time.monotonic() + 60
    while admin.get("/queue/info").json()["completed_last_hour"] < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.kill()  # SIGKILL: results held and jobs claimed ahead die with it
    victim.wait(10)
    stranded = _held_by(admin, "victim")
    rescuer = start_worker(coord.url, tmp_path, "rescuer", "--kinds", "echo", "--batch", "8")
    workers.append(rescuer)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if admin.get("/queue/info").json()["completed_last_hour"] == len(inputs):
            break
        # A batch call the victim sent before dying may still claim for it after the kill: such
        # a job shows as the victim's for a whole lease (3 s) before a reaper takes it back, so
        # polling every 0.2 s sees every job the dead worker held, with no fixed wait.
        stranded |= _held_by(admin, "victim")
        time.sleep(0.2)
    views = _views(admin, inputs)
    assert all(v["status"] == "completed" for v in views.values())
    for job_id, data in inputs.items():  # one result each, the right one
        view = views[job_id]
        assert [a["name"] for a in view["artifacts"]] == ["result"]
        assert admin.get(f"/jobs/{job_id}/download").content == data
        if view["attempts"] > 1:
            assert job_id in stranded and view["attempts"] == 2 and view["worker_id"] == "rescuer"
    assert stranded  # the victim died holding work
