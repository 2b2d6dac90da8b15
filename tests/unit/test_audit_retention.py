"""The audit log (who did what, when, from where) and automatic retention of finished jobs."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from coordinator import audit, jobs
from coordinator.cli import main
from coordinator.extensions import db
from coordinator.models import Job
from coordinator.reaper import Reaper
from coordinator.retention import RetentionPolicy, parse_by_kind
from coordinator.state import get_state
from coordinator.validation import NewJob


@pytest.fixture
def cli(app, monkeypatch):
    """Run the coordinator CLI on the app's data directory."""
    for name in ("DATABASE_URL", "WORKER_API_KEY", "ADMIN_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(main, [args[0], "--data-dir", app.config["DATA_DIR"], *args[1:]],
                                  catch_exceptions=False)
    return invoke


def test_every_client_action_and_key_change_is_audited(app, cli):
    key = cli("create-key", "--kind", "client", "--name", "alice").stdout.strip().splitlines()[0]
    client = app.test_client()
    headers = {"X-API-Key": key, "X-Forwarded-For": "203.0.113.9"}
    job_id = client.post("/jobs?kind=echo&filename=talk.mp4", data=b"abc",
                         headers={**headers, "Content-Type": "application/octet-stream"}).get_json()["job_id"]
    assert client.delete(f"/jobs/{job_id}", headers=headers).status_code == 200
    assert client.post(f"/jobs/{job_id}/retry", headers=headers).status_code == 200
    with app.app_context():  # complete it so it can be downloaded
        from coordinator.auth import create_key
        from shared.protocol import KeyKind
        worker = create_key(db.session, KeyKind.WORKER, "w")[1]
        db.session.remove()
    wh = {"X-API-Key": worker, "X-Worker-Session": "s"}
    token = client.post(f"/jobs/{job_id}/claim", json={"kinds": ["echo"]}, headers=wh).get_json()["lease_token"]
    client.post(f"/jobs/{job_id}/upload-result", data=b"out", headers={**wh, "X-Lease-Token": token})
    assert client.get(f"/jobs/{job_id}/download", headers=headers).data == b"out"
    assert client.get(f"/jobs/{job_id}/download", headers={**headers, "Range": "bytes=1-"}).status_code == 206
    key_id = cli("list-keys").stdout.split()[0]
    cli("revoke-key", "--id", key_id)

    with app.app_context():
        events = list(audit.events(db.engine))
    # (the worker key above was made in-process, not through the CLI or API: not an event)
    assert [e["action"] for e in events] == ["key_created", "submit", "cancel", "retry", "download",
                                             "key_revoked"]
    assert events[0]["remote"] == "cli" and "alice" in events[0]["detail"]
    mine = [e for e in events if e["key_name"] == "alice"]
    assert [e["action"] for e in mine] == ["submit", "cancel", "retry", "download"]
    assert all(e["job_id"] == job_id and "203.0.113.9" in e["remote"] for e in mine)
    assert "talk.mp4" in mine[0]["detail"] and "result" in mine[3]["detail"]

    shown = cli("audit", "--key", "alice", "--since", "1h").stdout.strip().splitlines()
    assert len(shown) == 4 and "\tsubmit\t" in shown[0] and job_id in shown[0]
    as_json = [json.loads(line) for line in cli("audit", "--job", job_id, "--json").stdout.splitlines()]
    assert {e["action"] for e in as_json} == {"submit", "cancel", "retry", "download"}
    assert cli("audit", "--since", "2999-01-01").stdout == ""
    assert "key_revoked" in cli("audit", "--since", "2020-01-01").stdout
    bad = CliRunner().invoke(main, ["audit", "--data-dir", app.config["DATA_DIR"], "--since", "soon"])
    assert bad.exit_code != 0 and "ISO date" in bad.output


def _finished(session, kind: str, status: str, days_ago: float, storage) -> str:
    """A job of `kind` that ended `status` `days_ago` days ago, with an input file."""
    import io
    job_id = jobs.new_job_id()
    stored = storage.save_input(job_id, io.BytesIO(b"input"), 100)
    job, _ = jobs.submit(session, NewJob(kind=kind), owner_key_id=1, job_id=job_id,
                         input_size=stored.size, input_sha256=stored.sha256)
    row = session.get(Job, job.id)
    row.status = status
    row.finished_at = time.time() - days_ago * 86400 if status in ("completed", "failed", "cancelled") else None
    row.created_at = time.time() - days_ago * 86400
    session.commit()
    return job.id


def test_retention_removes_only_old_finished_jobs_per_kind(app_factory):
    app = app_factory(RETENTION_DAYS=30, RETENTION_DAYS_BY_KIND="echo=1,transcribe=0")
    storage = get_state(app).storage
    with app.app_context():
        s = db.session
        old_dub = _finished(s, "dub", "completed", 40, storage)
        young_dub = _finished(s, "dub", "failed", 10, storage)
        old_echo = _finished(s, "echo", "cancelled", 2, storage)
        young_echo = _finished(s, "echo", "completed", 0.5, storage)
        kept_kind = _finished(s, "transcribe", "completed", 400, storage)  # 0: kept forever
        running = _finished(s, "dub", "running", 400, storage)
        queued = _finished(s, "echo", "queued", 400, storage)
        db.session.remove()
    Reaper(app, 1.0).sweep_once()
    with app.app_context():
        left = set(db.session.scalars(db.select(Job.id)))
        db.session.remove()
    assert left == {young_dub, young_echo, kept_kind, running, queued}
    for gone in (old_dub, old_echo):
        assert not (storage.root / "inputs" / gone).exists()
    for kept in left:
        assert (storage.root / "inputs" / kept / "input").exists()


def test_retention_settings_are_checked():
    assert parse_by_kind("echo=1, dub=30") == {"echo": 1.0, "dub": 30.0}
    for bad in ("movie=3", "echo", "echo=-1", "echo=x"):
        with pytest.raises(ValueError):
            parse_by_kind(bad)
    assert not RetentionPolicy.from_config({}).active
    assert RetentionPolicy.from_config({"RETENTION_DAYS": 7}).active
