"""Per-key webhook signing secrets, stored sealed with a key derived from SECRET_KEY.

HMAC signing needs the secret itself, so it cannot be stored hashed like API keys. It is sealed
instead: a stream cipher from HMAC-SHA256 in counter mode under a key derived from SECRET_KEY,
then an HMAC-SHA256 tag over nonce and ciphertext (encrypt-then-MAC, standard library only). A
database dump alone does not reveal secrets; a changed SECRET_KEY makes them unreadable
(deliveries then go unsigned, with a note, until `coordinator rotate-webhook-secret`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

from sqlalchemy.orm import Session

from shared.webhooks import SECRET_PREFIX

from .models import ApiKey

logger = logging.getLogger(__name__)

_VERSION = "v1"
_NONCE_BYTES = 16
_TAG_BYTES = 32


class SecretUnreadable(ValueError):
    """A sealed secret that does not open under this SECRET_KEY (it changed, or the row did)."""


def new_secret() -> str:
    """A fresh signing secret (shown once to the admin)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _subkey(secret_key: str, purpose: bytes) -> bytes:
    """A key for one purpose, derived from SECRET_KEY."""
    label = b"dubfleet webhook secret " + purpose
    return hmac.new(secret_key.encode(), label, hashlib.sha256).digest()


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    """`length` bytes of HMAC-SHA256(key, nonce || counter) blocks."""
    blocks = (hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest()
              for i in range((length + 31) // 32))
    return b"".join(blocks)[:length]


def seal(secret_key: str, plain: str) -> str:
    """`plain` encrypted and authenticated under SECRET_KEY, as text for the database."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    data = plain.encode()
    stream = _keystream(_subkey(secret_key, b"enc"), nonce, len(data))
    cipher = bytes(a ^ b for a, b in zip(data, stream))
    tag = hmac.new(_subkey(secret_key, b"mac"), nonce + cipher, hashlib.sha256).digest()
    return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + cipher + tag).decode()}"


def unseal(secret_key: str, sealed: str) -> str:
    """The secret inside `sealed`; SecretUnreadable when it does not authenticate."""
    version, _, encoded = sealed.partition(":")
    try:
        raw = base64.urlsafe_b64decode(encoded.encode())
    except ValueError:
        raise SecretUnreadable("the stored webhook secret is malformed") from None
    if version != _VERSION or len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise SecretUnreadable("the stored webhook secret is malformed")
    nonce, cipher, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:-_TAG_BYTES], raw[-_TAG_BYTES:]
    expected = hmac.new(_subkey(secret_key, b"mac"), nonce + cipher, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise SecretUnreadable("the stored webhook secret does not open with this SECRET_KEY")
    stream = _keystream(_subkey(secret_key, b"enc"), nonce, len(cipher))
    return bytes(a ^ b for a, b in zip(cipher, stream)).decode()


def rotate(session: Session, key_id: int, secret_key: str) -> str | None:
    """Give an active key a new secret (committed) and return it; None for no such key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    plain = new_secret()
    row.webhook_secret = seal(secret_key, plain)
    session.commit()
    logger.info("webhook secret of key #%s rotated", key_id)
    return plain


def secret_of(session: Session, key_id: int, secret_key: str) -> str | None:
    """The key's plain secret; None when it has none. Raises SecretUnreadable."""
    sealed = session.scalar(ApiKey.__table__.select().with_only_columns(ApiKey.webhook_secret)
                            .where(ApiKey.id == key_id))
    return None if not sealed else unseal(secret_key, sealed)
