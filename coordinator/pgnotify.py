"""Replicas on PostgreSQL: the queue's wake-ups and job changes shared through LISTEN/NOTIFY.

Several coordinator processes on one database each keep their long-polling claims and their live
event streams in memory. After a commit, a process hands its `job_available` / `job_changed`
announcements to its bus; a sender thread batches them into `pg_notify` messages on the
`dubfleet_jobs` channel (one transaction per batch, so they arrive together), and a listener
thread in every other process wakes its claim waiters and feeds the changed jobs to its event hub.
Each message names the process that sent it, so a process never acts on its own messages twice
(it already woke its waiters and published to its hub directly).

Both threads keep their own psycopg connection and reconnect with backoff. A listener that was
disconnected may have missed messages: on reconnecting it wakes every waiter and makes the event
streams take a fresh snapshot. Messages are a hint, never the truth: claims are still decided by
the database, and waiters re-check every CLAIM_RECHECK_SECONDS regardless.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Iterable, Mapping

logger = logging.getLogger(__name__)

CHANNEL = "dubfleet_jobs"
MAX_PAYLOAD = 7900  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more
TICK = 0.5  # seconds a thread waits before it checks whether it must stop
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0
AVAILABLE, CHANGED = "a", "c"


def _nothing(*_args: Any) -> None:
    """A handler that ignores its message."""


def libpq_url(sqlalchemy_url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (without the `+psycopg` driver)."""
    from sqlalchemy.engine import make_url
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def encode(origin: str, available: bool, changed: Iterable[str]) -> list[str]:
    """The payloads for one batch: an `a` message, and `c` messages listing job ids."""
    payloads = [f"{origin} {AVAILABLE}"] if available else []
    head = f"{origin} {CHANGED}"
    current = head
    for job_id in changed:
        if len(current) + 1 + len(job_id) > MAX_PAYLOAD:
            payloads.append(current)
            current = head
        current += " " + job_id
    if current != head:
        payloads.append(current)
    return payloads


def decode(payload: str) -> tuple[str, str, list[str]]:
    """(origin, kind, job ids) of a payload; kind is '' for a message this version cannot read."""
    origin, _, rest = payload.partition(" ")
    kind, _, ids = rest.partition(" ")
    return (origin, kind, ids.split()) if kind in (AVAILABLE, CHANGED) else (origin, "", [])


