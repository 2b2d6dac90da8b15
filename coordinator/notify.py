"""Wake-ups for long-polling claims, and the queue's event hooks."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .events import EventHub
    from .pgnotify import ReplicaBus

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Waiters retry at least this often even without a wake-up (CLAIM_RECHECK_SECONDS): backoffs
# expire without an event, and a wake-up from another replica may have been missed.
POLL_SECONDS = 1.0


class QueueEvents(Protocol):
    """What the queue functions announce: `job_ending` inside a terminal transition's
    transaction (before its commit), the others after the commit."""

    def job_ending(self, session: "Session", job_id: str, callback_url: str | None, status: str) -> None:
        """A job is reaching a terminal status in `session`'s open transaction: record what must
        commit with it (the webhook delivery row). Must not commit or roll back."""

    def job_available(self) -> None:
        """A job became claimable (submitted, requeued, released)."""

    def job_finished(self, job_id: str, callback_url: str | None, status: str, kind: str) -> None:
        """A job reached a terminal status (once per transition, never for a repeated call)."""

    def job_changed(self, job_id: str) -> None:
        """A job's status, stage or progress changed (live event streams)."""


class NullEvents:
    """Events that go nowhere (tests, CLI commands)."""

    def job_ending(self, session: "Session", job_id: str, callback_url: str | None, status: str) -> None:
        """Ignore."""

    def job_available(self) -> None:
        """Ignore."""

    def job_finished(self, job_id: str, callback_url: str | None, status: str, kind: str) -> None:
        """Ignore."""

    def job_changed(self, job_id: str) -> None:
        """Ignore."""


class WebhookHook(Protocol):
    """What the events need of coordinator.webhooks.WebhookDispatcher."""

    wake: threading.Event

    def stage(self, session: "Session", job_id: str, url: str, status: str) -> None:
        """Insert the ending's delivery row in the open transaction."""


class ClaimNotifier:
    """A condition variable with a generation counter, and a cap on concurrent waiters."""

    def __init__(self, max_waiters: int, recheck: float = POLL_SECONDS):
        self.max_waiters = max_waiters
        self.recheck = recheck
        self._cond = threading.Condition()
        self._generation = 0
        self._waiters = 0
        self._closed = False

    def close(self) -> None:
        """Shutting down: end every long poll now (they answer 204) and take no new waiters."""
        with self._cond:
            self._closed = True
            self.max_waiters = 0
            self._generation += 1
            self._cond.notify_all()

    @property
    def waiters(self) -> int:
        """How many claims are waiting now."""
        return self._waiters

    def notify(self) -> None:
        """Wake every waiter: something may be claimable."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Take a waiter slot; yields False (and takes none) when all are in use."""
        with self._cond:
            granted = self._waiters < self.max_waiters
            if granted:
                self._waiters += 1
        try:
            yield granted
        finally:
            if granted:
                with self._cond:
                    self._waiters -= 1

    def wait_for(self, attempt: Callable[[], T | None], seconds: float) -> T | None:
        """Call `attempt` now and after every wake-up (or `recheck` seconds) until it returns a value."""
        deadline = time.monotonic() + seconds
        while True:
            with self._cond:
                generation = self._generation
            result = attempt()
            remaining = deadline - time.monotonic()
            if result is not None or remaining <= 0 or self._closed:
                return result
            with self._cond:
                if self._generation == generation:
                    self._cond.wait(min(self.recheck, remaining))


class AppEvents:
    """Production events: wake claim waiters, count finished jobs, send completion callbacks,
    feed the live event streams, and (on PostgreSQL) tell the other replicas.

    `job_ending` and `job_finished` stay local: only the process that commits a job's terminal
    transition hears them. `job_ending` records the ending's webhook delivery (a unique row) in
    that transaction, so a crash after the commit cannot lose it; `job_finished` wakes the
    delivery loop.
    """

    def __init__(self, notifier: ClaimNotifier,
                 send_callback: "WebhookHook | None",
                 on_finished: Callable[[str, str, str], None] | None = None,
                 hub: EventHub | None = None, bus: ReplicaBus | None = None):
        self.notifier = notifier
        self.send_callback = send_callback
        self.on_finished = on_finished
        self.hub = hub
        self.bus = bus
        if bus is not None:
            bus.attach(notifier.notify, self._publish, self._missed)

    def start(self) -> None:
        """Serving: start sharing announcements with the other replicas (when there is a bus)."""
        if self.bus is not None:
            self.bus.start()

    def stop(self, timeout: float) -> None:
        """Stopped serving: flush and stop the replica bus, waiting up to `timeout` seconds."""
        if self.bus is not None:
            self.bus.stop()
            self.bus.join(timeout)

    def close(self) -> None:
        """Shutting down: end the long polls and the event streams."""
        self.notifier.close()
        if self.hub is not None:
            self.hub.close()

    def _publish(self, job_id: str) -> None:
        """Send a job's new state to this process's event streams."""
        if self.hub is not None:
            self.hub.publish(job_id)

    def _missed(self) -> None:
        """Announcements from other replicas may have been lost: wake everyone, resnapshot."""
        self.notifier.notify()
        if self.hub is not None:
            self.hub.lost()

    def job_changed(self, job_id: str) -> None:
        """Send the job's new state to the event streams, here and on the other replicas."""
        self._publish(job_id)
        if self.bus is not None:
            self.bus.announce_changed(job_id)

    def job_available(self) -> None:
        """Wake the long-polling claims, here and on the other replicas."""
        self.notifier.notify()
        if self.bus is not None:
            self.bus.announce_available()

    def job_ending(self, session: "Session", job_id: str, callback_url: str | None, status: str) -> None:
        """Record the job's webhook delivery in the terminal transition (when it has a
        callback_url and webhooks are on)."""
        if callback_url and self.send_callback is not None:
            self.send_callback.stage(session, job_id, callback_url, status)

    def job_finished(self, job_id: str, callback_url: str | None, status: str, kind: str) -> None:
        """Count the ending (metrics) and wake the webhook delivery loop for its row."""
        if self.on_finished is not None:
            self.on_finished(job_id, status, kind)
        if callback_url and self.send_callback is not None:
            self.send_callback.wake.set()
