"""Hostile input never produces a 500, on SQLite and PostgreSQL; internal errors are JSON."""
from __future__ import annotations

import json

import pytest

from coordinator.auth import create_key
from coordinator.extensions import db
from shared.protocol import KeyKind

NASTY_STRINGS = ["", "\x00", "a\x00b", "\ud800", "../../etc/passwd", "x" * 5000, "ünïcødé", "%00", "\n\r"]
NASTY_VALUES = [None, True, -1, 10**40, 1e308, float("nan"), [], [1, [2]], {}, {"a": {"b": []}}, *NASTY_STRINGS]


def _dumps(value) -> bytes:
    """JSON with lone surrogates and NaN allowed (as a hostile client might send)."""
    return json.dumps(value, allow_nan=True).encode()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hostile(request, app_factory, pg_app_factory):
    """(client, keys, a running job id and its token) on each database."""
    app = app_factory() if request.param == "sqlite" else pg_app_factory()
    with app.app_context():
        keys = {kind: create_key(db.session, KeyKind(kind), kind)[1] for kind in ("client", "worker")}
    client = app.test_client()
    job = client.post("/jobs?kind=echo", data=b"abc", headers={"X-API-Key": keys["client"],
                                                               "Content-Type": "application/octet-stream"})
    claimed = client.post("/jobs/claim", json={"worker": {"worker_id": "w", "kinds": ["echo"]}},
                          headers={"X-API-Key": keys["worker"]}).get_json()
    return client, keys, job.get_json()["job_id"], claimed["lease_token"]


def _check(reply) -> None:
    """Every reply is below 500 and errors are JSON with error and message."""
    assert reply.status_code < 500, reply.get_data()[:300]
    if reply.status_code >= 400:
        body = reply.get_json()
        assert set(body) >= {"error", "message"}


SUBMIT_FIELDS = ["kind", "source_language", "target_language", "priority", "callback_url", "asr_model",
                 "options", "max_attempts", "source_url", "filename"]


def test_submit_fields(hostile):
    client, keys, _, _ = hostile
    headers = {"X-API-Key": keys["client"], "Content-Type": "application/json"}
    for field in SUBMIT_FIELDS:
        for value in NASTY_VALUES:
            body = {"source_url": "https://example.com/a.mp4", field: value}
            _check(client.post("/jobs", data=_dumps(body), headers=headers))
    for value in (v for v in NASTY_STRINGS if v != "\ud800"):  # not URL-encodable
        _check(client.post("/jobs", data=b"x", query_string={"kind": "echo", "filename": value,
                                                             "priority": value, "options": value},
                           headers={"X-API-Key": keys["client"], "Content-Type": "application/octet-stream"}))
        _check(client.post("/jobs", data=b"x", query_string={"kind": "echo"},
                           headers={"X-API-Key": keys["client"], "Content-Type": "application/octet-stream",
                                    "Idempotency-Key": value.strip().encode().decode("latin-1")}))


def test_worker_bodies(hostile):
    client, keys, job_id, token = hostile
    headers = {"X-API-Key": keys["worker"], "X-Lease-Token": token, "Content-Type": "application/json"}
    for value in NASTY_VALUES:
        for field in ("worker_id", "session_id", "kinds", "asr_models", "target_languages", "memory_mb"):
            _check(client.post("/jobs/claim", data=_dumps({"worker": {field: value}, "wait": 0}), headers=headers))
            _check(client.post(f"/jobs/{job_id}/claim", data=_dumps({field: value}), headers=headers))
        _check(client.post("/jobs/claim", data=_dumps({"worker": {"kinds": [value] if isinstance(value, str) else value}}),
                           headers=headers))
        _check(client.post("/jobs/claim", data=_dumps({"wait": value}), headers=headers))
        for field in ("stage", "progress", "message", "eta_seconds"):
            _check(client.post(f"/jobs/{job_id}/heartbeat", data=_dumps({field: value}), headers=headers))
        _check(client.post(f"/jobs/{job_id}/complete", data=_dumps({"main_artifact": value}), headers=headers))
        _check(client.post(f"/jobs/{job_id}/complete", data=_dumps({"main_artifact": "result",
                                                                    "detected_language": value}), headers=headers))
        _check(client.post(f"/jobs/{job_id}/fail", data=_dumps({"reason": value, "retryable": False}),
                           headers={**headers, "X-Lease-Token": "stale"}))
    for query in ("kinds=%00", "kinds=a,,b", "asr_models=%ff%fe", "target_languages=" + "x" * 300):
        _check(client.get(f"/jobs/next?{query}", headers=headers))


def test_raw_garbage_bodies_and_paths(hostile):
    client, keys, job_id, token = hostile
    garbage = [b"", b"\x00\xff", b"{", b"[]", b"null", b"1e999999", b'{"a":' * 5000, b"9" * 5000]
    for key in keys.values():
        for body in garbage:
            for path in ("/jobs", "/jobs/claim", f"/jobs/{job_id}/claim", f"/jobs/{job_id}/heartbeat",
                         f"/jobs/{job_id}/complete", f"/jobs/{job_id}/fail", f"/jobs/{job_id}/release",
                         f"/jobs/{job_id}/retry"):
                _check(client.post(path, data=body, headers={"X-API-Key": key, "X-Lease-Token": token,
                                                             "Content-Type": "application/json"}))
    for path in ("/jobs/%00", "/jobs/..%2f..%2fetc", f"/jobs/{job_id}/artifacts/%00", "/jobs?limit=%00",
                 f"/jobs/{job_id}/artifacts/..", "/jobs/" + "f" * 5000):
        _check(client.get(path, headers={"X-API-Key": keys["client"]}))


def test_unexpected_errors_are_json_500(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("bug")

    reply = app.test_client().get("/boom")
    assert reply.status_code == 500
    assert reply.get_json() == {"error": "internal_error", "message": "internal server error"}


def test_database_errors_are_503(app, client, make_key, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from coordinator import queries
    key = make_key("client")

    def locked(*args, **kwargs):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(queries, "queue_info", locked)
    reply = client.get("/queue/info", headers={"X-API-Key": key})
    assert reply.status_code == 503 and reply.headers["Retry-After"]
