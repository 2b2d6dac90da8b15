"""Worker endpoints over HTTP: the claim flow, fencing, heartbeats, failures, uploads, long-poll."""
from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest

SESSION = "sess-1"


def h(key: str, token: str | None = None, **extra: str) -> dict[str, str]:
    """Headers: API key, worker session and (optionally) the lease token."""
    headers = {"X-API-Key": key, "X-Worker-Session": SESSION, **extra}
    if token:
        headers["X-Lease-Token"] = token
    return headers


def worker_info(**overrides) -> dict:
    """A WorkerInfo body."""
    info = {"worker_id": "w1", "session_id": SESSION, "kinds": ["echo", "dub", "transcribe", "subtitle"],
            "asr_models": ["base"], "target_languages": ["es"]}
    info.update(overrides)
    return info


@pytest.fixture
def keys(make_key) -> dict[str, str]:
    """One client, one worker and one admin key."""
    return {"client": make_key("client"), "worker": make_key("worker"), "admin": make_key("admin")}


def submit(client, keys, data: bytes = b"input bytes", query: str = "kind=echo") -> str:
    """Submit a raw-body job and return its id."""
    reply = client.post(f"/jobs?{query}", data=data,
                        headers={"X-API-Key": keys["client"], "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def claim(client, keys, wait: float = 0, **info) -> dict | None:
    """POST /jobs/claim; the ClaimedJob or None on 204."""
    reply = client.post("/jobs/claim", json={"worker": worker_info(**info), "wait": wait}, headers=h(keys["worker"]))
    assert reply.status_code in (200, 204), reply.get_json()
    return reply.get_json() if reply.status_code == 200 else None


def view(client, keys, job_id: str) -> dict:
    """The client's view of a job."""
    return client.get(f"/jobs/{job_id}", headers={"X-API-Key": keys["client"]}).get_json()


def test_seed_flow_next_claim_download_upload_completed(client, keys):
    job_id = submit(client, keys, b"hello world")
    peek = client.get("/jobs/next?kinds=echo", headers=h(keys["worker"]))
    assert peek.status_code == 200 and peek.get_json()["job_id"] == job_id
    claimed = client.post(f"/jobs/{job_id}/claim", json=worker_info(), headers=h(keys["worker"]))
    assert claimed.status_code == 200
    job = claimed.get_json()
    assert job["attempt"] == 1 and job["input_size"] == 11 and job["lease_token"]
    assert job["input_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    token = job["lease_token"]
    data = client.get(f"/jobs/{job_id}/download-input", headers=h(keys["worker"], token))
    assert data.status_code == 200 and data.data == b"hello world"
    assert data.headers["X-Content-SHA256"] == job["input_sha256"]
    upload = client.post(f"/jobs/{job_id}/upload-result", data=b"HELLO WORLD", headers=h(keys["worker"], token))
    assert upload.status_code == 200
    assert upload.get_json()["status"] == "completed" and upload.get_json()["artifact"]["name"] == "result"
    done = view(client, keys, job_id)
    assert done["status"] == "completed" and done["progress"] == 100 and done["main_artifact"] == "result"
    assert [a["name"] for a in done["artifacts"]] == ["result"]
    result = client.get(f"/jobs/{job_id}/download", headers={"X-API-Key": keys["client"]})
    assert result.data == b"HELLO WORLD"
    assert result.headers["ETag"].strip('"') == hashlib.sha256(b"HELLO WORLD").hexdigest()


def test_download_supports_range(client, keys):
    job_id = submit(client, keys, b"0123456789")
    token = claim(client, keys)["lease_token"]
    part = client.get(f"/jobs/{job_id}/download-input", headers=h(keys["worker"], token, Range="bytes=2-5"))
    assert part.status_code == 206 and part.data == b"2345"


def test_second_claim_of_same_job_is_409(client, keys):
    job_id = submit(client, keys)
    first = client.post(f"/jobs/{job_id}/claim", json=worker_info(), headers=h(keys["worker"]))
    second = client.post(f"/jobs/{job_id}/claim", json=worker_info(worker_id="w2"), headers=h(keys["worker"]))
    assert (first.status_code, second.status_code) == (200, 409)
    assert client.post("/jobs/" + "a" * 32 + "/claim", json=worker_info(), headers=h(keys["worker"])).status_code == 404
    assert claim(client, keys) is None


def test_stale_token_gets_409_and_changes_nothing(client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    before = view(client, keys, job_id)
    for path, kwargs in [("heartbeat", {"json": {"progress": 50}}), ("fail", {"json": {"reason": "x"}}),
                         ("release", {}), ("complete", {"json": {"main_artifact": "result"}}),
                         ("upload-result", {"data": b"zzz"})]:
        reply = client.post(f"/jobs/{job_id}/{path}", headers=h(keys["worker"], "stale-token"), **kwargs)
        assert reply.status_code == 409 and reply.get_json()["error"] == "lease_lost", path
    assert client.get(f"/jobs/{job_id}/download-input", headers=h(keys["worker"], "nope")).status_code == 409
    assert client.post(f"/jobs/{job_id}/heartbeat", json={}, headers=h(keys["worker"])).status_code == 409
    after = view(client, keys, job_id)
    assert after == before and after["artifacts"] == []
    assert client.post(f"/jobs/{job_id}/heartbeat", json={}, headers=h(keys["worker"], token)).status_code == 200


def test_heartbeat_renews_lease_records_progress_and_reports_cancel(client, keys):
    job_id = submit(client, keys)
    job = claim(client, keys)
    beat = {"stage": "transcribing", "progress": 42.5, "message": "half way", "eta_seconds": 30}
    reply = client.post(f"/jobs/{job_id}/heartbeat", json=beat, headers=h(keys["worker"], job["lease_token"]))
    body = reply.get_json()
    assert reply.status_code == 200 and body["cancel_requested"] is False
    assert body["lease_expires_at"] >= job["lease_expires_at"] and body["heartbeat_interval"] == 10
    current = view(client, keys, job_id)
    assert (current["stage"], current["progress"], current["message"]) == ("transcribing", 42.5, "half way")
    cancel = client.delete(f"/jobs/{job_id}", headers={"X-API-Key": keys["client"]})
    assert cancel.status_code == 200 and cancel.get_json()["cancel_requested"] is True
    assert cancel.get_json()["status"] == "running"
    reply = client.post(f"/jobs/{job_id}/heartbeat", json={}, headers=h(keys["worker"], job["lease_token"]))
    assert reply.get_json()["cancel_requested"] is True
    stop = client.post(f"/jobs/{job_id}/release", headers=h(keys["worker"], job["lease_token"]))
    assert stop.get_json()["status"] == "cancelled"


@pytest.mark.parametrize("beat", [{"stage": "dancing"}, {"progress": "lots"}, {"progress": True},
                                  {"eta_seconds": "soon"}])
def test_bad_heartbeat_is_422(client, keys, beat):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    assert client.post(f"/jobs/{job_id}/heartbeat", json=beat, headers=h(keys["worker"], token)).status_code == 422


def test_heartbeat_clamps_progress(client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    client.post(f"/jobs/{job_id}/heartbeat", json={"progress": 250}, headers=h(keys["worker"], token))
    assert view(client, keys, job_id)["progress"] == 100


def test_fail_retryable_requeues_with_backoff_then_fails_for_good(client, keys):
    job_id = submit(client, keys, query="kind=echo&max_attempts=2")
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/fail", json={"reason": "GPU OOM", "retryable": True},
                        headers=h(keys["worker"], token))
    body = reply.get_json()
    assert reply.status_code == 200 and body["status"] == "queued"
    current = view(client, keys, job_id)
    assert current["status"] == "queued" and current["attempts"] == 1 and "GPU OOM" in current["message"]
    assert claim(client, keys) is None  # backing off: available_at is in the future


def test_fail_not_retryable_fails_with_reason(client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    client.post(f"/jobs/{job_id}/fail", json={"reason": "bad media", "retryable": False},
                headers=h(keys["worker"], token))
    current = view(client, keys, job_id)
    assert current["status"] == "failed" and current["error"] == "bad media" and current["finished_at"]
    retried = client.post(f"/jobs/{job_id}/retry", headers={"X-API-Key": keys["client"]}).get_json()
    assert retried["status"] == "queued" and retried["error"] is None and retried["attempts"] == 0
    again = claim(client, keys)
    assert again["job_id"] == job_id and again["attempt"] == 1


def test_release_returns_job_without_counting_attempt(client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/release", headers=h(keys["worker"], token))
    assert reply.get_json()["status"] == "queued"
    assert view(client, keys, job_id)["attempts"] == 0
    assert claim(client, keys)["attempt"] == 1


def test_partial_artifacts_then_complete(client, keys):
    job_id = submit(client, keys, query="kind=dub&target_language=es")
    token = claim(client, keys)["lease_token"]
    up = client.post(f"/jobs/{job_id}/upload-result?name=transcript.json&final=0&content_type=application/json",
                     data=b'{"text": "hi"}', headers=h(keys["worker"], token))
    assert up.status_code == 200 and up.get_json()["status"] == "running"
    partial = view(client, keys, job_id)
    assert [a["name"] for a in partial["artifacts"]] == ["transcript.json"]
    got = client.get(f"/jobs/{job_id}/artifacts/transcript.json", headers={"X-API-Key": keys["client"]})
    assert got.data == b'{"text": "hi"}' and got.mimetype == "application/json"
    assert client.post(f"/jobs/{job_id}/complete", json={"main_artifact": "dub.mp4"},
                       headers=h(keys["worker"], token)).status_code == 404
    multipart = client.post(f"/jobs/{job_id}/upload-result?name=dub.mp4&final=0",
                            data={"file": (io.BytesIO(b"video"), "x.mp4")}, content_type="multipart/form-data",
                            headers=h(keys["worker"], token))
    assert multipart.status_code == 200
    done = client.post(f"/jobs/{job_id}/complete", json={"main_artifact": "dub.mp4", "detected_language": "en"},
                       headers=h(keys["worker"], token))
    assert done.get_json()["status"] == "completed"
    final = view(client, keys, job_id)
    assert final["detected_language"] == "en" and final["main_artifact"] == "dub.mp4"
    assert client.get(f"/jobs/{job_id}/download", headers={"X-API-Key": keys["client"]}).data == b"video"


def test_sha256_mismatch_is_400_and_stores_nothing(app, client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/upload-result", data=b"abc",
                        headers=h(keys["worker"], token, **{"X-Content-SHA256": "0" * 64}))
    assert reply.status_code == 400
    assert view(client, keys, job_id)["status"] == "running"
    artifacts = Path(app.config["DATA_DIR"]) / "artifacts"
    assert [p for p in artifacts.rglob("*") if p.is_file()] == []
    good = client.post(f"/jobs/{job_id}/upload-result", data=b"abc",
                       headers=h(keys["worker"], token, **{"X-Content-SHA256": hashlib.sha256(b"abc").hexdigest()}))
    assert good.status_code == 200


def _stored_files(app) -> set[str]:
    artifacts = Path(app.config["DATA_DIR"]) / "artifacts"
    return {str(p.relative_to(app.config["DATA_DIR"])) for p in artifacts.rglob("*") if p.is_file()}


def _pointed_to(app) -> set[str]:
    from coordinator.extensions import db
    from coordinator.models import Artifact
    with app.app_context():
        return {path for (path,) in db.session.query(Artifact.path)}


def test_every_upload_outcome_leaves_only_the_files_rows_point_to(app, client, keys):
    """Uploads are published at their own path before the fenced transaction; whatever the
    transaction decides (stored, replaced, same bytes again, refused, repeated after completion),
    the files left are exactly those artifact rows point to."""
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]

    def upload(data: bytes, name: str = "result", final: int = 0, lease: str = token) -> int:
        return client.post(f"/jobs/{job_id}/upload-result?name={name}&final={final}", data=data,
                           headers=h(keys["worker"], lease)).status_code

    assert upload(b"first") == 200 and upload(b"second") == 200  # replaced
    assert upload(b"second") == 200  # the same bytes: the row keeps its file
    assert upload(b"stale", lease="not-the-lease") == 409  # refused
    assert len(_stored_files(app)) == 1 and _stored_files(app) == _pointed_to(app)
    assert upload(b"second", final=1) == 200  # completes with the stored bytes
    assert upload(b"second", final=1) == 200  # a repeat after completion: the same result
    assert upload(b"different", final=1) == 409
    assert len(_stored_files(app)) == 1 and _stored_files(app) == _pointed_to(app)
    got = client.get(f"/jobs/{job_id}/download", headers={"X-API-Key": keys["client"]})
    assert got.data == b"second"


@pytest.mark.parametrize("query", ["name=../../etc/passwd", "name=..", "name=.hidden", "name=a/b",
                                   "final=maybe", "content_type=not a type"])
def test_bad_upload_arguments_are_422(app, client, keys, query):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/upload-result?{query}", data=b"x", headers=h(keys["worker"], token))
    assert reply.status_code == 422
    assert not (Path(app.config["DATA_DIR"]).parent / "etc").exists()


def test_empty_artifact_is_stored(client, keys):
    """An empty result is legitimate (the subtitles of a silent file)."""
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/upload-result?name=subtitles.en.srt", data=b"",
                        headers=h(keys["worker"], token))
    assert reply.status_code == 200 and reply.get_json()["artifact"]["size"] == 0


def test_claim_filters_by_capability(client, keys):
    dub_fr = submit(client, keys, query="kind=dub&target_language=fr")
    whisper_large = submit(client, keys, query="kind=transcribe&asr_model=large-v3")
    assert claim(client, keys, kinds=["echo"]) is None
    assert claim(client, keys, kinds=["dub", "transcribe"]) is None  # fr not offered, large-v3 not installed
    got = claim(client, keys, kinds=["transcribe"], asr_models=["large-v3"])
    assert got["job_id"] == whisper_large and got["asr_model"] == "large-v3"
    got = claim(client, keys, kinds=["dub"], target_languages=["fr", "de"])
    assert got["job_id"] == dub_fr and got["target_language"] == "fr"


def test_claim_prefers_priority_then_age(client, keys):
    old = submit(client, keys)
    urgent = submit(client, keys, query="kind=echo&priority=10")
    newer = submit(client, keys)
    order = [claim(client, keys)["job_id"] for _ in range(3)]
    assert order == [urgent, old, newer]


@pytest.mark.parametrize("body", [{"worker": "w1"}, {"worker": {"kinds": "echo"}}, {"worker": {"kinds": [1]}},
                                  {"worker": worker_info(), "wait": -1}, {"worker": worker_info(), "wait": "x"},
                                  {"worker": {"worker_id": 5}}])
def test_bad_claim_bodies_are_422(client, keys, body):
    assert client.post("/jobs/claim", json=body, headers=h(keys["worker"])).status_code == 422


def test_malformed_claim_json_is_400(client, keys):
    reply = client.post("/jobs/claim", data=b"{oops", headers=h(keys["worker"], **{"Content-Type": "application/json"}))
    assert reply.status_code == 400


def test_long_poll_claim_is_answered_when_a_job_arrives(client, keys, app):
    result: dict = {}

    def waiter() -> None:
        result["job"] = claim(app.test_client(), keys, wait=15)

    thread = threading.Thread(target=waiter)
    thread.start()
    from coordinator.state import get_state
    notifier = get_state(app).notifier
    for _ in range(500):
        if notifier.waiters:
            break
        threading.Event().wait(0.01)
    job_id = submit(client, keys)
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert result["job"] is not None and result["job"]["job_id"] == job_id


def test_too_many_waiters_get_204_with_retry_after(app_factory):
    app = app_factory(MAX_CLAIM_WAITERS=0)
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        worker = create_key(db.session, KeyKind.WORKER, "w")[1]
    reply = app.test_client().post("/jobs/claim", json={"worker": worker_info(), "wait": 10},
                                   headers=h(worker))
    assert reply.status_code == 204 and int(reply.headers["Retry-After"]) >= 1


def test_worker_sessions_are_recorded(client, keys):
    claim(client, keys)
    info = client.get("/queue/info", headers={"X-API-Key": keys["client"]}).get_json()
    assert info["workers_online"] == 1


def test_next_is_204_when_nothing_fits(client, keys):
    submit(client, keys, query="kind=dub&target_language=de")
    assert client.get("/jobs/next?kinds=dub&target_languages=es", headers=h(keys["worker"])).status_code == 204
    assert client.get("/jobs/next?kinds=dub&target_languages=de", headers=h(keys["worker"])).status_code == 200


def test_admin_may_use_worker_endpoints(client, keys):
    job_id = submit(client, keys)
    reply = client.post("/jobs/claim", json={"worker": worker_info()}, headers=h(keys["admin"]))
    assert reply.status_code == 200 and reply.get_json()["job_id"] == job_id


def test_callback_posts_job_view_when_job_ends(app_factory):
    import http.server
    import json as jsonlib
    received: list[dict] = []
    arrived = threading.Event()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            received.append(jsonlib.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from coordinator.webhooks import start_webhooks
    app = app_factory(CALLBACKS_ENABLED=True, ALLOW_PRIVATE_CALLBACKS=True)  # hook on loopback
    loop = start_webhooks(app)  # `coordinator serve` starts the delivery loop; a test client does not
    try:
        client = app.test_client()
        from coordinator.auth import create_key
        from coordinator.extensions import db
        from shared.protocol import KeyKind
        with app.app_context():
            keys = {k: create_key(db.session, KeyKind(k), k)[1] for k in ("client", "worker")}
        hook = f"http://127.0.0.1:{server.server_address[1]}/done"
        job_id = submit(client, keys, query=f"kind=echo&callback_url={hook}")
        token = claim(client, keys)["lease_token"]
        client.post(f"/jobs/{job_id}/upload-result", data=b"ok", headers=h(keys["worker"], token))
        assert arrived.wait(10)
        assert received[0]["job_id"] == job_id and received[0]["status"] == "completed"
    finally:
        server.shutdown()
        loop.stop()
        loop.join(10)


def test_reaper_thread_pass_requeues_expired(app_factory):
    app = app_factory(LEASE_SECONDS=0.01, INLINE_INPUT_KB=0)  # fetched input: unconfirmed
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from coordinator.reaper import Reaper
    from shared.protocol import KeyKind
    with app.app_context():
        keys = {k: create_key(db.session, KeyKind(k), k)[1] for k in ("client", "worker")}
    client = app.test_client()
    job_id = submit(client, keys)
    claim(client, keys)
    threading.Event().wait(0.05)
    assert Reaper(app, 1.0).run_once()["unstarted"] == 1  # the worker never called back
    assert view(client, keys, job_id)["status"] == "queued" and view(client, keys, job_id)["attempts"] == 0


def test_queued_job_says_what_worker_it_waits_for(client, keys):
    dub_fr = submit(client, keys, query="kind=dub&target_language=fr")
    assert "no online worker" in view(client, keys, dub_fr)["waiting_for"]
    assert claim(client, keys, kinds=["dub", "echo"], target_languages=["es"]) is None
    waiting = view(client, keys, dub_fr)["waiting_for"]
    assert "dub jobs" in waiting and "target language 'fr'" in waiting
    echo = submit(client, keys)
    assert view(client, keys, echo)["waiting_for"] is None
    assert claim(client, keys, kinds=["dub"], target_languages=["fr"])["job_id"] == dub_fr
    assert view(client, keys, dub_fr)["waiting_for"] is None


def test_final_upload_completes_with_detected_language(client, keys):
    job_id = submit(client, keys)
    token = claim(client, keys)["lease_token"]
    reply = client.post(f"/jobs/{job_id}/upload-result?name=result&final=1&detected_language=en",
                        data=b"out", headers=h(keys["worker"], token))
    assert reply.status_code == 200 and reply.get_json()["status"] == "completed"
    job = view(client, keys, job_id)
    assert job["detected_language"] == "en" and job["main_artifact"] == "result"
    bad = client.post(f"/jobs/{submit(client, keys)}/upload-result?final=1&detected_language=zz9",
                      data=b"x", headers=h(keys["worker"], claim(client, keys)["lease_token"]))
    assert bad.status_code == 422
