"""The lean request path: key cache (revocation honoured), health cache, one-row job views with
counted queue positions, lease checks, and small inputs inline in the claim reply."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from shared.protocol import ClaimedJob

SESSION = "sess-hot"


def h(key: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": key, "X-Worker-Session": SESSION}
    if token:
        headers["X-Lease-Token"] = token
    return headers


def submit(client, key: str, data: bytes = b"tiny", query: str = "kind=echo") -> str:
    reply = client.post(f"/jobs?{query}", data=data,
                        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def claim(client, key: str, kinds=("echo",)) -> dict | None:
    info = {"worker_id": "w1", "session_id": SESSION, "kinds": list(kinds)}
    reply = client.post("/jobs/claim", json={"worker": info}, headers=h(key))
    assert reply.status_code in (200, 204), reply.get_json()
    return reply.get_json() if reply.status_code == 200 else None


# --- key cache ------------------------------------------------------------------------------

def test_key_cache_expires_and_forgets():
    from coordinator.auth import KeyCache, Principal
    from shared.protocol import KeyKind
    now = [100.0]
    cache = KeyCache(2.0, clock=lambda: now[0])
    who = Principal(key_id=7, kind=KeyKind.CLIENT, name="c")
    cache.put("d1", who)
    assert cache.get("d1") == who and cache.get("d2") is None
    now[0] += 2.5
    assert cache.get("d1") is None  # looked up again after KEY_CACHE_SECONDS
    cache.put("d1", who)
    cache.forget(7)
    assert cache.get("d1") is None
    KeyCache(0).put("d1", who)  # 0: no caching at all


def test_active_key_is_served_from_the_cache(app, client, make_key):
    from sqlalchemy import event
    from coordinator.extensions import db
    key = make_key("client")
    assert client.get("/jobs", headers=h(key)).status_code == 200
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    listener = lambda conn, cursor, sql, *rest: statements.append(sql)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get("/queue/info", headers=h(key)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements and not any("api_keys" in sql for sql in statements)


def test_revocation_in_this_process_is_immediate(app, client, make_key):
    from coordinator.auth import hash_key, revoke_key
    from coordinator.extensions import db
    from coordinator.models import ApiKey
    key = make_key("client")
    assert client.get("/jobs", headers=h(key)).status_code == 200  # now cached
    with app.app_context():
        key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.key_hash == hash_key(key)))
        assert revoke_key(db.session, key_id)
    assert client.get("/jobs", headers=h(key)).status_code == 401


def test_revocation_elsewhere_is_honoured_after_key_cache_seconds(app_factory, make_key):
    """A key revoked by another process (the CLI, another replica) stops working once its cache
    entry is older than KEY_CACHE_SECONDS."""
    app = app_factory(KEY_CACHE_SECONDS=5.0)
    client = app.test_client()
    from coordinator.auth import create_key, hash_key, key_cache
    from coordinator.extensions import db
    from coordinator.models import ApiKey
    from shared.protocol import KeyKind
    with app.app_context():
        _, key = create_key(db.session, KeyKind.CLIENT, "elsewhere")
    assert client.get("/jobs", headers=h(key)).status_code == 200
    with app.app_context():  # revoke behind the cache's back, as another process would
        db.session.execute(db.update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=1.0))
        db.session.commit()
    assert client.get("/jobs", headers=h(key)).status_code == 200  # still within the TTL
    cache = key_cache(app)
    cache._clock = lambda: 1e12  # the TTL has passed
    assert client.get("/jobs", headers=h(key)).status_code == 401


def test_unknown_keys_are_not_cached(app, client):
    from coordinator.auth import key_cache
    for n in range(5):
        assert client.get("/jobs", headers=h(f"dfc_junk{n}")).status_code == 401
    assert key_cache(app)._found == {}


def test_key_cache_setting_is_validated(app_factory):
    with pytest.raises(ValueError, match="KEY_CACHE_SECONDS"):
        app_factory(KEY_CACHE_SECONDS=-1)
    with pytest.raises(ValueError, match="INLINE_INPUT_KB"):
        app_factory(INLINE_INPUT_KB=4096)


# --- health cache ---------------------------------------------------------------------------

def test_health_reuses_a_passing_check_but_rechecks_a_failing_one(app, client, monkeypatch):
    from coordinator.state import get_state
    probes = []
    storage = get_state(app).storage
    real = storage.probe
    monkeypatch.setattr(storage, "probe", lambda: probes.append(1) or real())
    assert client.get("/health").status_code == 200
    assert client.get("/health").status_code == 200
    assert len(probes) == 1  # within HEALTH_CACHE_SECONDS

    app.extensions.pop("dubfleet_health_cache")

    def broken() -> None:
        probes.append(1)
        raise OSError("disk gone")
    monkeypatch.setattr(storage, "probe", broken)
    assert client.get("/health").status_code == 503
    assert client.get("/health").status_code == 503
    assert len(probes) == 3


# --- job view -------------------------------------------------------------------------------

def test_single_job_position_matches_the_windowed_ranking(app, client, make_key):
    from coordinator import queries
    from coordinator.extensions import db
    from coordinator.models import Job
    key = make_key("client")
    ids = [submit(client, key, query=f"kind=echo&priority={p}") for p in (0, 5, 0, 5, 0)]
    with app.app_context():
        rows = [db.session.get(Job, i) for i in ids]
        ranked = queries.queue_positions(db.session, rows)  # the windowed query (several jobs)
        for row in rows:
            assert queries.queue_positions(db.session, [row]) == {row.id: ranked[row.id]}
    for job_id in ids:
        assert client.get(f"/jobs/{job_id}", headers=h(key)).get_json()["queue_position"] == ranked[job_id]


def test_job_view_is_404_for_other_clients_and_bad_ids(app, client, make_key):
    mine, theirs = make_key("client"), make_key("client")
    job_id = submit(client, mine)
    assert client.get(f"/jobs/{job_id}", headers=h(theirs)).status_code == 404
    assert client.get("/jobs/not-an-id", headers=h(mine)).status_code == 404
    assert client.get(f"/jobs/{'0' * 32}", headers=h(mine)).status_code == 404
    view = client.get(f"/jobs/{job_id}", headers=h(mine)).get_json()
    assert view["job_id"] == job_id and view["status"] == "queued" and view["queue_position"] == 1


# --- inline input ---------------------------------------------------------------------------

def test_small_input_travels_inline_in_the_claim(app, client, make_key):
    ckey, wkey = make_key("client"), make_key("worker")
    job_id = submit(client, ckey, b"inline me")
    claimed = claim(client, wkey)
    assert claimed["job_id"] == job_id
    assert base64.b64decode(claimed["input_inline"]) == b"inline me"
    assert claimed["input_sha256"] == hashlib.sha256(b"inline me").hexdigest()
    # the download route still answers for the lease holder
    got = client.get(f"/jobs/{job_id}/download-input", headers=h(wkey, claimed["lease_token"]))
    assert got.status_code == 200 and got.data == b"inline me"


def _confirmed_at(app, job_id: str):
    from coordinator.extensions import db
    from coordinator.models import Job
    with app.app_context():
        return db.session.get(Job, job_id).confirmed_at


def test_an_inline_claim_counts_as_started_a_fetched_one_waits_for_its_download(app_factory):
    """No download call confirms an inline input's claim, so the claim itself does: a job that
    crashes its worker still uses up attempts (MAX_ATTEMPTS) instead of being requeued free."""
    app = app_factory(INLINE_INPUT_KB=1)
    client = app.test_client()
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        ckey = create_key(db.session, KeyKind.CLIENT, "c")[1]
        wkey = create_key(db.session, KeyKind.WORKER, "w")[1]
    small = submit(client, ckey, b"small")
    assert claim(client, wkey)["input_inline"] is not None
    assert _confirmed_at(app, small) is not None
    large = submit(client, ckey, b"x" * 2048)
    claimed = claim(client, wkey)
    assert claimed["job_id"] == large and claimed["input_inline"] is None
    assert _confirmed_at(app, large) is None


def test_large_input_and_disabled_setting_are_not_inline(app_factory, make_key):
    app = app_factory(INLINE_INPUT_KB=1)
    client = app.test_client()
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        ckey = create_key(db.session, KeyKind.CLIENT, "c")[1]
        wkey = create_key(db.session, KeyKind.WORKER, "w")[1]
    submit(client, ckey, b"x" * 2048)
    assert claim(client, wkey)["input_inline"] is None
    off = app_factory(INLINE_INPUT_KB=0)
    with off.app_context():
        ckey = create_key(db.session, KeyKind.CLIENT, "c")[1]
        wkey = create_key(db.session, KeyKind.WORKER, "w")[1]
    submit(off.test_client(), ckey, b"tiny")
    assert claim(off.test_client(), wkey)["input_inline"] is None


def _claimed(**fields) -> ClaimedJob:
    base = {"job_id": "a" * 32, "kind": "echo", "lease_token": "t", "lease_expires_at": 0.0,
            "attempt": 1, "max_attempts": 3, "heartbeat_interval": 30.0}
    return ClaimedJob(**{**base, **fields})


def test_worker_writes_inline_input_without_a_request(tmp_path: Path):
    from worker.client import CoordinatorClient
    client = CoordinatorClient("http://127.0.0.1:9", "k", "s", attempts=1)  # nothing listens there
    data = b"payload"
    job = _claimed(input_inline=base64.b64encode(data).decode(), input_size=len(data),
                   input_sha256=hashlib.sha256(data).hexdigest())
    seen = []
    dest = client.download_input(job, tmp_path / "in" / "input.bin", on_progress=lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == data and seen == [(7, 7)]


def test_worker_refuses_inline_input_with_a_wrong_sha256(tmp_path: Path):
    from worker.client import CoordinatorClient
    from worker.errors import JobFailed
    client = CoordinatorClient("http://127.0.0.1:9", "k", "s", attempts=1)
    job = _claimed(input_inline=base64.b64encode(b"payload").decode(), input_sha256="0" * 64)
    with pytest.raises(JobFailed, match="sha256"):
        client.download_input(job, tmp_path / "input.bin")
    with pytest.raises(JobFailed, match="inline"):
        client.download_input(_claimed(input_inline="!!not base64", input_sha256="0" * 64),
                              tmp_path / "input.bin")


def test_worker_threads_reuse_idle_sessions():
    """A job's heartbeat thread ends with close(): the next job's thread reuses its session
    (and kept-alive connection) instead of opening a new one."""
    import threading
    from worker.client import CoordinatorClient
    client = CoordinatorClient("http://127.0.0.1:9", "k", "s")
    seen = []

    def job_thread() -> None:
        seen.append(client.session)
        client.close()

    for _ in range(3):
        thread = threading.Thread(target=job_thread)
        thread.start()
        thread.join()
    assert seen[0] is seen[1] is seen[2]
    assert seen[0].headers["X-API-Key"] == "k"
    main = client.session
    assert main is seen[0]  # taken from the idle ones
    client.close_all()
    assert client._idle == []


# --- claim-on-complete ----------------------------------------------------------------------------

def _finish(client, key: str, job: dict, query: str = "final=1&next=1"):
    return client.post(f"/jobs/{job['job_id']}/upload-result?name=result&{query}", data=b"out",
                       headers={**h(key, job["lease_token"]), "Content-Type": "application/octet-stream"})


def test_completing_upload_hands_over_the_next_job(client, make_key):
    ckey, wkey = make_key("client"), make_key("worker")
    first, second = submit(client, ckey, b"one"), submit(client, ckey, b"two")
    submit(client, ckey, b"not mine", query="kind=transcribe&target_language=en")
    job = claim(client, wkey)
    assert job["job_id"] == first
    reply = _finish(client, wkey, job)
    assert reply.status_code == 200 and reply.get_json()["status"] == "completed"
    nxt = ClaimedJob.from_dict(reply.get_json()["next"])
    assert nxt.job_id == second and nxt.lease_token != job["lease_token"]
    assert base64.b64decode(nxt.input_inline) == b"two"  # inline, as a claim would send it
    view = client.get(f"/jobs/{second}", headers=h(ckey)).get_json()
    assert view["status"] == "running" and view["worker_id"] == "w1" and view["attempts"] == 1
    last = _finish(client, wkey, nxt.to_dict())
    assert last.get_json()["next"] is None  # only a transcribe job is left: not for an echo worker


def test_next_is_only_for_a_completing_upload_of_a_known_session(client, make_key):
    ckey, wkey = make_key("client"), make_key("worker")
    for data in (b"a", b"b", b"c"):
        submit(client, ckey, data)
    job = claim(client, wkey)
    partial = _finish(client, wkey, job, query="name=part&final=0&next=1")
    assert partial.status_code == 200 and "next" not in partial.get_json()
    plain = _finish(client, wkey, job, query="final=1")
    assert "next" not in plain.get_json()
    job = claim(client, wkey)
    stranger = {**h(wkey, job["lease_token"]), "X-Worker-Session": "never-claimed-here",
                "Content-Type": "application/octet-stream"}
    reply = client.post(f"/jobs/{job['job_id']}/upload-result?name=result&final=1&next=1",
                        data=b"out", headers=stranger)
    assert reply.status_code == 200 and reply.get_json()["next"] is None
    bad = _finish(client, wkey, claim(client, wkey), query="final=1&next=maybe")
    assert bad.status_code == 422 and bad.get_json()["error"]


# --- Flask's per-request set-up ---------------------------------------------------------------

def test_ensure_sync_is_asked_once_per_function(app, monkeypatch):
    import flask

    asked: list = []
    real = flask.Flask.ensure_sync
    monkeypatch.setattr(flask.Flask, "ensure_sync", lambda self, func: asked.append(func) or real(self, func))

    def view():
        return "ok"

    assert app.ensure_sync(view) is view and app.ensure_sync(view) is view
    assert asked == [view]  # the second answer came from memory

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self):
            return "ok"

    odd = Unhashable()
    assert app.ensure_sync(odd) is odd and app.ensure_sync(odd) is odd
    assert asked == [view, odd, odd]  # asked every time, as plain Flask does


def test_requests_are_timed_without_a_before_request_hook(app, client):
    from coordinator.metrics import TimedRequest

    assert app.request_class is TimedRequest
    assert not any("metrics" in getattr(f, "__module__", "") for f in app.before_request_funcs.get(None, []))
    client.get("/health")
    client.get("/health")
    samples = app.extensions["dubfleet"].metrics.http_seconds.collect()[0].samples
    counts = {s.labels["route"]: s.value for s in samples
              if s.name.endswith("_count") and s.labels.get("method") == "GET"}
    assert counts.get("/health") == 2
