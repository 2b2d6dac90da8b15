"""Replicas on PostgreSQL: the LISTEN/NOTIFY bus, advisory locks, and announcing a change once."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from coordinator import jobs
from coordinator.database import exclusive
from coordinator.events import EventHub, id_epoch
from coordinator.extensions import db
from coordinator.notify import AppEvents, ClaimNotifier
from coordinator.pgnotify import MAX_PAYLOAD, Outbox, ReplicaBus, decode, encode, libpq_url, replica_bus
from coordinator.policy import QueuePolicy
from coordinator.validation import NewJob
from shared.protocol import Heartbeat, WorkerInfo
from tests.conftest import POSTGRES_TEST_URL, _postgres

T0 = 1_700_000_000.0
POLICY = QueuePolicy(lease_seconds=60, max_attempts=1, backoff_base=10, backoff_cap=600)
WORKER = WorkerInfo(worker_id="w1", session_id="s1", kinds=("echo",))


# -- messages and the outbox ----------------------------------------------------------------

def test_payloads_round_trip_and_stay_under_the_limit():
    ids = [uuid.uuid4().hex for _ in range(600)]
    payloads = encode("me", True, ids)
    assert decode(payloads[0]) == ("me", "a", [])
    assert len(payloads) > 2 and all(len(p) <= MAX_PAYLOAD for p in payloads)
    assert [i for p in payloads[1:] for i in decode(p)[2]] == ids
    assert encode("me", False, []) == []
    assert decode("other x y") == ("other", "", [])  # a message this version cannot read


def test_outbox_coalesces_until_taken():
    box = Outbox()
    for job_id in ("a", "b", "a"):
        box.put(job_id=job_id)
    box.put(available=True)
    assert box.take(0) == (True, ["a", "b"])
    assert box.take(0) == (False, [])


def test_replica_bus_only_on_postgres():
    assert replica_bus({"SQLALCHEMY_DATABASE_URI": "sqlite:///x.db"}) is None
    url = "postgresql+psycopg://u:p@db:5432/d?sslmode=require"
    assert isinstance(replica_bus({"SQLALCHEMY_DATABASE_URI": url}), ReplicaBus)
    assert replica_bus({"SQLALCHEMY_DATABASE_URI": url, "REPLICA_NOTIFY": False}) is None
    assert libpq_url(url) == "postgresql://u:p@db:5432/d?sslmode=require"


# -- AppEvents: local once, remote through the bus -------------------------------------------

class FakeBus:
    """Records what AppEvents announces and hands back the handlers it attached."""

    def __init__(self) -> None:
        self.announced: list[str] = []

    def attach(self, on_available, on_changed, on_gap) -> None:
        self.on_available, self.on_changed, self.on_gap = on_available, on_changed, on_gap

    def announce_available(self) -> None:
        self.announced.append("available")

    def announce_changed(self, job_id: str) -> None:
        self.announced.append(job_id)


class CountingHub:
    def __init__(self) -> None:
        self.published: list[str] = []
        self.gaps = 0

    def publish(self, job_id: str) -> None:
        self.published.append(job_id)

    def lost(self) -> None:
        self.gaps += 1


def test_app_events_publish_local_changes_once_and_remote_ones_through_the_bus():
    bus, hub, notifier = FakeBus(), CountingHub(), ClaimNotifier(4)
    finished: list[str] = []
    events = AppEvents(notifier, None, lambda job_id, status, kind: finished.append(job_id),
                       hub=hub, bus=bus)
    events.job_changed("here")
    events.job_available()
    events.job_finished("here", None, "completed", "echo")
    assert hub.published == ["here"] and bus.announced == ["here", "available"]
    assert finished == ["here"]  # never shared: callbacks and metrics stay with the committer
    bus.on_changed("there")
    bus.on_gap()
    assert hub.published == ["here", "there"] and hub.gaps == 1
    assert bus.announced == ["here", "available"]  # a remote change is not echoed back


def test_claim_waiter_wakes_on_remote_announcement_without_recheck():
    notifier = ClaimNotifier(4, recheck=30.0)
    bus = FakeBus()
    AppEvents(notifier, None, hub=None, bus=bus)
    ready = threading.Event()
    calls: list[float] = []

    def attempt():
        calls.append(time.monotonic())
        return "job" if ready.is_set() else None

    timer = threading.Timer(0.2, lambda: (ready.set(), bus.on_available()))
    timer.start()
    started = time.monotonic()
    assert notifier.wait_for(attempt, 20.0) == "job"
    assert time.monotonic() - started < 10 and len(calls) == 2  # woken, not re-checked


def test_hub_ids_from_another_epoch_get_a_snapshot_and_lost_changes_resnapshot():
    class Views:
        def one(self, job_id):
            return 1, {"id": job_id, "status": "running"}

        def open_jobs(self, owner):
            return []

    first = id_epoch()
    hub = EventHub(Views(), max_streams=4, first_id=first)
    sub = hub.open(lambda e: True)
    hub.publish("a")
    assert sub.read(0)[0].id == first + 1
    assert sub.resume(first - 5) is None and sub.resume(5) is None  # another replica's ids
    assert sub.resume(first + 1) == []
    hub.lost()
    assert sub.read(0) is None  # missed changes: take a snapshot


# -- on the local PostgreSQL -------------------------------------------------------------------

def _bus(channel: str, connections: list | None = None) -> ReplicaBus:
    """A bus on the test database (recording its connections when asked)."""
    import psycopg

    def connect():
        conn = psycopg.connect(libpq_url(POSTGRES_TEST_URL), autocommit=True, connect_timeout=5)
        if connections is not None:
            connections.append(conn)
        return conn
    return ReplicaBus(POSTGRES_TEST_URL, channel=channel, connect=connect)


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


class Recorder:
    def __init__(self) -> None:
        self.available, self.changed, self.gaps = 0, [], 0

    def attach_to(self, bus: ReplicaBus) -> "Recorder":
        bus.attach(self._available, self.changed.append, self._gap)
        return self

    def _available(self) -> None:
        self.available += 1

    def _gap(self) -> None:
        self.gaps += 1


@pytest.fixture
def bus_pair():
    """Two started buses (two "replicas") on one private channel; stopped at teardown."""
    _postgres("SELECT 1")  # skips when PostgreSQL is unreachable
    channel = f"dubfleet_test_{uuid.uuid4().hex[:12]}"
    listener_conns: list = []
    a, b = _bus(channel), _bus(channel, listener_conns)
    got_a, got_b = Recorder().attach_to(a), Recorder().attach_to(b)
    for bus in (a, b):
        bus.start()
    assert _wait(lambda: a.listening.is_set() and b.listening.is_set())
    yield a, b, got_a, got_b, listener_conns
    for bus in (a, b):
        bus.stop()
        bus.join(5)
    assert not any(t.is_alive() for bus in (a, b) for t in bus._threads)


@pytest.mark.postgres
def test_bus_delivers_to_other_replicas_only(bus_pair):
    a, b, got_a, got_b, _ = bus_pair
    a.announce_available()
    for job_id in ("j1", "j2", "j1"):
        a.announce_changed(job_id)
    assert _wait(lambda: got_b.available >= 1 and set(got_b.changed) == {"j1", "j2"})
    b.announce_changed("j3")
    assert _wait(lambda: got_a.changed == ["j3"])
    time.sleep(0.3)
    assert got_a.available == 0 and "j1" not in got_a.changed  # nothing of its own came back
    assert got_b.changed.count("j3") == 0


@pytest.mark.postgres
def test_listener_reconnects_and_reports_the_gap(bus_pair):
    a, b, _, got_b, conns = bus_pair
    victims = [c.info.backend_pid for c in conns if not c.closed]
    _postgres("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (%s)"
              % ",".join(map(str, victims)))
    assert _wait(lambda: got_b.gaps == 1, timeout=20)
    assert _wait(lambda: b.listening.is_set())
    a.announce_changed("after")
    assert _wait(lambda: "after" in got_b.changed, timeout=20)


@pytest.mark.postgres
def test_unstarted_bus_keeps_nothing():
    bus = _bus("dubfleet_unused")
    bus.announce_changed("x")
    bus.announce_available()
    assert bus._outbox.take(0) == (False, [])


@pytest.fixture
def twin_apps(app_factory):
    """Two coordinator apps ("replicas") on one PostgreSQL schema."""
    schema = f"dubfleet_test_{uuid.uuid4().hex[:12]}"
    _postgres(f"CREATE SCHEMA {schema}")
    options = {"connect_args": {"options": f"-c search_path={schema}"}}
    apps = [app_factory(DATABASE_URL=POSTGRES_TEST_URL, SQLALCHEMY_ENGINE_OPTIONS=options)
            for _ in range(2)]
    yield apps
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    _postgres(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.postgres
def test_advisory_lock_lets_one_replica_at_a_time(twin_apps):
    first, second = twin_apps
    with first.app_context():
        engine_a = db.engine
    with second.app_context():
        engine_b = db.engine
    with exclusive(engine_a, "reap") as mine:
        assert mine
        with exclusive(engine_b, "reap") as theirs, exclusive(engine_b, "sweep") as other_task:
            assert not theirs and other_task
    with exclusive(engine_b, "reap") as now_theirs:
        assert now_theirs


def test_advisory_lock_is_a_no_op_on_sqlite(app):
    with app.app_context():
        with exclusive(db.engine, "reap") as a, exclusive(db.engine, "reap") as b:
            assert a and b


class Finished:
    def __init__(self) -> None:
        self.finished: list[str] = []
        self.changed: list[str] = []

    def job_available(self) -> None:
        pass

    def job_changed(self, job_id: str) -> None:
        self.changed.append(job_id)

    def job_ending(self, session, job_id, callback_url, status) -> None:
        pass

    def job_finished(self, job_id, callback_url, status, kind) -> None:
        self.finished.append(job_id)


@pytest.mark.postgres
def test_concurrent_reaps_on_two_replicas_announce_each_job_once(twin_apps):
    first, second = twin_apps
    with first.app_context():
        ids = []
        for _ in range(20):
            job, _ = jobs.submit(db.session, NewJob(kind="echo", callback_url="https://example.com/cb",
                                                     max_attempts=1),
                                 owner_key_id=1, input_size=3, input_sha256="0" * 64, now=T0)
            ids.append(job.id)
        for _ in ids:
            claimed = jobs.claim_next(db.session, WORKER, POLICY, now=T0)
            jobs.heartbeat(db.session, claimed.job["id"], claimed.lease_token, Heartbeat(), POLICY,
                           now=T0 + 1)
        db.session.remove()
    sinks = [Finished(), Finished()]
    barrier = threading.Barrier(2)

    def reap(app, sink) -> None:
        with app.app_context():
            barrier.wait()
            jobs.reap(db.session, events=sink, now=T0 + 1000)
            db.session.remove()

    threads = [threading.Thread(target=reap, args=pair) for pair in zip(twin_apps, sinks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    both = sinks[0].finished + sinks[1].finished
    assert sorted(both) == sorted(ids)  # every job failed (attempts used up) and announced once
    with second.app_context():
        statuses = set(db.session.scalars(sa.text("SELECT status FROM jobs")))
        db.session.remove()
    assert statuses == {"failed"}
