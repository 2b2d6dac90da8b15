"""The audit log: every key creation and revocation, submit, cancel, retry and download, with who
(key id and name), what (action, job, detail), when and from where (client address; the
X-Forwarded-For a proxy adds is kept as told, untrusted). Read it with `coordinator audit`.

Each event is written in its own short transaction on its own connection, after the action it
records succeeded, also from read-only views (downloads).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator

import sqlalchemy as sa
from flask import has_request_context, request
from sqlalchemy import Engine

from .database import writing
from .models import AuditEvent

logger = logging.getLogger(__name__)

ACTIONS = ("key_created", "key_revoked", "submit", "cancel", "retry", "download", "redub",
           "summary_edit")


@dataclass(frozen=True)
class Actor:
    """Who acted: a key (id and name), or the command line."""

    key_id: int | None
    name: str


def _remote() -> str:
    """Where the request came from ('cli' outside a request)."""
    if not has_request_context():
        return "cli"
    remote = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    return (f"{remote} (forwarded for {forwarded})" if forwarded else remote)[:255]


def record(engine: Engine, action: str, actor: Actor, job_id: str | None = None,
           detail: str = "", now: float | None = None) -> None:
    """Write one event; an audit failure is logged loudly but never fails the action itself."""
    row = {"at": time.time() if now is None else now, "key_id": actor.key_id,
           "key_name": actor.name[:128], "action": action, "job_id": job_id,
           "detail": detail[:2000], "remote": _remote()}
    try:
        with writing(), engine.begin() as conn:
            conn.execute(sa.insert(AuditEvent.__table__).values(**row))
    except sa.exc.SQLAlchemyError:
        logger.exception("audit: could not record %s", row)


def events(engine: Engine, *, key_name: str | None = None, since: float | None = None,
           job_id: str | None = None, limit: int = 1000) -> Iterator[dict[str, Any]]:
    """Events oldest first, filtered by key name, time and job."""
    table = AuditEvent.__table__
    stmt = sa.select(table)
    if key_name:
        stmt = stmt.where(table.c.key_name == key_name)
    if since is not None:
        stmt = stmt.where(table.c.at >= since)
    if job_id:
        stmt = stmt.where(table.c.job_id == job_id)
    stmt = stmt.order_by(table.c.at, table.c.id).limit(limit)
    with engine.connect() as conn:
        for row in conn.execute(stmt).mappings():
            yield dict(row)
