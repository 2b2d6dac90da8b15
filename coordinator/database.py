"""Engine setup: SQLite pragmas and `BEGIN IMMEDIATE`, dialect helpers."""
from __future__ import annotations

import logging

from sqlalchemy import Engine, event
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


def _sqlite_begin(conn) -> None:
    """Start every transaction holding the write lock, so it never upgrades late."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


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
