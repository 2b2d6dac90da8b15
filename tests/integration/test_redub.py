"""POST /jobs/<id>/redub against a real waitress coordinator.

The parent dub is completed through the real worker protocol (claim, upload-result) with the
artifacts a dubbing worker uploads; the re-dub is then claimed the same way and its inputs (the
parent's video and segment bundle) downloaded under its lease.
"""
from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from dubfleet.local import BIN
from tests.integration.procs import WORKER_KEY, Api

pytestmark = pytest.mark.integration

VIDEO = b"not really a video, but the coordinator never looks inside" * 50
BUNDLE = b"a segment bundle stand-in" * 40
REPORT = json.dumps({"segments": [{"index": 0}, {"index": 1}, {"index": 2}]}).encode()
EDIT = {"segments": [{"index": 1, "text": "Hola de nuevo"}]}


class Worker:
    """The worker protocol by hand: claim, upload, download under the lease."""

    def __init__(self, url: str):
        self.api = Api(url, WORKER_KEY)
        self.lease: dict[str, str] = {}

    def claim(self) -> dict:
        info = {"worker_id": "w", "session_id": "s1", "kinds": ["dub", "echo"],
                "asr_models": ["base"], "target_languages": ["es"]}
        resp = self.api.post("/jobs/claim", json={"worker": info})
        assert resp.status_code == 200, resp.text
        job = resp.json()
        self.lease[job["job_id"]] = job["lease_token"]
        return job

    def headers(self, job_id: str) -> dict[str, str]:
        return {"X-Lease-Token": self.lease[job_id], "X-Worker-Session": "s1"}

    def upload(self, job_id: str, name: str, data: bytes, final: bool = False) -> None:
        resp = self.api.post(f"/jobs/{job_id}/upload-result",
                             params={"name": name, "final": "1" if final else "0"}, data=data,
                             headers={**self.headers(job_id),
                                      "Content-Type": "application/octet-stream"})
        assert resp.status_code == 200, resp.text

    def download(self, job_id: str, what: str):
        return self.api.get(f"/jobs/{job_id}/download-{what}", headers=self.headers(job_id))


def _dub(client: Api, worker: Worker, complete: bool = True) -> str:
    """Submit a dub and let the 'worker' finish it with a dub's artifacts."""
    job_id = client.submit_bytes(VIDEO, kind="dub", filename="talk.mp4", target_language="es",
                                 source_language="en",
                                 options=json.dumps({"voice": "ef_dora"}))["job_id"]
    assert worker.claim()["job_id"] == job_id
    if complete:
        worker.upload(job_id, "dub_report.json", REPORT)
        worker.upload(job_id, "dub_segments.tar", BUNDLE)
        worker.upload(job_id, "dubbed_video.mp4", b"dubbed", final=True)
    return job_id


@pytest.fixture
def keys(coordinator):
    return (Api(coordinator.url, coordinator.create_key("client", "alice")),
            Api(coordinator.url, coordinator.create_key("client", "bob")))


def test_redub_makes_a_linked_job_whose_worker_gets_the_parents_video_and_lines(
        coordinator, keys):
    alice, _ = keys
    worker = Worker(coordinator.url)
    parent = _dub(alice, worker)
    resp = alice.post(f"/jobs/{parent}/redub", json=EDIT)
    assert resp.status_code == 201, resp.text
    view = resp.json()
    assert view["parent_job_id"] == parent and view["kind"] == "dub"
    assert view["status"] == "queued" and view["job_id"] != parent
    assert view["options"]["voice"] == "ef_dora"  # the parent's settings
    assert view["options"]["redub"]["edits"] == EDIT["segments"]
    assert alice.get(f"/jobs/{view['job_id']}").json()["parent_job_id"] == parent
    assert alice.get(f"/jobs/{parent}").json()["parent_job_id"] is None
    # the parent may go now: the re-dub keeps its own copies
    subprocess.run([str(BIN / "coordinator"), "prune", "--days", "0"], env=coordinator.env,
                   check=True, capture_output=True)
    assert alice.get(f"/jobs/{parent}").status_code == 404
    claimed = worker.claim()
    assert claimed["job_id"] == view["job_id"] and claimed["options"]["redub"]["edits"]
    video = worker.download(view["job_id"], "input")
    assert video.status_code == 200 and video.content == VIDEO
    bundle = worker.download(view["job_id"], "parent")
    assert bundle.status_code == 200 and bundle.content == BUNDLE
    assert bundle.headers["X-Content-SHA256"] == hashlib.sha256(BUNDLE).hexdigest()


def test_a_re_dub_can_be_re_dubbed(coordinator, keys):
    alice, _ = keys
    worker = Worker(coordinator.url)
    parent = _dub(alice, worker)
    child = alice.post(f"/jobs/{parent}/redub", json=EDIT).json()["job_id"]
    assert worker.claim()["job_id"] == child
    worker.upload(child, "dub_report.json", REPORT)
    worker.upload(child, "dub_segments.tar", BUNDLE + b"2")
    worker.upload(child, "dubbed_video.mp4", b"dubbed again", final=True)
    grandchild = alice.post(f"/jobs/{child}/redub", json={"segments": [
        {"index": 0, "source_text": "Hello again"}]})
    assert grandchild.status_code == 201 and grandchild.json()["parent_job_id"] == child
    assert worker.claim()["job_id"] == grandchild.json()["job_id"]
    assert worker.download(grandchild.json()["job_id"], "parent").content == BUNDLE + b"2"


