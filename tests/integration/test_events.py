"""Live updates (Server-Sent Events) against a real waitress coordinator and real workers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from typing import Iterator

import pytest
import requests

from dubfleet.api import parse_sse
from dubfleet.local import BIN
from tests.integration.procs import Api, start_worker

pytestmark = pytest.mark.integration

# A short heartbeat so keepalives (and a closed client's freed slot) show up quickly.
ENV = {"EVENT_HEARTBEAT_SECONDS": "0.5", "RETRY_BACKOFF_SECONDS": "0.2"}


@pytest.fixture
def live(coordinator_factory):
    """A coordinator, and API sessions of two clients."""
    coord = coordinator_factory(env=ENV).start()
    return coord, Api(coord.url, coord.create_key("client", "alice")), Api(
        coord.url, coord.create_key("client", "bob"))


def open_stream(api: Api, path: str, last_event_id: str | None = None) -> requests.Response:
    """GET an event stream (headers received: the server holds the stream's slot)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return api.get(path, stream=True, headers=headers, timeout=(10, 30))


def messages(resp: requests.Response) -> Iterator[tuple[str, dict]]:
    """(id, data) of each `job` message as it arrives."""
    resp.encoding = "utf-8"
    for message in parse_sse(resp.iter_lines(chunk_size=None, decode_unicode=True)):
        assert message.event == "job"
        yield message.id, json.loads(message.data)


def submit(api: Api, **options) -> str:
    return api.submit_bytes(b"payload" * 100, options=json.dumps(options))["job_id"]


def test_a_job_stream_delivers_its_changes_in_order_and_ends_at_completed(live, workers, tmp_path):
    coord, alice, _ = live
    job_id = submit(alice, delay=4)
    resp = open_stream(alice, f"/jobs/{job_id}/events")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["X-Accel-Buffering"] == "no"
    stream = messages(resp)
    first_id, first = next(stream)  # arrives while the stream stays open: flushed at once
    assert first["id"] == job_id and first["status"] == "queued" and first["queue_position"] == 1
    assert {"kind", "stage", "progress", "eta_seconds", "message", "waiting_for",
            "updated_at"} <= first.keys()
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo", "--burst"))
    rest = list(stream)  # ends by itself after the terminal message
    statuses = [data["status"] for _, data in rest]
    assert statuses[-1] == "completed" and statuses.count("completed") == 1
    assert "running" in statuses and statuses.index("running") < statuses.index("completed")
    ids = [int(first_id), *(int(event_id) for event_id, _ in rest)]
    assert ids == sorted(ids)
    progress = [data["progress"] for _, data in rest]
    assert all(0 <= p <= 1 for p in progress) and progress == sorted(progress)
    assert any(0 < data["progress"] < 1 for _, data in rest if data["status"] == "running")
    assert rest[-1][1]["progress"] == 1 and rest[-1][1]["main_artifact"] == "result"


def test_a_finished_job_stream_sends_its_state_and_ends(live, workers, tmp_path):
    coord, alice, _ = live
    job_id = submit(alice, fail="permanent")
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo", "--burst"))
    alice.wait_status(job_id, {"failed"})
    resp = open_stream(alice, f"/jobs/{job_id}/events")
    [(event_id, data)] = list(messages(resp))
    assert data["status"] == "failed" and "permanent" in data["error"]
    # EventSource reconnects after the end: a resume past the last message is a 204 (it stops)
    assert open_stream(alice, f"/jobs/{job_id}/events", event_id).status_code == 204


def test_resume_with_last_event_id_replays_what_was_missed(live):
    _, alice, bob = live
    watcher = open_stream(alice, "/jobs/events")  # alice's jobs: no snapshot yet (none open)
    feed = messages(watcher)
    one = submit(alice)
    submit(bob)  # not alice's: never in her stream
    two = submit(alice)
    (first_id, first), (second_id, second) = next(feed), next(feed)
    assert (first["id"], second["id"]) == (one, two) and int(first_id) < int(second_id)
    watcher.close()

    resumed = messages(open_stream(alice, "/jobs/events", first_id))
    assert next(resumed) == (second_id, second)  # only what came after the id it had
    assert alice.request("DELETE", f"/jobs/{one}").status_code == 200
    event_id, data = next(resumed)
    assert data["id"] == one and data["status"] == "cancelled" and int(event_id) > int(second_id)

    for unusable in ("999999999", "not-a-number"):  # unknown or foreign: a fresh snapshot
        snap = messages(open_stream(alice, "/jobs/events", unusable))
        event_id, data = next(snap)
        assert data["id"] == two and data["status"] == "queued"  # the only open job of hers


def test_streams_are_private_and_need_a_key(live):
    coord, alice, bob = live
    job_id = submit(alice)
    resp = bob.get(f"/jobs/{job_id}/events", timeout=10)
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    assert bob.get(f"/jobs/{'0' * 32}/events", timeout=10).status_code == 404
    assert bob.get("/jobs/not-a-job-id/events", timeout=10).status_code == 404
    for path in (f"/jobs/{job_id}/events", "/jobs/events"):
        resp = requests.get(coord.url + path, timeout=10)
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    resp = bob.request("DELETE", "/jobs/events", timeout=10)  # not a job named "events"
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]
    bobs = messages(open_stream(bob, "/jobs/events"))
    mine = submit(bob)
    assert next(bobs)[1]["id"] == mine  # alice's job (queued before) never appeared


