"""Issue 6, data loss: racing and repeated uploads, cancel vs. completion, rejected uploads,
lost replies, unstarted claims and files left by a crash — against a real waitress coordinator
and real worker processes."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api, start_worker
from tests.integration.proxy import CuttingProxy

pytestmark = pytest.mark.integration

WORKER = {"worker_id": "hostile", "session_id": "s-hostile", "kinds": ["echo"]}


def _claim(worker_api: Api, job_id: str) -> str:
    """Claim one job by id; returns its lease token."""
    resp = worker_api.post(f"/jobs/{job_id}/claim", json=WORKER)
    assert resp.status_code == 200, resp.text
    return resp.json()["lease_token"]


def _upload(worker_api: Api, job_id: str, token: str, data: bytes, name: str = "result",
            final: bool = True, **params) -> requests.Response:
    return worker_api.post(f"/jobs/{job_id}/upload-result", data=data,
                           params={"name": name, "final": int(final), **params},
                           headers={"X-Lease-Token": token, "Content-Type": "application/octet-stream"})


def _stored_files(data_dir: Path) -> set[str]:
    """Every file under inputs/ and artifacts/, relative to the data dir."""
    return {p.relative_to(data_dir).as_posix() for sub in ("inputs", "artifacts")
            for p in (data_dir / sub).rglob("*") if p.is_file()}


def _referenced_files(data_dir: Path) -> set[str]:
    """The files the database points to: inputs of jobs with an uploaded input, artifact paths."""
    with sqlite3.connect(data_dir / "coordinator.db") as conn:
        inputs = {f"inputs/{row[0]}/input" for row in
                  conn.execute("SELECT id FROM jobs WHERE input_sha256 IS NOT NULL")}
        artifacts = {row[0] for row in conn.execute("SELECT path FROM artifacts")}
    return inputs | artifacts


def test_racing_and_repeated_uploads_never_lose_a_result(coordinator, admin, worker_api):
    """30 jobs × a double final upload, and 30 × a re-upload racing complete."""
    payload = {}
    for i in range(60):
        data = os.urandom(256 * 1024 + i)
        payload[admin.submit_bytes(data)["job_id"]] = data
    ids = list(payload)

    def double_final(job_id: str) -> list[int]:
        token, data = _claim(worker_api, job_id), payload[job_id]
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: _upload(worker_api, job_id, token, data), range(2)))
        return [r.status_code for r in replies]

    def reupload_vs_complete(job_id: str) -> list[int]:
        token, data = _claim(worker_api, job_id), payload[job_id]
        assert _upload(worker_api, job_id, token, data[::-1], final=False).status_code == 200
        complete = lambda: worker_api.post(f"/jobs/{job_id}/complete", json={"main_artifact": "result"},
                                           headers={"X-Lease-Token": token})
        again = lambda: _upload(worker_api, job_id, token, data, final=False)
        with ThreadPoolExecutor(2) as pool:
            replies = [f.result() for f in (pool.submit(again), pool.submit(complete))]
        return [r.status_code for r in replies]

    with ThreadPoolExecutor(6) as pool:
        doubles = list(pool.map(double_final, ids[:30]))
        races = list(pool.map(reupload_vs_complete, ids[30:]))
    assert all(codes == [200, 200] for codes in doubles), doubles  # a repeat is idempotent
    assert all(codes[1] == 200 and codes[0] in (200, 409) for codes in races), races
    for job_id in ids:
        view = admin.get(f"/jobs/{job_id}").json()
        assert view["status"] == "completed", view
        listed = {a["name"]: a["sha256"] for a in view["artifacts"]}["result"]
        body = admin.get(f"/jobs/{job_id}/download")
        assert body.status_code == 200, body.text
        assert hashlib.sha256(body.content).hexdigest() == listed
        if job_id in ids[:30]:
            assert body.content == payload[job_id]
        else:
            assert body.content in (payload[job_id], payload[job_id][::-1])
    assert _stored_files(coordinator.data_dir) == _referenced_files(coordinator.data_dir)


def test_stored_files_match_rows_after_races(coordinator, admin, worker_api):
    """No upload, rejected, repeated or replaced, leaves a file no row points to."""
    job_id = admin.submit_bytes(b"input bytes")["job_id"]
    token = _claim(worker_api, job_id)
    bad = _upload(worker_api, job_id, token, b"x" * 1000, detected_language="klingon")
    assert bad.status_code == 422 and bad.json()["error"] == "validation_failed"
    mismatch = worker_api.post(f"/jobs/{job_id}/upload-result", data=b"abc", params={"final": 0},
                               headers={"X-Lease-Token": token, "X-Content-SHA256": "0" * 64})
    assert mismatch.status_code == 400
    assert _upload(worker_api, job_id, token, b"first", name="partial", final=False).status_code == 200
    assert _upload(worker_api, job_id, token, b"second", name="partial", final=False).status_code == 200
    assert _upload(worker_api, job_id, token, b"second", name="partial", final=False).json()["repeated"]
    assert _upload(worker_api, job_id, token, b"done").status_code == 200
    late = _upload(worker_api, job_id, "not-the-token", b"late", final=False)
    assert late.status_code == 409 and late.json()["error"] == "lease_lost"
    # An operator can follow the job from the log alone: the claim, the refusal and its reason,
    # the completion.
    log = (coordinator.data_dir / "coordinator.log").read_text()
    assert f"job {job_id} claimed by hostile" in log
    assert f"refused POST /jobs/{job_id}/upload-result (worker session" in log and "lease_lost" in log
    assert f"job {job_id}: completed by hostile with result" in log
    assert _stored_files(coordinator.data_dir) == _referenced_files(coordinator.data_dir)
    assert admin.get(f"/jobs/{job_id}/artifacts/partial").content == b"second"


def test_cancel_requested_job_ends_cancelled_not_completed(coordinator, admin, worker_api):
    job_id = admin.submit_bytes(b"to be cancelled")["job_id"]
    token = _claim(worker_api, job_id)
    assert admin.request("DELETE", f"/jobs/{job_id}").json()["cancel_requested"] is True
    reply = _upload(worker_api, job_id, token, b"finished anyway")
    assert reply.status_code == 409
    assert reply.json()["error"] == "cancelled" and reply.json()["job_status"] == "cancelled"
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "cancelled" and view["main_artifact"] is None
    assert admin.get(f"/jobs/{job_id}/download").status_code == 409
    assert _stored_files(coordinator.data_dir) == _referenced_files(coordinator.data_dir)


def test_files_of_a_crash_are_swept_at_restart(coordinator_factory):
    """SIGKILL the coordinator while it writes an upload; after a restart only files rows point
    to remain (plus nothing younger than the grace period, here 0 s)."""
    coord = coordinator_factory(env={"ORPHAN_GRACE_SECONDS": "0"}).start()
    admin, worker_api = Api(coord.url, ADMIN_KEY), Api(coord.url, WORKER_KEY)
    kept = admin.submit_bytes(b"a job that stays")["job_id"]
    token = _claim(worker_api, kept)
    assert _upload(worker_api, kept, token, b"a result that stays").status_code == 200
    big = os.urandom(48 * 1024 * 1024)
    caught = _kill_while_writing(coord, admin, big)
    assert caught, "the coordinator never had an upload temp file on disk"
    # Leftovers a crash can also leave: an input whose row never committed, a published
    # artifact whose row never committed, a folder of a job that no longer exists.
    ghost = "f" * 32
    (coord.data_dir / "inputs" / ghost).mkdir(parents=True)
    (coord.data_dir / "inputs" / ghost / "input").write_bytes(b"orphan input")
    run_dir = next((coord.data_dir / "artifacts" / kept).iterdir())
    (run_dir / "result~0123456789abcdef").write_bytes(b"renamed, row never committed")
    (coord.data_dir / "artifacts" / ghost / "a1").mkdir(parents=True)
    (coord.data_dir / "artifacts" / ghost / "a1" / "x").write_bytes(b"orphan artifact")
    assert _stored_files(coord.data_dir) != _referenced_files(coord.data_dir)
    coord.start()
    assert _stored_files(coord.data_dir) == _referenced_files(coord.data_dir)
    assert admin.get(f"/jobs/{kept}/download").content == b"a result that stays"
    assert admin.get(f"/jobs/{kept}").json()["status"] == "completed"


def _kill_while_writing(coord, admin: Api, data: bytes, tries: int = 5) -> bool:
    """Submit `data` and SIGKILL the server the moment an upload temp file appears."""
    for _ in range(tries):
        thread = threading.Thread(target=_submit_quietly, args=(coord.url, data), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and thread.is_alive():
            if any((coord.data_dir / "inputs").rglob(".upload-*")):
                coord.kill()
                thread.join(10)
                return True
            time.sleep(0.002)
        thread.join(10)
    coord.kill()
    return False


def _submit_quietly(url: str, data: bytes) -> None:
    try:
        Api(url, ADMIN_KEY).post("/jobs", params={"kind": "echo"}, data=data, timeout=30,
                                 headers={"Content-Type": "application/octet-stream"})
    except requests.RequestException:
        pass


def test_lost_claim_replies_do_not_use_attempts(coordinator_factory, workers, tmp_path):
    """Every claim reply is cut until five were lost; the job never fails for it, then runs once."""
    # Fetched inputs: only the download confirms a claim (an inline input's claim counts at once).
    coord = coordinator_factory(env={"START_LEASE_SECONDS": "1", "REAPER_INTERVAL": "0.2",
                                     "INLINE_INPUT_KB": "0"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    cut_claims = 5
    proxy = CuttingProxy(coord.url, lambda method, path, q: path == "/jobs/claim"
                         and len(proxy.cuts) < cut_claims).start()
    try:
        data = os.urandom(10_000)
        job_id = admin.submit_bytes(data)["job_id"]
        workers.append(start_worker(proxy.url, tmp_path / "w", "unlucky", "--kinds", "echo",
                                    "--claim-wait", "1", "--poll-interval", "0.2"))
        view = admin.wait_status(job_id, {"completed", "failed"}, timeout=120)
    finally:
        proxy.stop()
    assert len(proxy.cuts) == cut_claims
    assert view["status"] == "completed" and view["attempts"] == 1, view
    assert hashlib.sha256(admin.get(f"/jobs/{job_id}/download").content).hexdigest() == \
        hashlib.sha256(data).hexdigest()
    log = (coord.data_dir / "coordinator.log").read_text()
    assert "never started its claim" in log or "unstarted" in log


def test_lost_final_upload_reply_is_reported_as_completed(coordinator_factory, workers, tmp_path):
    """The final upload commits but its reply is lost: the worker's retry gets the same result
    and the worker logs the job as completed, not as a lost lease."""
    coord = coordinator_factory().start()
    admin = Api(coord.url, ADMIN_KEY)
    proxy = CuttingProxy(coord.url, lambda method, path, q: path.endswith("/upload-result")
                         and "final=1" in q and not proxy.cuts).start()
    try:
        data = os.urandom(50_000)
        job_id = admin.submit_bytes(data)["job_id"]
        workers.append(start_worker(proxy.url, tmp_path / "w", "lossy", "--kinds", "echo", "--once"))
        assert workers[-1].wait(60) == 0
    finally:
        proxy.stop()
    assert len(proxy.cuts) == 1
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "completed" and view["attempts"] == 1
    assert admin.get(f"/jobs/{job_id}/download").content == data
    log = (tmp_path / "w" / "lossy.log").read_text()
    assert f"job {job_id}: completed" in log and "lease lost" not in log, log[-3000:]
    assert "lease_lost" not in log
    coord_log = (coord.data_dir / "coordinator.log").read_text()
    assert f"job {job_id}: completed by lossy" in coord_log


def test_lost_completion_reply_hands_the_next_job_over_again(coordinator_factory, workers, tmp_path):
    """The completing upload that also claimed the worker's next job loses its reply: the
    worker's retry is handed that same job, which runs at once on its first attempt instead of
    waiting out its lease."""
    coord = coordinator_factory(env={"START_LEASE_SECONDS": "60"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    proxy = CuttingProxy(coord.url, lambda method, path, q: path.endswith("/upload-result")
                         and "next=1" in q and not proxy.cuts).start()
    try:
        first, second = (admin.submit_bytes(data)["job_id"] for data in (b"first job", b"second job"))
        workers.append(start_worker(proxy.url, tmp_path / "w", "lossy", "--kinds", "echo", "--burst"))
        assert workers[-1].wait(40) == 0  # well within the handed job's 60 s lease
    finally:
        proxy.stop()
    assert len(proxy.cuts) == 1
    views = [admin.get(f"/jobs/{job_id}").json() for job_id in (first, second)]
    assert [(v["status"], v["attempts"]) for v in views] == [("completed", 1), ("completed", 1)]
    assert admin.get(f"/jobs/{second}/download").content == b"second job"
    coord_log = (coord.data_dir / "coordinator.log").read_text()
    assert f"job {first}: repeated completion hands over its next job {second} again" in coord_log
    assert "reaper: job" not in coord_log


def test_file_names_with_control_characters_are_safe(coordinator, admin, worker_api):
    """A newline in a submitted name is dropped at submit; an old row with one still downloads."""
    job_id = admin.submit_bytes(b"named badly", filename="evil\r\nX-Injected: 1\n.mp4")["job_id"]
    assert admin.get(f"/jobs/{job_id}").json()["input_name"] == "evilX-Injected: 1.mp4"
    with sqlite3.connect(coordinator.data_dir / "coordinator.db") as conn:
        conn.execute("UPDATE jobs SET input_name = ? WHERE id = ?", ("old\nrow \"ñ\".mp4", job_id))
    token = _claim(worker_api, job_id)
    resp = worker_api.get(f"/jobs/{job_id}/download-input", headers={"X-Lease-Token": token})
    assert resp.status_code == 200 and resp.content == b"named badly"
    disposition = resp.headers["Content-Disposition"]
    assert "\n" not in disposition and "X-Injected" not in resp.headers
    assert disposition == 'attachment; filename="oldrow _ñ_.mp4"'.replace("ñ", "_") + \
        "; filename*=UTF-8''oldrow%20%22%C3%B1%22.mp4"
