"""Run the coordinator on waitress, hardened against hostile clients and drained on SIGTERM.

What this adds to a plain `waitress.serve`:

- connections: up to CONNECTION_LIMIT open at once (checked against the open-file limit, which
  is raised when the hard limit allows), served from one `poll()` loop;
- a header read timeout: a request whose headers are not complete HEADER_TIMEOUT seconds after
  its first byte is answered 408 and its connection closed (slow-header "slowloris" clients);
- JSON errors for what waitress rejects itself (413, 400, 431, 501, 408, 500);
- a graceful drain on SIGTERM/SIGINT: requests whose first byte arrived before the signal are
  finished (bodies still being received included), later ones get 503 `shutting_down`, for at
  most SHUTDOWN_GRACE_SECONDS; a second signal exits at once.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from flask import Flask
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error

from shared.errors import error_payload

from .logthrottle import ThrottledLogger

logger = logging.getLogger(__name__)

# Largest request line + headers (waitress' default is 256 KiB). Our requests carry small
# headers; the longest legitimate one is a raw-body submit whose query string holds `options`
# (<= 16 KB of JSON, <= 48 KB percent-encoded).
MAX_REQUEST_HEADER_BYTES = 96 * 1024
# Seconds the loop may sleep in poll(); bounds how late a signal is noticed.
LOOP_TIMEOUT = 0.25
# Seconds between maintenance passes (idle channels, header timeouts).
MAINTENANCE_INTERVAL = 1
# File descriptors: two per connection (its socket, and the temp file a request body over
# 512 KiB spills to while it is received), a few per request thread (a pooled database
# connection, on SQLite the thread's kept one with its WAL file, an upload temp file), and a
# reserve for everything else (listening socket, database, logs).
FDS_PER_CONNECTION = 2
FDS_PER_THREAD = 5
FD_RESERVE = 256
RETRY_AFTER_SECONDS = 5
# Seconds to wait for the reaper thread and for pending callbacks at exit.
BACKGROUND_STOP_SECONDS = 5.0

_ERROR_CODES = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large",
                431: "request_header_fields_too_large", 500: "internal_error",
                501: "not_implemented", 503: "shutting_down"}


class RequestTimeout(Error):
    """The request's headers did not arrive within HEADER_TIMEOUT."""

    code = 408
    reason = "Request Timeout"


class ShuttingDown(Error):
    """The request started after the shutdown signal."""

    code = 503
    reason = "Service Unavailable"


class Stoppable(Protocol):
    """A background thread with a `stop()` method (the reaper, which also sweeps orphans)."""

    def stop(self) -> None:
        """Ask the thread to end."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""


@dataclass(frozen=True)
class ServeSettings:
    """Everything `serve` needs besides the app."""

    host: str
    port: int
    threads: int
    connection_limit: int
    channel_timeout: float
    header_timeout: float
    shutdown_grace: float
    max_body: int

    @classmethod
    def from_app(cls, app: Flask, host: str, port: int, max_body: int) -> "ServeSettings":
        """Read the settings from the app's config."""
        config = app.config
        return cls(host=host, port=port, threads=int(config["THREADS"]),
                   connection_limit=int(config["CONNECTION_LIMIT"]),
                   channel_timeout=float(config["CHANNEL_TIMEOUT"]),
                   header_timeout=float(config["HEADER_TIMEOUT"]),
                   shutdown_grace=float(config["SHUTDOWN_GRACE_SECONDS"]), max_body=max_body)


class Drain:
    """The shutdown signal, when the drain began (monotonic seconds), app calls running."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self.signum = 0
        self.running = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True once the drain began."""
        return self.started_at is not None

    def rejects(self, request_started_at: float) -> bool:
        """True for a request whose first byte arrived after the drain began."""
        return self.started_at is not None and request_started_at >= self.started_at

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Count one app call as running for the duration of the block."""
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


def error_body(code: int, message: str) -> bytes:
    """The JSON error body for an HTTP status."""
    payload = error_payload(_ERROR_CODES.get(code, "error"), message)
    return json.dumps(payload, separators=(",", ":")).encode()


def _write_json(task: Any, error: Error, headers: Iterable[tuple[str, str]] = ()) -> None:
    """Answer a waitress task with `error` as JSON and close the connection after it."""
    body = error_body(error.code, f"{error.reason}: {error.body}")
    task.status = f"{error.code} {error.reason}"
    task.response_headers.extend([("Content-Type", "application/json"), *headers])
    task.set_close_on_finish()
    task.content_length = len(body)
    task.complete = True
    task.write(body)


class StampedParser(HTTPRequestParser):
    """A request parser that remembers when the request's first byte arrived."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started_at = time.monotonic()
        self.header_clock = self.started_at  # pushed forward while the channel is busy

    @property
    def has_content(self) -> bool:
        """False while only blank lines (allowed between requests) have arrived."""
        return self.headers_finished or bool(self.header_plus.strip())


class JsonErrorTask(ErrorTask):
    """waitress' own error responses (bad framing, limits) as `{"error", "message"}` JSON."""

    def execute(self) -> None:
        """Write the request's error as JSON."""
        error = self.request.error
        retry = [("Retry-After", str(RETRY_AFTER_SECONDS))] if error.code == 503 else []
        _write_json(self, error, retry)


