"""API keys: creation, constant-time checks, browser sessions signed in with a key, and the view
decorator that enforces key kinds."""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flask import current_app, g, has_app_context, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.protocol import API_KEY_HEADER, KeyKind

from .errors import Forbidden, Unauthorized
from .extensions import db
from .database import read_only
from .models import ENV_OWNER_ID, ApiKey

logger = logging.getLogger(__name__)

PREFIXES = {KeyKind.WORKER: "dfw_", KeyKind.CLIENT: "dfc_", KeyKind.ADMIN: "dfa_"}
# A signed-in browser's non-GET API calls carry the session's CSRF token in this header.
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Key kinds that may sign in to the web app (a worker key never does).
WEB_KINDS = (KeyKind.CLIENT, KeyKind.ADMIN)
_KEY_CACHE = "dubfleet_key_cache"


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
    if has_app_context():
        key_cache().forget(key_id)
    return True


def _env_principal(presented: str, config: Mapping[str, Any]) -> Principal | None:
    """Match the WORKER_API_KEY / ADMIN_API_KEY environment keys in constant time."""
    candidates = ((config.get("ADMIN_API_KEY"), KeyKind.ADMIN), (config.get("WORKER_API_KEY"), KeyKind.WORKER))
    for expected, kind in candidates:
        if expected and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"),
                                            str(expected).encode("utf-8", "surrogatepass")):
            return Principal(key_id=ENV_OWNER_ID, kind=kind, name=f"env:{kind.value}")
    return None


class KeyCache:
    """Keys recently found active, by digest, for `ttl` seconds: most requests then skip the
    database. A revoked key keeps working here for at most `ttl` seconds (every replica), and at
    once on the replica that revoked it. Unknown keys are never cached (a new key works at once,
    and junk keys cannot fill the cache)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._found: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        """The cached principal of `digest`, if it is still fresh."""
        hit = self._found.get(digest)
        if hit is None or hit[0] <= self._clock():
            return None
        return hit[1]

    def put(self, digest: str, principal: Principal) -> None:
        """Remember an active key for `ttl` seconds."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._found) >= self.MAX_ENTRIES:
                self._found.clear()
            self._found[digest] = (self._clock() + self.ttl, principal)

    def forget(self, key_id: int | None = None) -> None:
        """Drop one key's entries (or all): this process honours a revocation at once."""
        with self._lock:
            if key_id is None:
                self._found.clear()
            else:
                self._found = {d: hit for d, hit in self._found.items() if hit[1].key_id != key_id}


def key_cache(app: Any = None) -> KeyCache:
    """The app's key cache (KEY_CACHE_SECONDS; created on first use)."""
    app = app or current_app
    cache = app.extensions.get(_KEY_CACHE)
    if cache is None:
        cache = app.extensions.setdefault(_KEY_CACHE, KeyCache(float(app.config.get("KEY_CACHE_SECONDS", 2.0))))
    return cache


def _cached_key(digest: str) -> Principal | None:
    """The cached principal (None outside an app context, or on a miss)."""
    return key_cache().get(digest) if has_app_context() else None


def authenticate(session: Session, presented: str | None, config: Mapping[str, Any]) -> Principal:
    """Resolve an API key to a Principal or raise Unauthorized."""
    if not presented:
        raise Unauthorized("missing API key (send it in the X-API-Key header)")
    principal = _env_principal(presented, config)
    if principal is not None:
        return principal
    digest = hash_key(presented)
    principal = _cached_key(digest)
    if principal is not None:
        return principal
    with read_only():
        try:
            row = session.execute(select(ApiKey.id, ApiKey.kind, ApiKey.name, ApiKey.key_hash)
                                  .where(ApiKey.key_hash == digest,
                                         ApiKey.revoked_at.is_(None))).first()
        finally:
            session.rollback()  # end the read transaction before the view does any I/O
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("unknown or revoked API key")
    principal = Principal(key_id=row.id, kind=KeyKind(row.kind), name=row.name)
    if has_app_context():
        key_cache().put(digest, principal)
    return principal


