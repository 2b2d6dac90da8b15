"""Sending one `callback_url` delivery: the address policy and the guarded, signed POST.

Callbacks go only to public addresses unless `ALLOW_PRIVATE_CALLBACKS` is on: the address is
checked when the job is submitted (`coordinator.validation`) and again on every delivery attempt,
on the very address connected to (`shared.safehttp`), so a name that has since been pointed at an
internal address gets nothing. Callbacks never follow redirects and never carry an API key.

What is delivered when, retries and the delivery log live in `coordinator.webhooks`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from shared.netguard import AddressGuard, UnsafeURL
from shared.safehttp import GuardedSession
from shared.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)

CALLBACK_LABEL = "callback_url"
PRIVATE_HINT = "set ALLOW_PRIVATE_CALLBACKS=1 on the coordinator to allow private addresses"
MAX_ERROR_CHARS = 500  # of an error message kept in the delivery log
USER_AGENT = "dubfleet-webhooks/1"


def callback_guard(allow_private: bool = False) -> AddressGuard:
    """The address policy for callback URLs."""
    return AddressGuard(allow_private=allow_private, label=CALLBACK_LABEL, hint=PRIVATE_HINT)


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `ok` on a 2xx; `final` when retrying cannot help (refused URL)."""

    ok: bool
    http_status: int | None = None
    error: str | None = None
    final: bool = False


def _headers(delivery_id: str, event: str, body: bytes, secret: str | None) -> dict[str, str]:
    """The delivery's headers, signed when there is a secret."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               EVENT_HEADER: event, DELIVERY_HEADER: delivery_id}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    return headers


def _short(text: str) -> str:
    """An error message cut to what the log keeps."""
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def post_delivery(guard: AddressGuard, url: str, delivery_id: str, event: str, body: bytes,
                  secret: str | None, timeout: float) -> Outcome:
    """POST `body` once to a checked address (no redirects); never raises."""
    try:
        with GuardedSession(guard) as session:
            # stream=True: the reply's body is never read (it could be endless).
            response = session.post(url, data=body, timeout=timeout, allow_redirects=False,
                                    stream=True, headers=_headers(delivery_id, event, body, secret))
            response.close()
    except UnsafeURL as exc:
        return Outcome(False, error=_short(str(exc)), final=True)
    except requests.RequestException as exc:
        return Outcome(False, error=_short(f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # a bad receiver must never hurt the coordinator
        logger.exception("webhook %s -> %s: unexpected error", delivery_id, url)
        return Outcome(False, error=_short(f"{type(exc).__name__}: {exc}"))
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code)
    return Outcome(False, response.status_code, f"HTTP {response.status_code}")
