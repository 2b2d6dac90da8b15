"""The live event hub: fan-out, ring-buffer resume, snapshots when resume is impossible, slots."""
from __future__ import annotations

import json
import threading

import pytest

from coordinator.events import EventHub, EventStream, StreamTiming, event_data, snapshot, sse_message

ALICE, BOB = 1, 2


class FakeViews:
    """Job states in a dict; counts the loads."""

    def __init__(self) -> None:
        self.jobs: dict[str, tuple[int, dict]] = {}
        self.loads = 0
        self.broken = False

    def set(self, job_id: str, owner: int, status: str, **extra) -> None:
        self.jobs[job_id] = (owner, {"id": job_id, "status": status, **extra})

    def one(self, job_id: str):
        self.loads += 1
        if self.broken:
            raise RuntimeError("database is down")
        return self.jobs.get(job_id)

    def open_jobs(self, owner):
        return [(o, d) for o, d in self.jobs.values()
                if (owner is None or o == owner) and d["status"] in ("queued", "running")]


@pytest.fixture
def views() -> FakeViews:
    return FakeViews()


def change(hub: EventHub, views: FakeViews, job_id: str, owner: int, status: str, **extra) -> None:
    """Commit a change (in the fake) and announce it, as the queue functions do."""
    views.set(job_id, owner, status, **extra)
    hub.publish(job_id)


def only(job_id: str):
    return lambda event: event.data["id"] == job_id


def test_one_load_per_change_fanned_out_to_every_stream(views):
    hub = EventHub(views, max_streams=10)
    first, everything, bobs = hub.open(only("a")), hub.open(lambda e: True), hub.open(
        lambda e: e.owner_key_id == BOB)
    change(hub, views, "a", ALICE, "running", progress=0.5)
    assert views.loads == 1
    [event] = first.read(1)
    assert event.data == {"id": "a", "status": "running", "progress": 0.5} and event.id == hub.last_id
    assert [e.data["id"] for e in everything.read(1)] == ["a"]
    assert bobs.read(0) == []  # alice's job: not bob's to see


