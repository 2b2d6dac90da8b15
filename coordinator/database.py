"""Engine setup: SQLite pragmas and `BEGIN IMMEDIATE`, dialect helpers, advisory locks."""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Iterator

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def _sqlite_connect(dbapi_connection, connection_record) -> None:
    """Take transaction control away from sqlite3 and set the pragmas."""
    # isolation_level=None stops sqlite3 from issuing its own deferred BEGIN;
    # the "begin" listener below issues BEGIN IMMEDIATE instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


_READ_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("dubfleet_read_only",
                                                                   default=False)


@contextlib.contextmanager
def read_only() -> Iterator[None]:
    """Run a short read that ends its transaction itself, without taking the write lock.

    WAL readers never block the writer, so key lookups and lease checks stay off the write
    lock; code inside must not write (a deferred transaction upgrading late can fail busy).
    """
    token = _READ_ONLY.set(True)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Leave a `read_only()` block for a short write of its own (on its own connection)."""
    token = _READ_ONLY.set(False)
    try:
        yield
    finally:
        _READ_ONLY.reset(token)


def _sqlite_begin(conn) -> None:
    """Start every writing transaction holding the write lock, so it never upgrades late."""
    conn.exec_driver_sql("BEGIN" if _READ_ONLY.get() else "BEGIN IMMEDIATE")


def configure_engine(engine: Engine) -> None:
    """Install the per-dialect connection hooks on `engine`."""
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    logger.debug("sqlite engine configured: WAL, busy_timeout, BEGIN IMMEDIATE")


def is_postgres(session: Session) -> bool:
    """True when the session's database is PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


# PostgreSQL advisory locks (two-int form: this namespace, then the task) that let one replica
# at a time run a periodic task. Advisory locks are per database: one deployment per database.
LOCK_NAMESPACE = 0x64666C74  # "dflt"
LOCKS = {"reap": 1, "sweep": 2}


@contextlib.contextmanager
def exclusive(engine: Engine, task: str) -> Iterator[bool]:
    """Yield True when this process may run `task` now: no other replica is running it.

    On PostgreSQL this holds a session-level advisory lock on a connection of its own for the
    block (a crashed holder's lock goes with its connection); elsewhere (SQLite: one process)
    it always yields True.
    """
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = (LOCK_NAMESPACE, LOCKS[task])
    with engine.connect() as conn:
        got = bool(conn.scalar(select(func.pg_try_advisory_lock(*key))))
        conn.commit()
        try:
            yield got
        finally:
            if got:
                _unlock(conn, key)


def _unlock(conn, key: tuple[int, int]) -> None:
    """Release an advisory lock; if that fails, drop the connection (which releases it)."""
    try:
        conn.scalar(select(func.pg_advisory_unlock(*key)))
        conn.commit()
    except Exception:
        logger.exception("could not release advisory lock %s; discarding its connection", key)
        conn.invalidate()
