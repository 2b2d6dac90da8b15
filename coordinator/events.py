"""Live job events: an in-process hub that turns the queue's changes into Server-Sent Events.

The queue announces `job_changed(job_id)` after each commit. The hub loads that job's small view
once (not once per listener), gives it the next integer id and keeps it in a bounded ring buffer.
Every open stream is a cursor into that buffer: it sleeps on one condition variable, takes the
events after its cursor that it may see, and gets a fresh snapshot instead when its cursor fell
out of the buffer (a slow reader, or a `Last-Event-ID` too old to resume). Nothing polls the
database per stream. While no stream is open a change is not loaded at all: its id is spent
unbuffered, so a later resume across it gets a snapshot.

With several coordinator replicas on PostgreSQL, changes committed by the others arrive through
`pgnotify.ReplicaBus` and are published here the same way; each hub numbers its events from a
random epoch, so an id from another replica never resumes at the wrong place.
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from flask import Flask
from sqlalchemy import select

from shared.protocol import JOB_EVENT_FIELDS

from .database import read_only
from .extensions import db
from .jobs import QUEUED, RUNNING, TERMINAL
from .models import Job

logger = logging.getLogger(__name__)

BUFFER_SIZE = 1024  # recent events kept for Last-Event-ID resume and slow readers
RETRY_MS = 3000  # how long EventSource waits before it reconnects
KEEPALIVE = b": keepalive\n\n"


@dataclass(frozen=True)
class JobEvent:
    """One message: its id in the hub's sequence, whose job it is and the job's state."""

    id: int
    owner_key_id: int
    data: Mapping[str, Any]

    @property
    def terminal(self) -> bool:
        """True when the job has ended (completed, failed or cancelled)."""
        return self.data.get("status") in TERMINAL


Loaded = tuple[int, dict[str, Any]]  # (owner key id, message data)


def id_epoch() -> int:
    """A random first event id for a process's hub, so that an id another replica (or this
    process before a restart) gave lies outside this hub's range and gets a snapshot, never a
    wrong resume. Ids stay below 2**53 (exact in JavaScript)."""
    return secrets.randbelow(2 ** 20) << 32


class ViewSource(Protocol):
    """Where the hub reads job states (the database; a dict in unit tests)."""

    def one(self, job_id: str) -> Loaded | None:
        """The job's owner and message data; None when there is no such job."""

    def open_jobs(self, owner_key_id: int | None) -> list[Loaded]:
        """The queued and running jobs of an owner (None: everyone's), newest first."""


def event_data(view: Mapping[str, Any]) -> dict[str, Any]:
    """A message's data from a job view (`serializers.job_view`)."""
    data = {"id": view["job_id"], "progress": round(float(view["progress"] or 0) / 100.0, 4)}
    data.update({name: view[name] for name in JOB_EVENT_FIELDS})
    return data


def sse_message(event_id: int, data: Mapping[str, Any]) -> bytes:
    """One `event: job` message (JSON escapes newlines, so `data` stays one line)."""
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: job\ndata: {payload}\n\n".encode()