def test_events_arrive_in_order_and_the_cursor_moves_on(views):
    hub = EventHub(views, max_streams=10)
    sub = hub.open(only("a"))
    for status in ("queued", "running", "completed"):
        change(hub, views, "a", ALICE, status)
    events = sub.read(1)
    assert [e.data["status"] for e in events] == ["queued", "running", "completed"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[-1].terminal and sub.read(0) == []


def test_read_wakes_up_on_a_change_from_another_thread(views):
    hub = EventHub(views, max_streams=10)
    sub = hub.open(only("a"))
    views.set("a", ALICE, "running")
    publisher = threading.Timer(0.05, hub.publish, args=("a",))
    publisher.start()
    try:
        assert [e.data["status"] for e in sub.read(30)] == ["running"]
    finally:
        publisher.join()


def test_resume_replays_what_came_after_the_last_event_id(views):
    hub = EventHub(views, max_streams=10)
    watcher = hub.open(lambda e: True)  # keeps changes being loaded
    change(hub, views, "a", ALICE, "queued")
    seen = hub.last_id
    change(hub, views, "b", BOB, "queued")
    change(hub, views, "a", ALICE, "running")
    later = hub.open(only("a"))
    assert [e.data["status"] for e in later.resume(seen)] == ["running"]
    assert later.resume(hub.last_id) == []  # up to date: nothing to replay
    assert watcher.read(0)


def test_resume_too_old_or_unknown_asks_for_a_snapshot(views):
    hub = EventHub(views, max_streams=10, buffer_size=2)
    hub.open(lambda e: True)
    for status in ("queued", "running", "running", "completed"):
        change(hub, views, "a", ALICE, status)
    sub = hub.open(only("a"))
    assert sub.resume(1) is None  # fell out of the buffer of 2
    assert [e.data["status"] for e in sub.resume(hub.last_id - 2)] == ["running", "completed"]
    assert sub.resume(hub.last_id + 5) is None  # not an id this hub gave (a restarted server)
    assert snapshot(sub, lambda: views.open_jobs(ALICE)) == []  # ended: not in a list snapshot


def test_changes_without_any_stream_are_not_loaded_and_break_resume(views):
    hub = EventHub(views, max_streams=10)
    change(hub, views, "a", ALICE, "running")
    assert views.loads == 0 and hub.last_id == 1
    sub = hub.open(only("a"))
    assert sub.resume(0) is None  # the change before it was not kept: snapshot instead
    events = snapshot(sub, lambda: [views.jobs["a"]])
    assert [(e.id, e.data["status"]) for e in events] == [(1, "running")]


def test_a_slow_reader_gets_a_snapshot_instead_of_a_gap(views):
    hub = EventHub(views, max_streams=10, buffer_size=3)
    slow = hub.open(lambda e: True)
    for n in range(5):
        change(hub, views, f"j{n}", ALICE, "queued")
    assert slow.read(0) is None  # events it never read were dropped from the buffer
    assert slow.cursor == hub.last_id
    change(hub, views, "j9", ALICE, "queued")
    assert [e.data["id"] for e in slow.read(0)] == ["j9"]


def test_a_failing_load_is_logged_and_forces_a_snapshot(views, caplog):
    hub = EventHub(views, max_streams=10)
    sub = hub.open(only("a"))
    views.set("a", ALICE, "running")
    views.broken = True
    hub.publish("a")  # never raises into the queue call that already committed
    assert "could not load job a" in caplog.text
    assert sub.read(0) is None


def test_slots_are_capped_and_given_back_on_close(views):
    hub = EventHub(views, max_streams=2)
    one, two = hub.open(lambda e: True), hub.open(lambda e: True)
    assert hub.open(lambda e: True) is None and hub.streams == 2
    one.close()
    one.close()  # idempotent
    assert hub.streams == 1
    three = hub.open(lambda e: True)
    assert three is not None and hub.streams == 2
    two.close()
    three.close()
    assert hub.streams == 0


def test_one_key_cannot_take_every_slot(views):
    hub = EventHub(views, max_streams=4, max_per_key=2)
    mine = [hub.open(lambda e: True, key=1) for _ in range(2)]
    assert hub.open(lambda e: True, key=1) is None and hub.streams_of(1) == 2
    other = hub.open(lambda e: True, key=2)  # another client still gets a stream
    assert other is not None and hub.streams == 3
    mine[0].close()
    mine[0].close()  # idempotent: the key's count is given back once
    assert hub.streams_of(1) == 1
    again = hub.open(lambda e: True, key=1)
    assert again is not None
    for sub in (mine[1], again, other):
        sub.close()
    assert hub.streams == 0 and hub.streams_of(1) == hub.streams_of(2) == 0


def test_closing_the_hub_ends_every_stream(views):
    hub = EventHub(views, max_streams=5)
    sub = hub.open(lambda e: True)
    waiter = threading.Thread(target=lambda: sub.read(60))
    waiter.start()
    hub.close()
    waiter.join(10)
    assert not waiter.is_alive() and sub.ended
    assert hub.open(lambda e: True) is None


def test_sse_message_format():
    message = sse_message(7, {"id": "a", "message": "two\nlines"}).decode()
    lines = message.split("\n")
    assert lines[:2] == ["id: 7", "event: job"] and message.endswith("\n\n")
    assert json.loads(lines[2].removeprefix("data: ")) == {"id": "a", "message": "two\nlines"}


def test_event_data_takes_progress_as_a_fraction():
    view = {"job_id": "a", "progress": 42.0, "kind": "echo", "status": "running", "stage": "copy",
            "eta_seconds": 3.0, "message": None, "queue_position": None, "waiting_for": None,
            "updated_at": 1.0, "attempts": 1, "max_attempts": 3, "error": None,
            "cancel_requested": False, "main_artifact": None, "worker_id": "w1",
            "finished_at": None, "options": {"not": "sent"}}
    data = event_data(view)
    assert data["id"] == "a" and data["progress"] == 0.42 and "options" not in data


def _body(stream: EventStream) -> list[bytes]:
    chunks = list(stream)
    stream.close()
    return chunks


def test_a_job_stream_ends_after_the_terminal_message(views):
    hub = EventHub(views, max_streams=5)
    views.set("a", ALICE, "running")
    sub = hub.open(only("a"))
    load = lambda: [views.jobs["a"]]  # noqa: E731
    stream = EventStream(sub, load, StreamTiming(heartbeat=5, lifetime=60), snapshot(sub, load),
                         until_terminal=True)
    chunks = iter(stream)
    assert b'"status":"running"' in next(chunks) and hub.streams == 1
    change(hub, views, "a", ALICE, "completed")
    assert b'"status":"completed"' in next(chunks)
    assert list(chunks) == []
    stream.close()
    assert hub.streams == 0


def test_a_quiet_stream_sends_keepalives_and_ends_at_its_lifetime(views):
    hub = EventHub(views, max_streams=5)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # one "second" per look at the clock
        return now[0]

    sub = hub.open(lambda e: True)
    stream = EventStream(sub, lambda: views.open_jobs(None), StreamTiming(heartbeat=0.001, lifetime=4),
                         [], clock=clock)
    chunks = _body(stream)
    assert chunks[0].startswith(b"retry: ") and set(chunks[1:]) == {b": keepalive\n\n"}
    assert 1 <= len(chunks) - 1 <= 4 and hub.streams == 0


# --- the hub of a real app: fed by the queue functions, reading the real database ------------------

def _submit(client, key: str) -> str:
    reply = client.post("/jobs", query_string={"kind": "echo", "filename": "a.bin"}, data=b"x",
                        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def test_the_app_hub_gets_the_queue_changes_as_documented(app, client, make_key):
    from jsonschema import Draft202012Validator

    from coordinator import get_state
    from coordinator.events import DatabaseViews

    key = make_key("client")
    hub = get_state(app).events.hub
    sub = hub.open(lambda event: True)
    job_id = _submit(client, key)
    [event] = sub.read(0)
    assert event.data["id"] == job_id and event.data["status"] == "queued"
    doc = client.get("/openapi.json").get_json()
    schema = {"$ref": "#/components/schemas/JobEvent", "components": doc["components"]}
    assert not list(Draft202012Validator(schema).iter_errors(event.data))
    assert client.delete(f"/jobs/{job_id}", headers={"X-API-Key": key}).status_code == 200
    [event] = sub.read(0)
    assert event.data["status"] == "cancelled" and event.terminal
    sub.close()

    views = DatabaseViews(app, snapshot_limit=10)
    assert views.one(job_id)[1] == event.data
    open_job = _submit(client, key)
    assert [data["id"] for _, data in views.open_jobs(event.owner_key_id)] == [open_job]
    assert views.open_jobs(event.owner_key_id + 1) == [] and views.one("0" * 32) is None
