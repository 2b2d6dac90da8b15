"""GET /health: database and storage checks, no key needed."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app
from sqlalchemy import text

from shared.errors import error_payload
from shared.protocol import PROTOCOL_VERSION, KeyKind, Routes

from ..auth import require_key
from ..database import read_only
from ..extensions import db
from ..openapi import TEXT, documented
from ..state import get_state
from .common import reply

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)
_CACHE = "dubfleet_health_cache"


def _check_database() -> str:
    """'ok' or a short description of the failure."""
    try:
        with read_only():  # a read is proof enough; never queue behind writers for the lock
            db.session.execute(text("SELECT 1"))
            db.session.rollback()
        return "ok"
    except Exception as exc:  # the health check reports, it never raises
        db.session.rollback()
        logger.warning("health: database check failed: %s", exc)
        return "error"


def _check_storage() -> str:
    """'ok' or 'error' after writing and deleting a probe file."""
    try:
        get_state().storage.probe()
        return "ok"
    except OSError as exc:
        logger.warning("health: storage check failed: %s", exc)
        return "error"


@bp.get(Routes.METRICS)
@documented("health", ok=TEXT)
@require_key(KeyKind.ADMIN)
def metrics() -> Response:
    """Prometheus metrics (admin key)."""
    return get_state().metrics.exposition()


def _checks() -> dict[str, str]:
    """The database and storage checks; a passing result is reused for HEALTH_CACHE_SECONDS
    (a probe writes a file: load balancers polling many times a second need not), a failing one
    is checked again on every call."""
    cached = current_app.extensions.get(_CACHE)
    now = time.monotonic()
    if cached is not None and now < cached[0]:
        return cached[1]
    checks = {"database": _check_database(), "storage": _check_storage()}
    ttl = float(current_app.config.get("HEALTH_CACHE_SECONDS", 0))
    if ttl > 0 and all(value == "ok" for value in checks.values()):
        current_app.extensions[_CACHE] = (now + ttl, checks)
    return checks


@bp.get(Routes.HEALTH)
@documented("health", ok={200: "Health", 503: "Health"})
def health() -> Response:
    """Report whether the database and storage work."""
    from .. import __version__
    checks = _checks()
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "unavailable", **checks, "version": __version__,
            "protocol": PROTOCOL_VERSION}
    if healthy:
        return reply(body)
    failing = ", ".join(name for name, value in checks.items() if value != "ok")
    return reply({**body, **error_payload("service_unavailable", f"check failed: {failing}")}, 503)
