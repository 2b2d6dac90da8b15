"""API keys: creation, constant-time checks, and the view decorator that enforces key kinds."""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.protocol import API_KEY_HEADER, KeyKind

from .errors import Forbidden, Unauthorized
from .extensions import db
from .database import read_only
from .models import ENV_OWNER_ID, ApiKey

logger = logging.getLogger(__name__)

PREFIXES = {KeyKind.WORKER: "dfw_", KeyKind.CLIENT: "dfc_", KeyKind.ADMIN: "dfa_"}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (owner of its jobs), kind and name."""

    key_id: int
    kind: KeyKind
    name: str

    @property
    def is_admin(self) -> bool:
        """True for admin keys, which see every job."""
        return self.kind is KeyKind.ADMIN


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(session: Session, kind: KeyKind, name: str, now: float | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plain key (shown once, never stored)."""
    plain = PREFIXES[kind] + secrets.token_urlsafe(32)
    row = ApiKey(name=name, kind=kind.value, key_hash=hash_key(plain), prefix=plain[:8],
                 created_at=now or time.time())
    session.add(row)
    session.commit()
    return row, plain


def revoke_key(session: Session, key_id: int, now: float | None = None) -> bool:
    """Revoke a key by id; False if there is no such active key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        session.rollback()
        return False
    row.revoked_at = now or time.time()
    session.commit()
    return True


def _env_principal(presented: str, config: Mapping[str, Any]) -> Principal | None:
    """Match the WORKER_API_KEY / ADMIN_API_KEY environment keys in constant time."""
    candidates = ((config.get("ADMIN_API_KEY"), KeyKind.ADMIN), (config.get("WORKER_API_KEY"), KeyKind.WORKER))
    for expected, kind in candidates:
        if expected and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"),
                                            str(expected).encode("utf-8", "surrogatepass")):
            return Principal(key_id=ENV_OWNER_ID, kind=kind, name=f"env:{kind.value}")
    return None


def authenticate(session: Session, presented: str | None, config: Mapping[str, Any]) -> Principal:
    """Resolve an API key to a Principal or raise Unauthorized."""
    if not presented:
        raise Unauthorized("missing API key (send it in the X-API-Key header)")
    principal = _env_principal(presented, config)
    if principal is not None:
        return principal
    digest = hash_key(presented)
    with read_only():
        try:
            row = session.execute(select(ApiKey.id, ApiKey.kind, ApiKey.name, ApiKey.key_hash)
                                  .where(ApiKey.key_hash == digest,
                                         ApiKey.revoked_at.is_(None))).first()
        finally:
            session.rollback()  # end the read transaction before the view does any I/O
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("unknown or revoked API key")
    return Principal(key_id=row.id, kind=KeyKind(row.kind), name=row.name)


def require_key(*kinds: KeyKind) -> Callable:
    """Decorator: the caller must present a key of one of `kinds` (admin always passes)."""
    allowed = set(kinds) | {KeyKind.ADMIN}

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate(db.session, request.headers.get(API_KEY_HEADER), current_app.config)
            if principal.kind not in allowed:
                raise Forbidden(f"a {principal.kind.value} key may not call this endpoint")
            g.principal = principal
            if principal.kind is KeyKind.WORKER:
                return view(*args, **kwargs)
            return _gated(principal, view, args, kwargs)
        wrapper.key_kinds = tuple(kinds)  # type: ignore[attr-defined]  # read by coordinator.openapi
        return wrapper
    return decorator


def _gated(principal: Principal, view: Callable, args: Any, kwargs: Any) -> Any:
    """Run a client/admin view holding one of its key's slots (file bodies are then sent by
    waitress' I/O loop through wsgi.file_wrapper, without a request thread)."""
    from .state import get_state
    gate = get_state().gate
    gate.enter(principal.key_id)
    try:
        return view(*args, **kwargs)
    finally:
        gate.leave(principal.key_id)


def current_principal() -> Principal:
    """The authenticated caller of this request."""
    return g.principal
