"""Best-effort `callback_url` notifications, sent from a small background pool.

Callbacks go only to public addresses unless `ALLOW_PRIVATE_CALLBACKS` is on: the address is
checked when the job is submitted (`coordinator.validation`) and again when the callback is sent,
on the very address connected to (`shared.safehttp`), so a name that has since been pointed at an
internal address gets nothing. Callbacks never follow redirects and never carry an API key.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from shared.netguard import AddressGuard, UnsafeURL
from shared.safehttp import GuardedSession

logger = logging.getLogger(__name__)

CALLBACK_LABEL = "callback_url"
PRIVATE_HINT = "set ALLOW_PRIVATE_CALLBACKS=1 on the coordinator to allow private addresses"


def callback_guard(allow_private: bool = False) -> AddressGuard:
    """The address policy for callback URLs."""
    return AddressGuard(allow_private=allow_private, label=CALLBACK_LABEL, hint=PRIVATE_HINT)


class CallbackSender:
    """POSTs a job view to its callback URL off the request thread; never raises."""

    def __init__(self, build_view: Callable[[str], dict[str, Any] | None], timeout: float,
                 max_workers: int = 4, *, allow_private: bool = False):
        self.build_view = build_view
        self.timeout = timeout
        self.guard = callback_guard(allow_private)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="callback")

    def __call__(self, job_id: str, url: str) -> None:
        """Schedule one callback."""
        try:
            self._pool.submit(self._send, job_id, url)
        except RuntimeError:  # pool shut down: the process is exiting
            logger.warning("callback for job %s dropped: shutting down", job_id)

    def _send(self, job_id: str, url: str) -> None:
        """Build the view and POST it once, with a short timeout, to a checked address."""
        try:
            view = self.build_view(job_id)
            if view is None:
                return
            with GuardedSession(self.guard) as session:
                response = session.post(url, json=view, timeout=self.timeout,
                                        allow_redirects=False)
            logger.info("callback for job %s -> %s: HTTP %s", job_id, url, response.status_code)
        except UnsafeURL as exc:
            logger.warning("callback for job %s not sent: %s", job_id, exc)
        except Exception as exc:  # best effort: a bad callback must never hurt the queue
            logger.warning("callback for job %s -> %s failed: %s", job_id, url, exc)

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting callbacks."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
