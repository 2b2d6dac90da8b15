"""SQLite: one connection kept by each thread for its hot single statements.

A pool checkout and checkin (queue, connection record, reset on return, events) runs a few
microseconds of Python on every request, and on a server whose threads share one interpreter
lock that code's share of the caches weighs more than its own time: a job view with its read on
a kept connection served about 8 % more requests per second than one through the pool (same
run, 2-core machine). SQLite connections are cheap, a WAL reader never blocks the writer, and an
autocommit statement holds nothing between uses, so each thread can keep its own.

Only single statements run here (`Lean.reading`, and on SQLite `Lean.write_one`); transactions
(`Lean.transaction`) keep pooled connections, so a read inside a write block still reads on its
own connection, as before. A kept connection is made by the engine's pool (so with the same
connect-time pragmas) and detached from it; it is closed when its thread has ended (noticed
when another thread opens one), when it failed as closed or unusable, and when the engine is
disposed.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event

logger = logging.getLogger(__name__)


class KeptConnections:
    """Per-thread DBAPI connections of one SQLite engine."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: dict[int, tuple[weakref.ref, Any]] = {}  # thread ident -> (thread, connection)
        dbapi = engine.dialect.loaded_dbapi
        self._broken: tuple[type[Exception], ...] = (dbapi.ProgrammingError, dbapi.InterfaceError)
        event.listen(engine, "engine_disposed", self.close_all)

    def connection(self) -> Any:
        """This thread's connection (made on its first use)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._open()
        return connection

    def failed(self, connection: Any, exc: BaseException) -> None:
        """A statement on `connection` raised `exc`: end what it left open and, when the
        connection itself is unusable (closed, or the driver refuses it), drop it."""
        with contextlib.suppress(Exception):
            connection.rollback()  # autocommit: a no-op unless a statement opened a transaction
        if isinstance(getattr(exc, "orig", exc), self._broken):  # the driver's, or SQLAlchemy's wrapping it
            self._forget(connection)

    def close_all(self, *_: Any) -> None:
        """Close every kept connection (the engine was disposed); threads open new ones."""
        with self._lock:
            kept, self._kept = self._kept, {}
            self._local = threading.local()
        for _, connection in kept.values():
            _close(connection)

    def count(self) -> int:
        """How many connections are kept now."""
        with self._lock:
            return len(self._kept)

    def _open(self) -> Any:
        fairy = self._engine.raw_connection()
        fairy.detach()  # ours now: the pool makes another when it needs one
        connection = fairy.dbapi_connection
        thread = threading.current_thread()
        with self._lock:
            self._close_ended()
            replaced = self._kept.get(thread.ident)  # an ended thread's ident, reused
            self._kept[thread.ident] = (weakref.ref(thread), connection)
        if replaced is not None:
            _close(replaced[1])
        return connection

    def _close_ended(self) -> None:
        """Close the connections of threads that have ended (the lock is held)."""
        for ident, (ref, connection) in list(self._kept.items()):
            thread = ref()
            if thread is None or not thread.is_alive():
                del self._kept[ident]
                _close(connection)

    def _forget(self, connection: Any) -> None:
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            ident = threading.get_ident()
            if ident in self._kept and self._kept[ident][1] is connection:
                del self._kept[ident]
        _close(connection)


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing what is already broken must not raise
        logger.debug("closing a kept SQLite connection failed", exc_info=True)
