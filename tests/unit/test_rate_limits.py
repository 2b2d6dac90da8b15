"""Per-key rate limits: JSON 429 + Retry-After, client and worker buckets apart, Redis shared."""
from __future__ import annotations

import uuid

import pytest

RAW = {"Content-Type": "application/octet-stream"}


def _keys(app):
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        made = {name: create_key(db.session, KeyKind(kind), f"{name}-{uuid.uuid4().hex[:6]}")[1]
                for name, kind in (("alice", "client"), ("bob", "client"), ("worker", "worker"))}
        db.session.remove()
    return made


def test_limits_are_per_key_and_scope(app_factory):
    app = app_factory(CLIENT_RATE_LIMIT="3 per minute", WORKER_RATE_LIMIT="4 per minute")
    keys, client = _keys(app), app.test_client()
    for _ in range(3):
        assert client.get("/jobs", headers={"X-API-Key": keys["alice"]}).status_code == 200
    refused = client.post("/jobs?kind=echo", data=b"x", headers={"X-API-Key": keys["alice"], **RAW})
    assert refused.status_code == 429 and refused.get_json()["error"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) > 0 and refused.get_json()["message"]
    # bob has his own budget, workers have theirs: a busy client never throttles the fleet
    assert client.get("/jobs", headers={"X-API-Key": keys["bob"]}).status_code == 200
    worker = {"X-API-Key": keys["worker"], "X-Worker-Session": "s"}
    for _ in range(4):
        assert client.post("/jobs/claim", json={"worker": {"kinds": ["echo"]}}, headers=worker).status_code == 204
    assert client.post("/jobs/claim", json={"worker": {"kinds": ["echo"]}}, headers=worker).status_code == 429
    for _ in range(10):  # the health check is never limited
        assert client.get("/health").status_code == 200


def test_limits_can_be_switched_off(app_factory):
    app = app_factory(CLIENT_RATE_LIMIT="1 per minute", RATELIMIT_ENABLED=False)
    keys, client = _keys(app), app.test_client()
    assert all(client.get("/jobs", headers={"X-API-Key": keys["alice"]}).status_code == 200 for _ in range(5))


def test_bad_limit_settings_are_refused(app_factory):
    with pytest.raises(ValueError, match="CLIENT_RATE_LIMIT"):
        app_factory(CLIENT_RATE_LIMIT="lots")


def test_replicas_share_counters_in_redis(app_factory):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable on 127.0.0.1:6379: {exc}")
    settings = {"CLIENT_RATE_LIMIT": "4 per minute", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379"}
    first = app_factory(**settings)
    second = app_factory(DATABASE_URL=first.config["DATABASE_URL"], **settings)  # one database, two replicas
    key = _keys(first)["alice"]  # a fresh key: a fresh bucket in Redis
    replies = [app.test_client().get("/jobs", headers={"X-API-Key": key}).status_code
               for app in (first, second, first, second, first)]
    assert replies == [200, 200, 200, 200, 429]
