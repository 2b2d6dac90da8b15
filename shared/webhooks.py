"""Webhook signatures: `X-Dubfleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The coordinator signs every `callback_url` delivery with the owning key's webhook secret over
`f"{t}.{body}"` (the exact bytes sent); a receiver recomputes the HMAC with the secret it was
shown once, compares in constant time, and refuses timestamps too far from its own clock
(replays). `verify` is the receiver's side, in a few lines anyone can port.
"""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Dubfleet-Signature"
EVENT_HEADER = "X-Dubfleet-Event"
DELIVERY_HEADER = "X-Dubfleet-Delivery"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between the timestamp and its clock


class BadSignature(ValueError):
    """A signature header that is missing, malformed, stale or does not match."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    """hex HMAC-SHA256 of `f"{timestamp}.".encode() + body` under `secret`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for `body` sent at `timestamp` (default: now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and every v1 signature in a header value; BadSignature when malformed."""
    timestamp, signatures = None, []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadSignature("malformed signature header (want t=<seconds>,v1=<hex>)")
    return timestamp, signatures


def verify(secret: str, header: str, body: bytes, tolerance: float = DEFAULT_TOLERANCE,
           now: float | None = None) -> int:
    """Check a delivery; returns its timestamp, raises BadSignature when it must be refused."""
    timestamp, signatures = parse(header)
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise BadSignature(f"timestamp {timestamp} is more than {tolerance:g}s from now")
    expected = _mac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise BadSignature("signature does not match")
    return timestamp
