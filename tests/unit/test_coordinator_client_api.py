"""Client endpoints: submit, idempotency, listing, views, validation, auth and isolation."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest


def h(key: str, **extra: str) -> dict[str, str]:
    """Request headers carrying an API key."""
    return {"X-API-Key": key, **extra}


def submit_raw(client, key: str, data: bytes = b"media bytes", query: str = "kind=echo", **headers):
    """POST /jobs with a raw body."""
    return client.post(f"/jobs?{query}", data=data,
                       headers=h(key, **{"Content-Type": "application/octet-stream", **headers}))


@pytest.fixture
def ckey(make_key) -> str:
    """A client key."""
    return make_key("client")


def test_submit_raw_body_queues_job(client, ckey):
    reply = submit_raw(client, ckey, b"hello", "kind=echo&filename=clip.mp4&priority=5")
    assert reply.status_code == 202
    body = reply.get_json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert set(body["links"]) == {"self", "download", "cancel", "retry"}
    view = client.get(body["links"]["self"], headers=h(ckey)).get_json()
    assert view["kind"] == "echo" and view["priority"] == 5
    assert view["input_name"] == "clip.mp4" and view["input_size"] == 5
    assert view["created_at_iso"].endswith("+00:00") and view["queue_position"] == 1


def test_submit_multipart_and_upload_async_alias(client, ckey):
    data = {"file": (io.BytesIO(b"abc"), "movie.mkv"), "kind": "subtitle", "target_language": "fr",
            "options": json.dumps({"voice": "x"})}
    reply = client.post("/upload-async", data=data, headers=h(ckey), content_type="multipart/form-data")
    assert reply.status_code == 202
    view = client.get(f"/jobs/{reply.get_json()['job_id']}", headers=h(ckey)).get_json()
    assert (view["kind"], view["target_language"], view["input_name"]) == ("subtitle", "fr", "movie.mkv")
    assert view["options"] == {"voice": "x"}


def test_submit_source_url_json(client, ckey):
    reply = client.post("/jobs", json={"source_url": "https://example.com/v/talk.mp4", "kind": "transcribe",
                                       "source_language": "en", "asr_model": "base"}, headers=h(ckey))
    assert reply.status_code == 202
    view = client.get(f"/jobs/{reply.get_json()['job_id']}", headers=h(ckey)).get_json()
    assert view["source_url"] == "https://example.com/v/talk.mp4" and view["input_name"] == "talk.mp4"
    assert view["input_size"] is None and view["asr_model"] == "base"


def test_idempotency_key_returns_same_job_and_stores_nothing(app, client, ckey):
    first = submit_raw(client, ckey, b"one", **{"Idempotency-Key": "abc-1"})
    again = submit_raw(client, ckey, b"two", **{"Idempotency-Key": "abc-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["job_id"] == again.get_json()["job_id"]
    inputs = list((Path(app.config["DATA_DIR"]) / "inputs").iterdir())
    assert len(inputs) == 1
    listing = client.get("/jobs", headers=h(ckey)).get_json()
    assert listing["total"] == 1


def test_idempotency_is_per_owner(client, make_key):
    a, b = make_key("client"), make_key("client")
    ja = submit_raw(client, a, **{"Idempotency-Key": "same"}).get_json()["job_id"]
    reply = submit_raw(client, b, **{"Idempotency-Key": "same"})
    assert reply.status_code == 202 and reply.get_json()["job_id"] != ja


def test_list_newest_first_with_pagination_and_status_filter(client, ckey):
    ids = [submit_raw(client, ckey, query=f"kind=echo&priority={i}").get_json()["job_id"] for i in range(5)]
    page = client.get("/jobs?limit=2&offset=1", headers=h(ckey)).get_json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [j["job_id"] for j in page["jobs"]] == [ids[3], ids[2]]
    client.delete(f"/jobs/{ids[0]}", headers=h(ckey))
    cancelled = client.get("/jobs?status=cancelled", headers=h(ckey)).get_json()
    assert [j["job_id"] for j in cancelled["jobs"]] == [ids[0]]


def test_queue_position_follows_priority(client, ckey):
    low = submit_raw(client, ckey, query="kind=echo&priority=-5").get_json()["job_id"]
    high = submit_raw(client, ckey, query="kind=echo&priority=50").get_json()
    assert high["queue_position"] == 1
    assert client.get(f"/jobs/{low}", headers=h(ckey)).get_json()["queue_position"] == 2


@pytest.mark.parametrize("query", [
    "kind=bogus", "kind=echo&priority=101", "kind=echo&priority=-101", "kind=echo&priority=abc",
    "kind=echo&priority=99999999999999999999", "kind=dub&target_language=xx",
    "kind=dub&source_language=klingon", "kind=dub&target_language=auto", "kind=echo&options=[1,2]",
    "kind=echo&options={bad", "kind=echo&callback_url=ftp://x/y", "kind=echo&callback_url=javascript:alert(1)",
    "kind=echo&max_attempts=0", "kind=echo&max_attempts=11", "kind=echo&asr_model=../../x",
])
def test_invalid_fields_are_422(client, ckey, query):
    reply = submit_raw(client, ckey, query=query)
    assert reply.status_code == 422
    assert reply.get_json()["error"] == "validation_failed"


@pytest.mark.parametrize("body", [
    {"source_url": "https://e.x/a", "priority": "high"}, {"source_url": "https://e.x/a", "priority": 1.5},
    {"source_url": "https://e.x/a", "priority": True}, {"source_url": "https://e.x/a", "options": "nope"},
    {"source_url": "https://e.x/a", "options": {"big": "x" * 17000}}, {"source_url": "file:///etc/passwd"},
    {"source_url": "https://e.x/a", "kind": ["dub"]}, {"source_url": "https://e.x/a", "callback_url": 5},
])
def test_invalid_json_fields_are_422(client, ckey, body):
    reply = client.post("/jobs", json=body, headers=h(ckey))
    assert reply.status_code == 422, reply.get_json()


@pytest.mark.parametrize("kwargs", [
    {"data": b"{not json", "content_type": "application/json"},
    {"data": b"[1, 2]", "content_type": "application/json"},
    {"data": b'{"kind": "echo"}', "content_type": "application/json"},
    {"data": b"", "content_type": "application/octet-stream"},
    {"data": {"kind": "echo"}, "content_type": "multipart/form-data"},
    {"data": {"file": (io.BytesIO(b""), "empty.mp4")}, "content_type": "multipart/form-data"},
])
def test_malformed_or_missing_file_is_400(client, ckey, kwargs):
    reply = client.post("/jobs", headers=h(ckey), **kwargs)
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "bad_request"


def test_traversal_filename_is_only_a_label(app, client, ckey):
    reply = submit_raw(client, ckey, b"x", "kind=echo&filename=../../etc/passwd")
    view = client.get(f"/jobs/{reply.get_json()['job_id']}", headers=h(ckey)).get_json()
    assert view["input_name"] == "passwd"
    multipart = client.post("/jobs", data={"file": (io.BytesIO(b"x"), "..\\..\\boot.ini")},
                            headers=h(ckey), content_type="multipart/form-data")
    assert multipart.status_code == 202
    stored = sorted(p.name for p in (Path(app.config["DATA_DIR"]) / "inputs").rglob("*"))
    assert "passwd" not in stored and "boot.ini" not in stored


@pytest.fixture
def small_app(app_factory):
    """An app with a 1 MB upload limit, so the 413 tests stay cheap."""
    return app_factory(MAX_UPLOAD_MB=1)


def test_oversize_upload_is_413_and_stores_nothing(small_app):
    app, client = small_app, small_app.test_client()
    ckey = _key(app)
    big = b"x" * (1024 * 1024 + 1)
    reply = submit_raw(client, ckey, big)
    assert reply.status_code == 413
    assert reply.get_json()["error"] == "payload_too_large"
    multipart = client.post("/jobs", data={"file": (io.BytesIO(big * 2), "big.bin")}, headers=h(ckey),
                            content_type="multipart/form-data")
    assert multipart.status_code == 413
    assert client.get("/jobs", headers=h(ckey)).get_json()["total"] == 0
    inputs = Path(app.config["DATA_DIR"]) / "inputs"
    assert [p for p in inputs.rglob("*") if p.is_file()] == []


def _key(app, kind: str = "client") -> str:
    """Create a key on a specific app."""
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        return create_key(db.session, KeyKind(kind), "t")[1]


def test_exactly_the_limit_is_accepted(small_app):
    client, ckey = small_app.test_client(), _key(small_app)
    assert submit_raw(client, ckey, b"x" * (1024 * 1024)).status_code == 202


def test_missing_unknown_and_wrong_kind_keys(client, make_key):
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers=h("dfc_nope")).status_code == 401
    worker = make_key("worker")
    reply = client.get("/jobs", headers=h(worker))
    assert reply.status_code == 403 and reply.get_json()["error"] == "forbidden"
    client_key = make_key("client")
    assert client.post("/jobs/claim", json={}, headers=h(client_key)).status_code == 403


def test_revoked_key_is_401(app, client, ckey):
    from coordinator.auth import hash_key, revoke_key
    from coordinator.extensions import db
    from coordinator.models import ApiKey
    with app.app_context():
        key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.key_hash == hash_key(ckey)))
        assert revoke_key(db.session, key_id)
    assert client.get("/jobs", headers=h(ckey)).status_code == 401


def test_env_keys_are_accepted(app_factory):
    app = app_factory(ADMIN_API_KEY="adm-secret", WORKER_API_KEY="wrk-secret")
    client = app.test_client()
    assert submit_raw(client, "adm-secret").status_code == 202
    assert client.get("/jobs", headers=h("wrk-secret")).status_code == 403
    assert client.post("/jobs/claim", json={"worker": {"worker_id": "w", "kinds": ["echo"]}},
                       headers=h("wrk-secret")).status_code == 200


def test_clients_see_only_their_jobs_admin_sees_all(client, make_key):
    a, b, admin = make_key("client"), make_key("client"), make_key("admin")
    job = submit_raw(client, a).get_json()["job_id"]
    submit_raw(client, b)
    for method, path in [("get", f"/jobs/{job}"), ("delete", f"/jobs/{job}"), ("post", f"/jobs/{job}/retry"),
                         ("get", f"/jobs/{job}/download"), ("get", f"/jobs/{job}/artifacts/result")]:
        reply = getattr(client, method)(path, headers=h(b))
        assert reply.status_code == 404, (method, path)
    assert client.get("/jobs", headers=h(b)).get_json()["total"] == 1
    assert client.get("/jobs", headers=h(admin)).get_json()["total"] == 2
    assert client.get(f"/jobs/{job}", headers=h(admin)).status_code == 200


def test_cancel_queued_then_terminal_conflict_then_retry(client, ckey):
    job = submit_raw(client, ckey).get_json()["job_id"]
    first = client.delete(f"/jobs/{job}", headers=h(ckey))
    assert first.status_code == 200 and first.get_json()["status"] == "cancelled"
    again = client.delete(f"/jobs/{job}", headers=h(ckey))
    assert again.status_code == 409
    retried = client.post(f"/jobs/{job}/retry", headers=h(ckey)).get_json()
    assert retried["status"] == "queued" and retried["attempts"] == 0
    assert client.post(f"/jobs/{job}/retry", headers=h(ckey)).status_code == 409


def test_download_before_completion_is_409(client, ckey):
    job = submit_raw(client, ckey).get_json()["job_id"]
    reply = client.get(f"/jobs/{job}/download", headers=h(ckey))
    assert reply.status_code == 409
    assert client.get(f"/jobs/{job}/artifacts/../../etc/passwd", headers=h(ckey)).status_code == 404
    assert client.get(f"/jobs/{job}/artifacts/nothing", headers=h(ckey)).status_code == 404


def test_unknown_ids_routes_and_methods_are_json(client, ckey):
    assert client.get("/jobs/" + "0" * 32, headers=h(ckey)).status_code == 404
    assert client.get("/jobs/not-a-job%00", headers=h(ckey)).status_code == 404
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = client.put("/jobs", headers=h(ckey))
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"


def test_bad_list_arguments_are_422(client, ckey):
    for query in ("status=bogus", "limit=0", "limit=x", "offset=-1"):
        assert client.get(f"/jobs?{query}", headers=h(ckey)).status_code == 422, query


def test_queue_info_and_health(client, ckey):
    submit_raw(client, ckey)
    info = client.get("/queue/info", headers=h(ckey)).get_json()
    assert info["queued"] == 1 and info["running"] == 0
    assert set(info) >= {"completed_last_hour", "failed_last_hour", "workers_online", "throughput_per_minute"}
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert (body["status"], body["database"], body["storage"]) == ("ok", "ok", "ok")


def test_health_reports_storage_failure(app, client, monkeypatch):
    from coordinator.state import get_state
    def broken() -> None:
        raise OSError("disk gone")
    monkeypatch.setattr(get_state(app).storage, "probe", broken)
    reply = client.get("/health")
    assert reply.status_code == 503
    body = reply.get_json()
    assert body["storage"] == "error" and body["database"] == "ok" and body["error"] == "service_unavailable"


def test_input_sha256_is_recorded(app, client, ckey):
    job = submit_raw(client, ckey, b"payload").get_json()["job_id"]
    from coordinator.extensions import db
    from coordinator.models import Job
    with app.app_context():
        assert db.session.get(Job, job).input_sha256 == hashlib.sha256(b"payload").hexdigest()
