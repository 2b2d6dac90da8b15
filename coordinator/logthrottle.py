"""Waitress' "Task queue depth is N" warning, at most once per interval instead of per request.

Waitress logs that warning for every request that finds all its threads busy: under a steady
load that is a log line per request (and a file write on the request path). The throttle keeps
the first one of each interval and says how many it held back.
"""
from __future__ import annotations

import logging
import threading
import time

QUEUE_LOGGER = "waitress.queue"
QUEUE_WARNING_INTERVAL = 10.0


class ThrottledWarnings(logging.Filter):
    """Lets one record through per `interval` seconds; the next one counts those held back."""

    def __init__(self, interval: float = QUEUE_WARNING_INTERVAL):
        super().__init__("dubfleet-throttle")
        self.interval = interval
        self._next_at = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next_at:
                self._held += 1
                return False
            held, self._held, self._next_at = self._held, 0, now + self.interval
        if held:
            record.msg = f"{record.msg} (and {held} more such warning(s) in the last %gs: all threads busy)"
            record.args = (*(record.args or ()), self.interval)
        return True


def throttle_queue_warnings(interval: float = QUEUE_WARNING_INTERVAL) -> None:
    """Install the throttle on waitress' queue logger (once per process)."""
    queue_logger = logging.getLogger(QUEUE_LOGGER)
    if not any(isinstance(f, ThrottledWarnings) for f in queue_logger.filters):
        queue_logger.addFilter(ThrottledWarnings(interval))
