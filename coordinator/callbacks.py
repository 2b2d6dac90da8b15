"""Best-effort `callback_url` notifications, sent from a small background pool."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import requests

logger = logging.getLogger(__name__)


class CallbackSender:
    """POSTs a job view to its callback URL off the request thread; never raises."""

    def __init__(self, build_view: Callable[[str], dict[str, Any] | None], timeout: float,
                 max_workers: int = 4):
        self.build_view = build_view
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="callback")

    def __call__(self, job_id: str, url: str) -> None:
        """Schedule one callback."""
        try:
            self._pool.submit(self._send, job_id, url)
        except RuntimeError:  # pool shut down: the process is exiting
            logger.warning("callback for job %s dropped: shutting down", job_id)

    def _send(self, job_id: str, url: str) -> None:
        """Build the view and POST it once, with a short timeout."""
        try:
            view = self.build_view(job_id)
            if view is None:
                return
            response = requests.post(url, json=view, timeout=self.timeout, allow_redirects=False)
            logger.info("callback for job %s -> %s: HTTP %s", job_id, url, response.status_code)
        except Exception as exc:  # best effort: a bad callback must never hurt the queue
            logger.warning("callback for job %s -> %s failed: %s", job_id, url, exc)

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting callbacks."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