def test_keepalive_comments_on_a_quiet_stream(live):
    _, alice, _ = live
    resp = open_stream(alice, "/jobs/events")
    resp.encoding = "utf-8"
    lines = resp.iter_lines(chunk_size=None, decode_unicode=True)
    assert ": keepalive" in (next(lines) for _ in range(10))


def test_streams_past_the_cap_get_503_with_retry_after(coordinator_factory):
    coord = coordinator_factory(env={**ENV, "MAX_EVENT_STREAMS": "1"}).start()
    alice = Api(coord.url, coord.create_key("client", "alice"))
    job_id = submit(alice)
    held = open_stream(alice, "/jobs/events")
    for path in ("/jobs/events", f"/jobs/{job_id}/events"):
        refused = alice.get(path, timeout=10)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"] == "service_unavailable"
    assert alice.get(f"/jobs/{job_id}", timeout=10).status_code == 200  # polling still works
    held.close()  # the server notices at its next keepalive and frees the slot
    deadline = time.monotonic() + 30
    while (resp := open_stream(alice, "/jobs/events")).status_code == 503:
        assert time.monotonic() < deadline, "the closed stream's slot was never given back"
        time.sleep(0.2)
    assert resp.status_code == 200


def test_sigterm_ends_open_streams_at_once(live):
    coord, alice, _ = live
    job_id = submit(alice)
    streams = [open_stream(alice, "/jobs/events"), open_stream(alice, f"/jobs/{job_id}/events")]
    received: list[list] = []
    readers = [threading.Thread(target=lambda r=resp: received.append(list(messages(r))))
               for resp in streams]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    coord.send_signal(signal.SIGTERM)  # default grace: 30 s
    assert coord.wait(timeout=15) == 0
    for reader in readers:
        reader.join(10)
    assert time.monotonic() - started < 10, "open event streams held the drain"
    assert sorted(len(got) for got in received) == [1, 1]  # each its snapshot, then a clean end


def test_dubfleet_status_follow(live, workers, tmp_path):
    coord, alice, _ = live
    done, broken = submit(alice, delay=1), submit(alice, fail="permanent")
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo"))
    env = {**os.environ, "DUBFLEET_API_URL": coord.url,
           "DUBFLEET_API_KEY": alice.session.headers["X-API-Key"]}

    def follow(job_id: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "dubfleet"), "status", job_id, "--follow"], env=env,
                              capture_output=True, text=True, timeout=120)

    run = follow(done)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "completed" and len(lines) >= 2
    run = follow(broken)
    assert run.returncode == 1 and "failed" in run.stdout.splitlines()[-1]
    assert f"job {broken} failed" in run.stderr
