"""Per-key concurrency: one client key may have at most N requests in its view at once.

Each request in a view holds a server thread, so without a cap one client could take every
thread, or keep the CPU busy with costly pages, and starve everyone else. Past the cap the reply is 429 with Retry-After at once: waiting would
itself hold a thread. Worker keys are not gated (a fleet shares one key; long polls are capped
by MAX_CLAIM_WAITERS instead).
"""
from __future__ import annotations

import threading
from collections import defaultdict

from .errors import ServiceUnavailable, TooManyRequests


class KeyGate:
    """Counts requests in progress per key id."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = defaultdict(int)

    def enter(self, key_id: int) -> None:
        """Take a slot for `key_id`, or raise TooManyRequests when all of its slots are in use;
        every successful `enter` is paired with one `leave`."""
        with self._lock:
            if self._inflight[key_id] >= self.limit:
                error = TooManyRequests(f"this API key already has {self.limit} requests in progress; "
                                        "retry when one finishes (CLIENT_MAX_INFLIGHT)")
                error.headers["Retry-After"] = "1"
                raise error
            self._inflight[key_id] += 1

    def leave(self, key_id: int) -> None:
        """Give back a slot taken by `enter`."""
        with self._lock:
            self._inflight[key_id] -= 1
            if self._inflight[key_id] <= 0:
                del self._inflight[key_id]

    def inflight(self, key_id: int) -> int:
        """Requests of `key_id` in progress now."""
        with self._lock:
            return self._inflight.get(key_id, 0)


class CostlyViews:
    """A process-wide cap on CPU-heavy views (job list pages) computing at once.

    Python threads share one interpreter lock: a handful of CPU-bound threads make every other
    request wait for the lock at each I/O step (the convoy effect), so one client paging through
    jobs from many threads could stall everyone's submits for seconds. Extra costly requests
    wait here without holding the lock; past `timeout` they get 503 + Retry-After.
    """

    def __init__(self, limit: int, timeout: float = 30.0):
        self._semaphore = threading.BoundedSemaphore(limit)
        self.timeout = timeout

    def __enter__(self) -> "CostlyViews":
        if not self._semaphore.acquire(timeout=self.timeout):
            error = ServiceUnavailable("the coordinator is busy computing other pages; retry shortly")
            error.headers["Retry-After"] = "2"
            raise error
        return self

    def __exit__(self, *exc: object) -> None:
        self._semaphore.release()