class DrainingTask(WSGITask):
    """Runs the app, except for requests that started after the shutdown signal (503)."""

    def execute(self) -> None:
        """Call the app, or answer 503 `shutting_down` to a request that came too late."""
        drain = self.channel.server.drain
        if drain.rejects(self.request.started_at):
            _write_json(self, ShuttingDown("the coordinator is shutting down; retry shortly"),
                        [("Retry-After", str(RETRY_AFTER_SECONDS))])
            return
        with drain.tracking():
            super().execute()

    def build_response_header(self) -> bytes:
        """While draining, every response closes its connection."""
        if self.channel.server.drain.active:
            self.set_close_on_finish()
        return super().build_response_header()

    def set_close_on_finish(self) -> None:
        """Close after this response, except for a bodiless 204/304 on a keep-alive HTTP/1.1
        connection: waitress closes after any response without Content-Length, which a 204 must
        not carry (RFC 9110 8.6), so every empty claim cost the worker a new connection."""
        if self._keeps_bodiless_open():
            return
        super().set_close_on_finish()

    def _keeps_bodiless_open(self) -> bool:
        """Whether this is a 204/304 reply whose connection may stay open: HTTP/1.1, the client
        did not ask to close, and the server is not draining."""
        return (self.status[:3] in ("204", "304") and self.version == "1.1" and not self.wrote_header
                and self.request.headers.get("CONNECTION", "").lower() != "close"
                and not self.channel.server.drain.active)


class HardenedChannel(HTTPChannel):
    """An HTTP channel with stamped requests, JSON errors and a header deadline."""

    task_class = DrainingTask
    error_task_class = JsonErrorTask
    parser_class = StampedParser

    def busy_with(self, since: float) -> bool:
        """True while a request that started before `since` is unfinished or unsent."""
        if self.total_outbufs_len or any(r.started_at < since for r in list(self.requests)):
            return True
        pending = self.request
        return pending is not None and pending.has_content and pending.started_at < since

    def check_header_deadline(self, now: float, timeout: float) -> None:
        """Close this channel if its current request's headers are overdue (main thread)."""
        pending = self.request
        if pending is None or pending.headers_finished or pending.completed:
            return
        if self.requests or self.total_outbufs_len:  # an earlier request is being answered
            pending.header_clock = now
            return
        if now - pending.header_clock < timeout:
            return
        if not pending.has_content:  # an idle keep-alive connection: close without a reply
            self.will_close = True
            return
        logger.info("closing %s: request headers not complete after %.0fs", self.addr[0], timeout)
        self.fail_pending(RequestTimeout(f"request headers not complete within {timeout:g}s"))

    def fail_pending(self, error: Error) -> None:
        """Answer the request being received with `error`; the connection closes after it."""
        with self.requests_lock:
            if self.requests or self.will_close or self.close_when_flushed or self.request is None:
                return
            self.request.close()
            failed = self.parser_class(self.adj)
            failed.parse_header(b"GET / HTTP/1.0\r\n")
            failed.error = error
            failed.completed = True
            self.request = None
            self.requests.append(failed)
            self.server.add_task(self)


class HardenedServer(TcpWSGIServer):
    """A waitress TCP server whose maintenance also enforces the header deadline."""

    channel_class = HardenedChannel

    def __init__(self, application: Any, *, map: dict, adj: Adjustments, sockinfo: tuple,
                 dispatcher: ThreadedTaskDispatcher, drain: Drain, header_timeout: float) -> None:
        self.drain = drain
        self.header_timeout = header_timeout
        super().__init__(application, map=map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)

    def maintenance(self, now: float) -> None:
        """Close idle channels (waitress) and channels whose headers are overdue."""
        super().maintenance(now)
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            channel.check_header_deadline(clock, self.header_timeout)

    def busy_channels(self, since: float) -> int:
        """How many channels still hold work that started before `since`."""
        return sum(1 for channel in list(self.active_channels.values()) if channel.busy_with(since))


