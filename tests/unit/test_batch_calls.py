"""POST /jobs/batch: short jobs' results completed under their own leases, jobs given back and the
next jobs claimed in one call (SQLite and PostgreSQL), and its refusals."""
from __future__ import annotations

import base64
import hashlib

import pytest

SESSION = "sess-batch"
INFO = {"worker_id": "wb", "session_id": SESSION, "kinds": ["echo"]}


@pytest.fixture
def backend(keyed_backend):
    """(test client, client key, worker key) on each database."""
    app, ckey, wkey = keyed_backend
    return app.test_client(), ckey, wkey


def _submit(client, key: str, data: bytes) -> str:
    reply = client.post("/jobs?kind=echo", data=data,
                        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def _batch(client, key: str, **body):
    return client.post("/jobs/batch", json=body, headers={"X-API-Key": key, "X-Worker-Session": SESSION})


def _held(job: dict, data: bytes, **extra) -> dict:
    return {"job_id": job["job_id"], "lease_token": job["lease_token"], "name": "result",
            "data": base64.b64encode(data).decode(), "sha256": hashlib.sha256(data).hexdigest(), **extra}


def _view(client, key: str, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}", headers={"X-API-Key": key}).get_json()


def test_a_batch_claims_delivers_and_claims_again(backend):
    client, ckey, wkey = backend
    ids = [_submit(client, ckey, f"in-{n}".encode()) for n in range(5)]
    first = _batch(client, wkey, worker=INFO, claim=3)
    assert first.status_code == 200, first.get_json()
    jobs = first.get_json()["jobs"]
    assert [j["job_id"] for j in jobs] == ids[:3]  # oldest first
    assert len({j["lease_token"] for j in jobs}) == 3  # a lease of its own each
    assert all(j["input_inline"] for j in jobs)  # small inputs travel inline

    second = _batch(client, wkey, worker=INFO, claim=8,
                    results=[_held(j, base64.b64decode(j["input_inline"]) + b"!") for j in jobs])
    body = second.get_json()
    assert second.status_code == 200, body
    assert [(e["job_id"], e["status"], e["repeated"]) for e in body["results"]] == \
        [(i, "completed", False) for i in ids[:3]]
    assert [j["job_id"] for j in body["jobs"]] == ids[3:]  # the rest, in the same call
    for n, job_id in enumerate(ids[:3]):
        view = _view(client, ckey, job_id)
        assert view["status"] == "completed" and view["attempts"] == 1 and view["main_artifact"] == "result"
        got = client.get(f"/jobs/{job_id}/download", headers={"X-API-Key": ckey}).data
        assert got == f"in-{n}!".encode()


def test_one_refused_result_leaves_the_others_and_a_repeat_answers_the_same(backend):
    client, ckey, wkey = backend
    for n in range(2):
        _submit(client, ckey, f"x{n}".encode())
    good, other = _batch(client, wkey, worker=INFO, claim=2).get_json()["jobs"]
    stale = {**other, "lease_token": "not-the-lease"}
    results = [_held(good, b"ok"), _held(stale, b"no")]
    body = _batch(client, wkey, results=results).get_json()
    assert body["results"][0]["status"] == "completed"
    refused = body["results"][1]
    assert refused["status_code"] == 409 and refused["error"] == "lease_lost" and refused["message"]
    assert _view(client, ckey, other["job_id"])["status"] == "running"  # untouched

    again = _batch(client, wkey, results=[_held(good, b"ok")]).get_json()  # the reply was lost
    assert again["results"][0] == {**body["results"][0], "repeated": True}
    changed = _batch(client, wkey, results=[_held(good, b"different")]).get_json()
    assert changed["results"][0]["status_code"] == 409  # a completed job keeps its result


def test_released_jobs_go_back_unstarted_and_are_not_claimed_by_the_same_call(backend):
    client, ckey, wkey = backend
    job_id = _submit(client, ckey, b"back")
    job = _batch(client, wkey, worker=INFO, claim=1).get_json()["jobs"][0]
    body = _batch(client, wkey, worker=INFO, claim=1,
                  release=[{"job_id": job_id, "lease_token": job["lease_token"]}]).get_json()
    assert body["released"] == [{"job_id": job_id, "status": "queued"}]
    assert body["jobs"][0]["job_id"] == job_id and body["jobs"][0]["lease_token"] != job["lease_token"]
    assert body["jobs"][0]["attempt"] == 1  # the release did not count an attempt


def test_a_cancelled_job_ends_cancelled_and_keeps_no_result(backend):
    client, ckey, wkey = backend
    job_id = _submit(client, ckey, b"c")
    job = _batch(client, wkey, worker=INFO, claim=1).get_json()["jobs"][0]
    assert client.delete(f"/jobs/{job_id}", headers={"X-API-Key": ckey}).status_code in (200, 202)
    entry = _batch(client, wkey, results=[_held(job, b"late")]).get_json()["results"][0]
    assert entry["status_code"] == 409 and entry["job_status"] == "cancelled"
    assert _view(client, ckey, job_id)["status"] == "cancelled"


def test_a_result_that_does_not_match_its_sha256_is_refused_alone(backend):
    client, ckey, wkey = backend
    _submit(client, ckey, b"s")
    job = _batch(client, wkey, worker=INFO, claim=1).get_json()["jobs"][0]
    entry = _batch(client, wkey, results=[{**_held(job, b"one"), "sha256": "0" * 64}]).get_json()["results"][0]
    assert entry["status_code"] == 400 and "does not match" in entry["message"]  # as upload-result
    assert _view(client, ckey, job["job_id"])["status"] == "running"


@pytest.mark.parametrize("body, field", [
    ({"claim": 33}, "claim"),
    ({"claim": True}, "claim"),
    ({"results": {"job_id": "x"}}, "results"),
    ({"release": {}}, "release"),
    ({"results": None}, "results"),
    ({"worker": 5}, "worker"),
    ({"results": [{"job_id": "../etc", "lease_token": "t"}]}, "job_id"),
    ({"results": [{"job_id": "a" * 32, "lease_token": "t", "sha256": "0" * 64, "data": "%%%"}]}, "data"),
    ({"results": [{"job_id": "a" * 32, "lease_token": "t", "sha256": "0" * 64,
                   "data": base64.b64encode(b"x" * (16 * 1024 + 1)).decode()}]}, "data"),
    ({"results": [{"job_id": "a" * 32, "lease_token": "t", "data": ""}]}, "sha256"),
    ({"release": [{"job_id": "a" * 32, "lease_token": "t"}] * 2}, "results"),
    ({"release": [{"job_id": "a" * 32}]}, "lease_token"),
])
def test_bad_batch_bodies_are_422_naming_the_field(backend, body, field):
    client, _, wkey = backend
    reply = _batch(client, wkey, **body)
    assert reply.status_code == 422, reply.get_json()
    assert reply.get_json()["field"] == field and reply.get_json()["message"]


def test_a_batch_needs_a_worker_key(backend):
    client, ckey, _ = backend
    assert _batch(client, ckey, claim=1, worker=INFO).status_code in (401, 403)
    assert client.post("/jobs/batch", data="[1]", headers={"X-API-Key": ckey}).status_code in (401, 403)