class Outbox:
    """Announcements waiting for the sender thread, coalesced: one flag and a set of job ids."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._available = False
        self._changed: dict[str, None] = {}  # an ordered set

    def put(self, available: bool = False, job_id: str | None = None) -> None:
        """Add an announcement and wake the sender."""
        with self._cond:
            self._available = self._available or available
            if job_id is not None:
                self._changed[job_id] = None
            self._cond.notify()

    def take(self, timeout: float) -> tuple[bool, list[str]]:
        """Everything waiting (after up to `timeout` seconds for something), emptying the box."""
        with self._cond:
            if not (self._available or self._changed):
                self._cond.wait(timeout)
            available, changed = self._available, list(self._changed)
            self._available, self._changed = False, {}
            return available, changed


class ReplicaBus:
    """Shares this process's queue announcements with the coordinators on the same database."""

    def __init__(self, url: str, channel: str = CHANNEL, connect: Callable[..., Any] | None = None):
        self.url = url
        self.channel = channel
        self.origin = uuid.uuid4().hex[:12]
        self.on_available: Callable[[], None] = _nothing
        self.on_changed: Callable[[str], None] = _nothing
        self.on_gap: Callable[[], None] = _nothing
        self.listening = threading.Event()
        self.counts = {"sent": 0, "received": 0, "dropped": 0, "reconnects": 0}
        self._connect_fn = connect
        self._outbox = Outbox()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- this process's side ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`."""
        return bool(self._threads) and not self._stop.is_set()

    def attach(self, on_available: Callable[[], None], on_changed: Callable[[str], None],
               on_gap: Callable[[], None]) -> None:
        """What to do with other processes' messages, and after missing some."""
        self.on_available, self.on_changed, self.on_gap = on_available, on_changed, on_gap

    def announce_available(self) -> None:
        """A job became claimable here (committed): wake the other processes' waiters."""
        if self.running:
            self._outbox.put(available=True)

    def announce_changed(self, job_id: str) -> None:
        """A job changed here (committed): the other processes' event streams should hear."""
        if self.running:
            self._outbox.put(job_id=job_id)

    def start(self) -> None:
        """Start the listener and sender threads (once)."""
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._listen_loop, name="replica-listen", daemon=True),
                         threading.Thread(target=self._send_loop, name="replica-send", daemon=True)]
        for thread in self._threads:
            thread.start()
        logger.info("replica bus %s started on channel %s", self.origin, self.channel)

    def stop(self) -> None:
        """Ask both threads to end; the sender sends what is queued first."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for both threads to end (their connections are closed by then)."""
        for thread in self._threads:
            thread.join(timeout)

    # -- connections --------------------------------------------------------------------------

    def _connect(self) -> Any:
        """A fresh autocommit connection of this bus's own (not from the app's pool)."""
        if self._connect_fn is not None:
            return self._connect_fn()
        import psycopg
        return psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=10,
                               application_name="dubfleet-replica-bus", keepalives=1,
                               keepalives_idle=30, keepalives_interval=10, keepalives_count=3)

    def _backoff(self, delay: float) -> float:
        """Sleep `delay` (or until stopped) and return the next, longer delay."""
        self._stop.wait(delay)
        return min(delay * 2, BACKOFF_MAX)

    # -- the listener -------------------------------------------------------------------------

    def _listen_loop(self) -> None:
        """Listen until stopped, reconnecting with backoff; after a gap, tell `on_gap`."""
        delay, connected_before = BACKOFF_MIN, False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self.listening.set()
                    if connected_before:
                        self.counts["reconnects"] += 1
                        logger.info("replica bus: listening again; waking waiters and streams")
                        self._safely(self.on_gap)
                    connected_before, delay = True, BACKOFF_MIN
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=TICK):
                            self._deliver(note.payload)
            except Exception as exc:  # psycopg.Error mostly; never let the thread die
                self.listening.clear()
                if self._stop.is_set():
                    break
                logger.warning("replica bus: listener lost its connection (%s); again in %.1fs",
                               exc, delay)
                delay = self._backoff(delay)
        self.listening.clear()

    def _deliver(self, payload: str) -> None:
        """Act on one message from another process (our own were handled when we sent them)."""
        origin, kind, job_ids = decode(payload)
        if origin == self.origin or not kind:
            return
        self.counts["received"] += 1
        if kind == AVAILABLE:
            self._safely(self.on_available)
        for job_id in job_ids:
            self._safely(self.on_changed, job_id)

    @staticmethod
    def _safely(handler: Callable[..., None], *args: Any) -> None:
        """Call a handler; a failure is logged and never stops the listener."""
        try:
            handler(*args)
        except Exception:
            logger.exception("replica bus: handler %s failed", getattr(handler, "__name__", handler))

    # -- the sender ---------------------------------------------------------------------------

    def _send_loop(self) -> None:
        """Send batches until stopped (then whatever is still queued), reconnecting as needed."""
        conn, delay = None, BACKOFF_MIN
        try:
            while True:
                stopping = self._stop.is_set()
                available, changed = self._outbox.take(0 if stopping else TICK)
                if available or changed:
                    conn, sent = self._send(conn, encode(self.origin, available, changed))
                    delay = BACKOFF_MIN if sent else self._backoff(delay)
                if stopping:
                    break
        finally:
            if conn is not None:
                conn.close()

    def _send(self, conn: Any, payloads: list[str]) -> tuple[Any, bool]:
        """Send `payloads` in one transaction (trying a fresh connection once); drop on failure."""
        for attempt in (1, 2):
            try:
                conn = conn if conn is not None and not conn.closed else self._connect()
                with conn.transaction():
                    for payload in payloads:
                        conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
                self.counts["sent"] += len(payloads)
                return conn, True
            except Exception as exc:
                if conn is not None:
                    conn.close()
                conn = None
                if attempt == 2:
                    self.counts["dropped"] += len(payloads)
                    logger.warning("replica bus: %d message(s) not sent (%s); other replicas "
                                   "re-check on their own", len(payloads), exc)
        return None, False


def replica_bus(config: Mapping[str, Any]) -> ReplicaBus | None:
    """The bus for a coordinator on PostgreSQL (None on SQLite, or with REPLICA_NOTIFY off)."""
    url = str(config.get("SQLALCHEMY_DATABASE_URI") or "")
    if not url.startswith("postgresql") or not config.get("REPLICA_NOTIFY", True):
        return None
    return ReplicaBus(url)