def fd_budget(connection_limit: int, threads: int) -> int:
    """Raise the open-file limit if needed and allowed; return the connection limit it permits."""
    try:
        import resource
    except ImportError:  # not a Unix
        return connection_limit
    others = FD_RESERVE + FDS_PER_THREAD * threads
    needed = FDS_PER_CONNECTION * connection_limit + others
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connection_limit
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.info("raised the open-file limit from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit: %s", exc)
    if soft >= needed:
        return connection_limit
    allowed = max(16, (soft - others) // FDS_PER_CONNECTION)
    logger.warning("open-file limit (ulimit -n) is %d, CONNECTION_LIMIT=%d needs about %d: "
                   "accepting at most %d connections (raise `ulimit -n` to allow more)",
                   soft, connection_limit, needed, allowed)
    return allowed


def _adjustments(settings: ServeSettings, connection_limit: int) -> Adjustments:
    """waitress' settings for the hardened server."""
    return Adjustments(host=settings.host, port=settings.port, threads=settings.threads,
                       ident="dubfleet", connection_limit=connection_limit,
                       channel_timeout=max(1, math.ceil(settings.channel_timeout)),
                       cleanup_interval=MAINTENANCE_INTERVAL,
                       max_request_header_size=MAX_REQUEST_HEADER_BYTES,
                       max_request_body_size=settings.max_body, asyncore_use_poll=True,
                       expose_tracebacks=False)


def create_servers(app: Any, settings: ServeSettings, drain: Drain,
                   socket_map: dict) -> list[HardenedServer]:
    """Bind one hardened server per listen address, sharing one map and thread pool."""
    adj = _adjustments(settings, fd_budget(settings.connection_limit, settings.threads))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.queue_logger = ThrottledLogger(dispatcher.queue_logger)  # it warned on every queued request
    dispatcher.set_thread_count(adj.threads)
    return [HardenedServer(app, map=socket_map, adj=adj, sockinfo=info, dispatcher=dispatcher,
                           drain=drain, header_timeout=settings.header_timeout)
            for info in adj.listen]


def install_signal_handlers(drain: Drain) -> dict[int, Any]:
    """First SIGTERM/SIGINT starts the drain; a second one exits at once. Returns the old ones."""
    def handle(signum: int, frame: Any) -> None:
        if drain.signum:
            os.write(2, b"coordinator: second signal, exiting now\n")
            os._exit(128 + signum)
        drain.signum = signum

    if threading.current_thread() is not threading.main_thread():
        logger.warning("not on the main thread: no graceful shutdown on signals")
        return {}
    return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}


def _in_flight(servers: list[HardenedServer], drain: Drain, since: float) -> int:
    """Channels and app calls still busy with work that started before `since`."""
    return sum(server.busy_channels(since) for server in servers) + drain.running


def run_loop(servers: list[HardenedServer], drain: Drain, grace: float,
             socket_map: dict, on_drain: Callable[[], None] | None = None) -> bool:
    """Serve until a signal, then until in-flight work is done or `grace` runs out.

    `on_drain` runs when the drain begins (it ends the workers' long polls). Returns True when
    everything in flight finished.
    """
    while not drain.signum:
        wasyncore.loop(timeout=LOOP_TIMEOUT, map=socket_map, count=1, use_poll=True)
    # Read what reached the sockets before the signal: those requests count as started.
    wasyncore.loop(timeout=0, map=socket_map, count=1, use_poll=True)
    since = drain.started_at = time.monotonic()
    deadline = since + grace
    logger.info("signal %d: draining %d busy connection(s) for up to %gs; new requests get 503",
                drain.signum, sum(server.busy_channels(since) for server in servers), grace)
    if on_drain is not None:
        on_drain()
    while _in_flight(servers, drain, since):
        if time.monotonic() >= deadline:
            logger.warning("shutdown grace of %gs over: abandoning %d busy connection(s)",
                           grace, sum(server.busy_channels(since) for server in servers))
            return False
        wasyncore.loop(timeout=LOOP_TIMEOUT, map=socket_map, count=1, use_poll=True)
    logger.info("drained in %.1fs", time.monotonic() - since)
    return True


def _stop_callbacks(app: Flask, timeout: float) -> None:
    """Let queued completion callbacks go out for up to `timeout` seconds, then drop the rest."""
    from .state import get_state
    sender = get_state(app).callbacks
    if sender is None:
        return
    waiter = threading.Thread(target=sender.shutdown, kwargs={"wait": True}, daemon=True)
    waiter.start()
    waiter.join(timeout)
    if waiter.is_alive():
        logger.warning("dropping callbacks still queued after %gs", timeout)
        sender.shutdown(wait=False)


def _queue_events(app: Flask, call: Callable[[Any], None]) -> None:
    """Call `call` with the coordinator's queue events (skipped for a plain app: benchmarks)."""
    from .state import EXTENSION_KEY
    state = app.extensions.get(EXTENSION_KEY)
    if state is not None:
        call(state.events)


def stop_background(app: Flask, background: Sequence[Stoppable]) -> None:
    """Stop the background threads (the reaper), then the callback sender."""
    for thread in background:
        thread.stop()
    for thread in background:
        thread.join(BACKGROUND_STOP_SECONDS)
    _queue_events(app, lambda events: events.stop(BACKGROUND_STOP_SECONDS))  # flush the replica bus
    _stop_callbacks(app, BACKGROUND_STOP_SECONDS)


def serve(app: Flask, settings: ServeSettings, background: Sequence[Stoppable] = (),
          on_drain: Callable[[], None] | None = None) -> bool:
    """Serve `app` until SIGTERM/SIGINT, drain, stop `background` threads; True if drained."""
    drain = Drain()
    socket_map: dict = {}
    servers = create_servers(app, settings, drain, socket_map)
    previous = install_signal_handlers(drain)
    _queue_events(app, lambda events: events.start())  # PostgreSQL: share wake-ups with replicas
    try:
        return run_loop(servers, drain, settings.shutdown_grace, socket_map, on_drain)
    finally:
        wasyncore.close_all(socket_map, ignore_all=True)
        servers[0].task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        stop_background(app, background)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