class DatabaseViews:
    """Job states read from the app's database, each read in its own short transaction."""

    def __init__(self, app: Flask, snapshot_limit: int):
        self.app = app
        self.snapshot_limit = snapshot_limit

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A session of a fresh app context (never the caller's request transaction)."""
        with self.app.app_context(), read_only():
            try:
                yield db.session
            finally:
                db.session.rollback()
                db.session.remove()

    def one(self, job_id: str) -> Loaded | None:
        """The job's owner and message data."""
        from .serializers import job_view
        with self._session() as session:
            job = session.get(Job, job_id)
            return None if job is None else (job.owner_key_id, event_data(job_view(session, job)))

    def open_jobs(self, owner_key_id: int | None) -> list[Loaded]:
        """The newest `snapshot_limit` queued and running jobs of an owner (None: all)."""
        from .serializers import job_views
        where = [Job.status.in_((QUEUED, RUNNING))]
        if owner_key_id is not None:
            where.append(Job.owner_key_id == owner_key_id)
        with self._session() as session:
            page = list(session.scalars(select(Job).where(*where).order_by(
                Job.created_at.desc(), Job.id.desc()).limit(self.snapshot_limit)))
            return [(job.owner_key_id, event_data(view))
                    for job, view in zip(page, job_views(session, page))]


class EventHub:
    """Fan-out of job changes to the open streams, with a bounded buffer for resume."""

    def __init__(self, source: ViewSource, max_streams: int, buffer_size: int = BUFFER_SIZE,
                 max_per_key: int | None = None, first_id: int = 0):
        self.source = source
        self.max_streams = max_streams
        self.max_per_key = max_streams if max_per_key is None else max_per_key
        self._per_key: dict[object, int] = {}
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._events: deque[JobEvent] = deque(maxlen=buffer_size)
        self._last_id = first_id
        self._lost_upto = first_id  # ids up to this one are not (or no longer) in the buffer
        self._streams = 0
        self.closed = False

    @property
    def last_id(self) -> int:
        """The id of the newest change."""
        return self._last_id

    @property
    def streams(self) -> int:
        """How many streams are open now."""
        return self._streams

    def publish(self, job_id: str) -> None:
        """A job changed (its transaction committed): load its state once and wake the streams.

        Loads run one at a time, so messages leave in the order their rows were read. A failed
        load is logged, never raised: the change itself has been committed.
        """
        with self._load_lock:
            with self._cond:
                if not self._streams:
                    self._skip()
                    return
            try:
                loaded = self.source.one(job_id)
            except Exception:  # the queue call succeeded; its listeners re-read a snapshot
                logger.exception("event hub: could not load job %s", job_id)
                with self._cond:
                    self._skip()
                    self._cond.notify_all()
                return
            if loaded is not None:
                self._append(*loaded)

    def lost(self) -> None:
        """Changes may have been missed (another replica's feed was cut): every open stream
        sends a fresh snapshot instead of resuming."""
        with self._cond:
            self._skip()
            self._cond.notify_all()

    def _skip(self) -> None:
        """Spend an id without buffering it (caller holds the condition)."""
        self._last_id += 1
        self._lost_upto = self._last_id

    def _append(self, owner_key_id: int, data: Mapping[str, Any]) -> None:
        """Buffer a loaded change under the next id and wake every stream."""
        with self._cond:
            if len(self._events) == self._events.maxlen:
                self._lost_upto = max(self._lost_upto, self._events[0].id)
            self._last_id += 1
            self._events.append(JobEvent(self._last_id, owner_key_id, data))
            self._cond.notify_all()

    def open(self, accepts: Callable[[JobEvent], bool], key: object = None) -> Subscription | None:
        """A stream of the events `accepts` takes, from now on; None past `max_streams`, past
        `max_per_key` streams of the same `key` (one caller cannot take every slot), or once the
        hub is closed."""
        with self._cond:
            if self.closed or self._streams >= self.max_streams \
                    or self._per_key.get(key, 0) >= self.max_per_key:
                return None
            self._streams += 1
            self._per_key[key] = self._per_key.get(key, 0) + 1
            return Subscription(self, accepts, self._last_id, key)

    def streams_of(self, key: object) -> int:
        """How many streams `key` has open now."""
        return self._per_key.get(key, 0)

    def _release(self, key: object = None) -> None:
        """A stream closed."""
        with self._cond:
            self._streams -= 1
            left = self._per_key.get(key, 0) - 1
            if left > 0:
                self._per_key[key] = left
            else:
                self._per_key.pop(key, None)

    def close(self) -> None:
        """Shutting down: end every stream now and open no new ones."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _after(self, cursor: int, accepts: Callable[[JobEvent], bool]) -> list[JobEvent] | None:
        """The accepted events after `cursor`, oldest first; None when some of them are gone
        (caller holds the condition)."""
        if cursor < self._lost_upto:
            return None
        newer: list[JobEvent] = []
        for event in reversed(self._events):
            if event.id <= cursor:
                break
            if accepts(event):
                newer.append(event)
        newer.reverse()
        return newer


class Subscription:
    """One open stream's cursor into the hub: read, resume, close."""

    def __init__(self, hub: EventHub, accepts: Callable[[JobEvent], bool], cursor: int,
                 key: object = None):
        self.hub = hub
        self.accepts = accepts
        self.cursor = cursor
        self.key = key
        self.closed = False

    def resume(self, last_event_id: int) -> list[JobEvent] | None:
        """Continue after `last_event_id`: the events since then, or None when that is not
        possible (too old, unknown, or changes were not kept): send a snapshot instead."""
        with self.hub._cond:
            if last_event_id > self.hub._last_id:
                return None
            found = self.hub._after(last_event_id, self.accepts)
            if found is not None:
                self.cursor = self.hub._last_id
            return found

    def read(self, timeout: float) -> list[JobEvent] | None:
        """The next events, waiting up to `timeout` seconds for any ([] when none came or the
        stream is closed); None when the cursor fell out of the buffer: take a snapshot now
        (the cursor then stands at the newest change)."""
        deadline = time.monotonic() + timeout
        with self.hub._cond:
            while not (self.closed or self.hub.closed):
                found = self.hub._after(self.cursor, self.accepts)
                self.cursor = self.hub._last_id
                if found is None or found:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.hub._cond.wait(remaining)
        return []

    @property
    def ended(self) -> bool:
        """True once this stream or the whole hub was closed."""
        return self.closed or self.hub.closed

    def close(self) -> None:
        """Give the stream's slot back (idempotent)."""
        if not self.closed:
            self.closed = True
            self.hub._release(self.key)


@dataclass(frozen=True)
class StreamTiming:
    """How often a stream sends a keepalive comment and how long it may stay open."""

    heartbeat: float
    lifetime: float


def snapshot(subscription: Subscription, load: Callable[[], Sequence[Loaded]]) -> list[JobEvent]:
    """The current state of the stream's jobs as events carrying its cursor's id (read before
    the load, so no change after the cursor is missed)."""
    cursor = subscription.cursor
    return [JobEvent(cursor, owner, data) for owner, data in load()]


class EventStream:
    """The body of one `text/event-stream` reply; `close()` (by the server) frees its slot.

    It starts with `first` (a snapshot, or the events of a resume). A stream `until_terminal`
    (one job's) ends after the first message with a terminal status, or when its job is gone.
    """

    def __init__(self, subscription: Subscription, load: Callable[[], Sequence[Loaded]],
                 timing: StreamTiming, first: list[JobEvent], until_terminal: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.subscription = subscription
        self.load = load
        self.timing = timing
        self.first = first
        self.until_terminal = until_terminal
        self.clock = clock

    def __iter__(self) -> Iterator[bytes]:
        return self._messages()

    def close(self) -> None:
        """The reply is over (sent, or the client went away)."""
        self.subscription.close()

    def _messages(self) -> Iterator[bytes]:
        """retry, the first messages, then changes and keepalives until an end; the slot is
        given back before the reply's last bytes go out (a client may reconnect at once)."""
        deadline = self.clock() + self.timing.lifetime
        sub, events = self.subscription, self.first
        try:
            yield f"retry: {RETRY_MS}\n\n".encode() + _joined(events)
            while not (self._ends_with(events) or sub.ended):
                left = deadline - self.clock()
                if left <= 0:
                    return
                events = sub.read(min(self.timing.heartbeat, left))
                if events is None:  # fell behind the buffer: the state now instead
                    events = self._snapshot()
                    if events is None:
                        return
                if events:
                    yield _joined(events)
                elif not sub.ended:
                    yield KEEPALIVE
        finally:
            sub.close()

    def _snapshot(self) -> list[JobEvent] | None:
        """A fresh snapshot; None when the stream must end (the load failed, or a per-job
        stream's job is gone). A client reconnects by itself and resumes or starts over."""
        try:
            events = snapshot(self.subscription, self.load)
        except Exception:
            logger.exception("event stream: snapshot failed; ending the stream")
            return None
        return None if self.until_terminal and not events else events

    def _ends_with(self, events: list[JobEvent]) -> bool:
        """True when this stream must end after `events`."""
        return self.until_terminal and any(e.terminal for e in events)


def _joined(events: Sequence[JobEvent]) -> bytes:
    """The messages of `events`, in one write."""
    return b"".join(sse_message(event.id, event.data) for event in events)
