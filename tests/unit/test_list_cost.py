"""GET /jobs costs O(1) queries per page, whatever the page size and the mix of statuses."""
from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import event

from coordinator.extensions import db
from coordinator.state import get_state


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@contextlib.contextmanager
def count_queries(app):
    """Count the SQL statements the app's engine executes inside the block."""
    seen: list[str] = []
    with app.app_context():
        engine = db.engine

    def before(conn, cursor, statement, *args):
        seen.append(statement)
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _fill(client, keys, count: int) -> None:
    """`count` jobs: a third claimed (running), some with artifacts, the rest queued."""
    for i in range(count):
        reply = client.post(f"/jobs?kind={'echo' if i % 2 else 'dub'}&priority={i % 3}", data=b"x",
                            headers={**_h(keys["client"]), "Content-Type": "application/octet-stream"})
        assert reply.status_code == 202
    worker = {"X-API-Key": keys["worker"], "X-Worker-Session": "s1"}
    for _ in range(count // 3):
        claimed = client.post("/jobs/claim", json={"worker": {"worker_id": "w", "kinds": ["echo"]}},
                              headers=worker).get_json()
        token = {**worker, "X-Lease-Token": claimed["lease_token"]}
        client.post(f"/jobs/{claimed['job_id']}/upload-result?name=partial&final=0", data=b"p",
                    headers=token)


@pytest.fixture
def keys(make_key):
    return {"client": make_key("client"), "worker": make_key("worker")}


def test_list_page_costs_constant_queries(app, client, keys):
    _fill(client, keys, 30)
    costs = {}
    for limit in (5, 30):
        get_state(app).workers.forget_online()  # both pages read the workers (no 1 s copy)
        with count_queries(app) as seen:
            page = client.get(f"/jobs?limit={limit}", headers=_h(keys["client"])).get_json()
        assert len(page["jobs"]) == limit
        costs[limit] = len(seen)
    assert costs[5] == costs[30] and costs[30] <= 8, costs
    views = {v["job_id"]: v for v in page["jobs"]}
    queued = sorted((v for v in views.values() if v["status"] == "queued"),
                    key=lambda v: v["queue_position"])
    assert [v["queue_position"] for v in queued] == list(range(1, len(queued) + 1))
    for view in queued:  # the page's positions agree with each job's own view
        single = client.get(f"/jobs/{view['job_id']}", headers=_h(keys["client"])).get_json()
        assert single["queue_position"] == view["queue_position"]
        assert single["waiting_for"] == view["waiting_for"]
    running = [v for v in views.values() if v["status"] == "running"]
    assert running and all([a["name"] for a in v["artifacts"]] == ["partial"] for v in running)
    dub = next(v for v in queued if v["kind"] == "dub")
    assert "no online worker" in dub["waiting_for"]
    echo = next(v for v in queued if v["kind"] == "echo")
    assert echo["waiting_for"] is None  # the worker that claimed above advertised echo


def test_list_limit_is_clamped(app_factory, make_key):
    app = app_factory(MAX_LIST_LIMIT=7)
    from coordinator.auth import create_key
    from shared.protocol import KeyKind
    with app.app_context():
        key = create_key(db.session, KeyKind.CLIENT, "c")[1]
        db.session.remove()
    client = app.test_client()
    for _ in range(9):
        client.post("/jobs?kind=echo", data=b"x",
                    headers={**_h(key), "Content-Type": "application/octet-stream"})
    page = client.get("/jobs?limit=500", headers=_h(key)).get_json()
    assert page["limit"] == 7 and len(page["jobs"]) == 7 and page["total"] == 9
    assert client.get("/jobs?limit=0", headers=_h(key)).status_code == 422


def test_one_key_cannot_hold_more_than_its_requests_in_flight(app_factory):
    """Past CLIENT_MAX_INFLIGHT requests in progress a key gets JSON 429 + Retry-After at once;
    other keys (and worker keys) are unaffected, and the slot comes back when a request ends."""
    app = app_factory(CLIENT_MAX_INFLIGHT=2)
    from coordinator.auth import create_key
    from coordinator.state import get_state
    from shared.protocol import KeyKind
    with app.app_context():
        busy_row, busy = create_key(db.session, KeyKind.CLIENT, "busy")
        other = create_key(db.session, KeyKind.CLIENT, "other")[1]
        worker = create_key(db.session, KeyKind.WORKER, "w")[1]
        busy_id = busy_row.id
        db.session.remove()
    client, gate = app.test_client(), get_state(app).gate
    gate.enter(busy_id)
    gate.enter(busy_id)  # two requests of `busy` in progress
    refused = client.get("/jobs", headers=_h(busy))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.get_json()["error"] == "too_many_requests"
    assert client.get("/jobs", headers=_h(other)).status_code == 200
    assert client.get("/jobs/next?kinds=echo", headers=_h(worker)).status_code == 204
    gate.leave(busy_id)
    assert client.get("/jobs", headers=_h(busy)).status_code == 200
    assert gate.inflight(busy_id) == 1  # the request gave its slot back
    gate.leave(busy_id)
    assert gate.inflight(busy_id) == 0