def _env_fingerprint(config: Mapping[str, Any]) -> str | None:
    """A keyed digest of ADMIN_API_KEY kept in a session signed in with it (never the key): a
    changed or removed environment key no longer matches, which signs those browsers out."""
    expected = config.get("ADMIN_API_KEY")
    if not expected:
        return None
    secret = str(config["SECRET_KEY"]).encode()
    return hmac.new(secret, str(expected).encode("utf-8", "surrogatepass"), "sha256").hexdigest()


def sign_in(principal: Principal, config: Mapping[str, Any], now: float | None = None) -> None:
    """Make this request's session a sign-in as `principal` (a fresh CSRF token; nothing of the
    key itself is stored, only its id, re-checked on every request)."""
    session.clear()
    session.permanent = True
    session.update(key_id=principal.key_id, kind=principal.kind.value, csrf=secrets.token_urlsafe(32),
                   at=time.time() if now is None else now)
    if principal.key_id == ENV_OWNER_ID:
        session["env"] = _env_fingerprint(config)


def csrf_token() -> str:
    """This session's CSRF token (created on first use, also before signing in)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_matches(presented: str | None) -> bool:
    """Whether `presented` is this session's CSRF token (constant time)."""
    expected = session.get("csrf")
    return bool(expected and presented) and hmac.compare_digest(str(presented).encode(),
                                                                 str(expected).encode())


def _expired(config: Mapping[str, Any], now: float) -> bool:
    """Whether the session's sign-in is older than WEB_SESSION_HOURS (or not one at all)."""
    signed_in_at = session.get("at")
    if not isinstance(signed_in_at, (int, float)):
        return True
    return not 0 <= now - signed_in_at <= float(config["WEB_SESSION_HOURS"]) * 3600


def _session_key(db_session: Session, config: Mapping[str, Any]) -> Principal | None:
    """The key the session was signed in with, if it is still active (else None)."""
    key_id = session.get("key_id")
    if key_id == ENV_OWNER_ID:
        fingerprint = _env_fingerprint(config)
        if fingerprint and hmac.compare_digest(str(session.get("env", "")), fingerprint):
            return Principal(key_id=ENV_OWNER_ID, kind=KeyKind.ADMIN, name="env:admin")
        return None
    if not isinstance(key_id, int):
        return None
    with read_only():
        try:
            row = db_session.execute(select(ApiKey.id, ApiKey.kind, ApiKey.name)
                                     .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))).first()
        finally:
            db_session.rollback()
    if row is None or KeyKind(row.kind) not in WEB_KINDS:
        return None
    return Principal(key_id=row.id, kind=KeyKind(row.kind), name=row.name)


def session_principal(db_session: Session, config: Mapping[str, Any],
                      now: float | None = None) -> Principal | None:
    """Who this browser is signed in as: None without a session cookie, and None (the session
    cleared) when the sign-in expired or its key was revoked."""
    if config["SESSION_COOKIE_NAME"] not in request.cookies or "key_id" not in session:
        return None
    principal = None
    if not _expired(config, time.time() if now is None else now):
        principal = _session_key(db_session, config)
    if principal is None:
        session.clear()
    return principal


def _caller() -> Principal:
    """The request's principal: its X-API-Key when it sends one (exactly as always), else a
    signed-in browser session, whose non-GET calls must carry the session's CSRF token."""
    config = current_app.config
    presented = request.headers.get(API_KEY_HEADER)
    if presented is None:
        principal = session_principal(db.session, config)
        if principal is not None:
            if request.method not in SAFE_METHODS and not csrf_matches(request.headers.get(CSRF_HEADER)):
                raise Forbidden(f"a request made with the session cookie needs the session's "
                                f"{CSRF_HEADER} header")
            return principal
    return authenticate(db.session, presented, config)


def require_key(*kinds: KeyKind) -> Callable:
    """Decorator: the caller must present a key of one of `kinds` (admin always passes), or be a
    browser signed in with one (see `session_principal`)."""
    allowed = set(kinds) | {KeyKind.ADMIN}

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = _caller()
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
