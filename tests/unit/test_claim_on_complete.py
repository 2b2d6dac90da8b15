"""Claim-on-complete inside the completing upload's transaction: a busy worker's job costs one
write transaction, and a claim that fails there never costs the upload (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

SESSION = "sess-next"


@pytest.fixture
def backend(keyed_backend):
    """(app, client key, worker key) on each database."""
    return keyed_backend


def _headers(key: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": key, "X-Worker-Session": SESSION}
    return {**headers, "X-Lease-Token": token} if token else headers


def _submit(client, key: str, data: bytes) -> str:
    reply = client.post("/jobs?kind=echo", data=data,
                        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def _claim(client, key: str) -> dict:
    info = {"worker_id": "w1", "session_id": SESSION, "kinds": ["echo"]}
    reply = client.post("/jobs/claim", json={"worker": info}, headers=_headers(key))
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


def _complete(client, key: str, job: dict):
    return client.post(f"/jobs/{job['job_id']}/upload-result?name=result&final=1&next=1", data=b"out",
                       headers={**_headers(key, job["lease_token"]), "Content-Type": "application/octet-stream"})


def _status(client, key: str, job_id: str) -> str:
    return client.get(f"/jobs/{job_id}", headers={"X-API-Key": key}).get_json()["status"]


def test_the_next_job_is_claimed_in_the_completing_transaction(app_factory):
    """SQLite: the claiming UPDATE runs between the upload's BEGIN IMMEDIATE and its COMMIT,
    and the request takes the write lock once."""
    from sqlalchemy import event

    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    app = app_factory()
    statements: list[str] = []
    with app.app_context():
        ckey = create_key(db.session, KeyKind.CLIENT, "c")[1]
        wkey = create_key(db.session, KeyKind.WORKER, "w")[1]
        db.session.remove()
        event.listen(db.engine, "connect", lambda conn, _: conn.set_trace_callback(statements.append))
        db.engine.dispose()  # new connections, traced
    client = app.test_client()
    _submit(client, ckey, b"one")
    second = _submit(client, ckey, b"two")
    job = _claim(client, wkey)
    statements.clear()
    reply = _complete(client, wkey, job)
    assert reply.status_code == 200 and reply.get_json()["next"]["job_id"] == second
    writes = [s.split()[0] if not s.startswith("UPDATE jobs SET status='running'") else "CLAIM"
              for s in statements if s.startswith(("BEGIN", "COMMIT", "UPDATE jobs SET status='running'"))]
    assert writes == ["BEGIN", "CLAIM", "COMMIT"], statements


def test_a_completing_upload_hands_over_the_next_job(backend):
    app, ckey, wkey = backend
    client = app.test_client()
    first, second = _submit(client, ckey, b"one"), _submit(client, ckey, b"two")
    job = _claim(client, wkey)
    assert job["job_id"] == first
    nxt = _complete(client, wkey, job).get_json()["next"]
    assert nxt["job_id"] == second and nxt["attempt"] == 1
    assert _status(client, ckey, first) == "completed" and _status(client, ckey, second) == "running"
    last = _complete(client, wkey, nxt)
    assert last.status_code == 200 and last.get_json()["next"] is None
    assert _status(client, ckey, second) == "completed"


def test_a_failing_next_claim_still_completes_the_upload(backend, monkeypatch):
    """The claim fails inside the upload's transaction (PostgreSQL aborts a transaction on any
    error: a savepoint undoes the claim alone): the upload commits, no job is handed over, and
    the next claim works."""
    from coordinator import statements
    from coordinator.models import Job
    app, ckey, wkey = backend
    client = app.test_client()
    first, second = _submit(client, ckey, b"one"), _submit(client, ckey, b"two")
    job = _claim(client, wkey)
    broken = (sa.update(Job.__table__).where(sa.text("no_such_column = 1")).values(status="running")
              .returning(Job.__table__.c.id))
    monkeypatch.setattr(statements, "claim_next", lambda postgres: broken)
    reply = _complete(client, wkey, job)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["status"] == "completed" and reply.get_json()["next"] is None
    assert _status(client, ckey, first) == "completed" and _status(client, ckey, second) == "queued"
    monkeypatch.undo()
    assert _claim(client, wkey)["job_id"] == second


def test_a_repeated_completing_upload_hands_over_the_same_job_then_claims_afresh(backend):
    """The completion committed earlier (its reply was lost): the repeat answers the same result
    and, asked with next=1, hands over the job the lost reply carried, with the same lease (no
    second claim). Once that job is no longer held under that lease, a repeat claims the worker's
    next job in a transaction of its own."""
    app, ckey, wkey = backend
    client = app.test_client()
    first, second, third = (_submit(client, ckey, data) for data in (b"one", b"two", b"three"))
    job = _claim(client, wkey)
    lost = _complete(client, wkey, job).get_json()["next"]
    assert lost["job_id"] == second
    again = _complete(client, wkey, job)
    assert again.status_code == 200 and again.get_json()["repeated"] is True
    assert again.get_json()["next"] == lost
    assert _status(client, ckey, second) == "running" and _status(client, ckey, third) == "queued"
    assert _complete(client, wkey, lost).get_json()["next"]["job_id"] == third
    fourth = _submit(client, ckey, b"four")
    late = _complete(client, wkey, job)  # second is completed: nothing to hand over again
    assert late.get_json()["repeated"] is True and late.get_json()["next"]["job_id"] == fourth
    assert [_status(client, ckey, j) for j in (first, second, third, fourth)] == \
        ["completed", "completed", "running", "running"]