def test_only_a_completed_dub_of_the_same_owner(coordinator, keys, admin):
    alice, bob = keys
    worker = Worker(coordinator.url)
    done = _dub(alice, worker)
    running = _dub(alice, worker, complete=False)
    assert alice.post(f"/jobs/{running}/redub", json=EDIT).status_code == 409
    assert worker.download(running, "parent").status_code == 404  # not a re-dub
    echo = alice.submit_bytes(b"hi", kind="echo")["job_id"]
    worker.claim()
    worker.upload(echo, "result", b"hi", final=True)
    not_dub = alice.post(f"/jobs/{echo}/redub", json=EDIT)
    assert not_dub.status_code == 422 and not_dub.json()["error"] == "validation_failed"
    for other in (bob.post(f"/jobs/{done}/redub", json=EDIT),
                  alice.post(f"/jobs/{'0' * 32}/redub", json=EDIT),
                  alice.post("/jobs/nonsense/redub", json=EDIT)):
        assert other.status_code == 404 and other.json()["error"] == "not_found"
    assert admin.post(f"/jobs/{done}/redub", json=EDIT).status_code == 201
    assert not [j for j in bob.all_jobs() if j.get("parent_job_id")]


@pytest.mark.parametrize("body, field", [
    ({"segments": [{"index": 7, "text": "x"}]}, "segments"),
    ({"segments": [{"index": 1, "text": "x", "source_text": "y"}]}, "segments"),
    ({"segments": [{"index": 1}]}, "segments"),
    ({"segments": [{"index": 1, "text": "  "}]}, "segments"),
    ({"segments": [{"index": 1, "text": "x" * 1001}]}, "segments"),
    ({"segments": [{"index": 1, "text": "a"}, {"index": 1, "text": "b"}]}, "segments"),
    ({"segments": []}, "segments"),
    ({"edits": []}, "edits"),
])
def test_bad_edits_are_422_with_a_json_body(coordinator, keys, body, field):
    alice, _ = keys
    parent = _dub(alice, Worker(coordinator.url))
    resp = alice.post(f"/jobs/{parent}/redub", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "validation_failed" and resp.json()["field"] == field


def test_not_json_is_400(coordinator, keys):
    alice, _ = keys
    parent = _dub(alice, Worker(coordinator.url))
    resp = alice.post(f"/jobs/{parent}/redub", data=b"{", headers={"Content-Type":
                                                                      "application/json"})
    assert resp.status_code == 400 and resp.json()["error"] == "bad_request"


def test_too_many_edits_is_a_setting(coordinator_factory):
    coord = coordinator_factory({"MAX_REDUB_EDITS": "1", "MAX_REDUB_TEXT_CHARS": "5"}).start()
    alice = Api(coord.url, coord.create_key("client", "alice"))
    parent = _dub(alice, Worker(coord.url))
    two = {"segments": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]}
    assert "MAX_REDUB_EDITS" in alice.post(f"/jobs/{parent}/redub", json=two).json()["message"]
    long = {"segments": [{"index": 0, "text": "abcdef"}]}
    assert alice.post(f"/jobs/{parent}/redub", json=long).status_code == 422
    assert alice.post(f"/jobs/{parent}/redub", json={"segments": [
        {"index": 0, "text": "abc"}]}).status_code == 201


def test_redub_counts_against_the_clients_rate_limit(coordinator_factory):
    coord = coordinator_factory({"CLIENT_RATE_LIMIT": "6 per minute"}).start()
    alice = Api(coord.url, coord.create_key("client", "alice"))
    parent = _dub(alice, Worker(coord.url))  # one submit
    codes = [alice.post(f"/jobs/{parent}/redub", json=EDIT).status_code for _ in range(6)]
    assert codes[:5] == [201] * 5 and codes[5] == 429


def test_idempotency_key_gives_the_same_re_dub(coordinator, keys):
    alice, _ = keys
    parent = _dub(alice, Worker(coordinator.url))
    headers = {"Idempotency-Key": "fix-line-1"}
    first = alice.post(f"/jobs/{parent}/redub", json=EDIT, headers=headers)
    again = alice.post(f"/jobs/{parent}/redub", json=EDIT, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["job_id"] == again.json()["job_id"]


def test_cli_redub_prints_the_new_job(coordinator, keys, tmp_path):
    from click.testing import CliRunner

    from dubfleet.cli import main

    alice, _ = keys
    parent = _dub(alice, Worker(coordinator.url))
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps(EDIT))
    env = {"DUBFLEET_API_URL": coordinator.url,
           "DUBFLEET_API_KEY": alice.session.headers["X-API-Key"]}
    result = CliRunner().invoke(main, ["redub", parent, "--edits", str(edits), "--json"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parent_job_id"] == parent
    edits.write_text(json.dumps([{"index": 9, "text": "x"}]))  # the bare list works too
    result = CliRunner().invoke(main, ["redub", parent, "--edits", str(edits)], env=env,
                                catch_exceptions=False)
    assert result.exit_code != 0 and "no line with index 9" in result.output
    edits.write_text("{}")
    result = CliRunner().invoke(main, ["redub", parent, "--edits", str(edits)], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 2

