"""One-time sign-in links: a random token, stored hashed with an expiry, consumed on first use."""
from __future__ import annotations

import logging
import secrets
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..auth import hash_key
from ..database import read_only
from ..models import SignInToken

logger = logging.getLogger(__name__)

# Used and expired tokens are deleted this long after they expire (the rows prove nothing later).
KEEP_EXPIRED_SECONDS = 86400.0


def create_token(session: Session, key_id: int, ttl_seconds: float, now: float | None = None) -> str:
    """Store a new sign-in token for `key_id` (its hash) and return the plain token."""
    now = time.time() if now is None else now
    plain = secrets.token_urlsafe(32)
    session.execute(sa.delete(SignInToken).where(SignInToken.expires_at < now - KEEP_EXPIRED_SECONDS))
    session.add(SignInToken(token_hash=hash_key(plain), key_id=key_id, created_at=now,
                            expires_at=now + ttl_seconds))
    session.commit()
    return plain


def is_usable(session: Session, token: str, now: float | None = None) -> bool:
    """Whether `token` is unused and unexpired (the page shows its button only then)."""
    now = time.time() if now is None else now
    with read_only():
        try:
            row = session.execute(sa.select(SignInToken.id).where(
                SignInToken.token_hash == hash_key(token), SignInToken.used_at.is_(None),
                SignInToken.expires_at > now)).first()
        finally:
            session.rollback()
    return row is not None


def consume(session: Session, token: str, now: float | None = None) -> int | None:
    """Use `token` once: the key id it signs in as, or None (unknown, used or expired).

    One conditional UPDATE, so two browsers racing with the same link cannot both win.
    """
    now = time.time() if now is None else now
    digest = hash_key(token)
    used = session.execute(sa.update(SignInToken).where(
        SignInToken.token_hash == digest, SignInToken.used_at.is_(None),
        SignInToken.expires_at > now).values(used_at=now))
    if used.rowcount != 1:
        session.rollback()
        return None
    key_id = session.scalar(sa.select(SignInToken.key_id).where(SignInToken.token_hash == digest))
    session.commit()
    return key_id
