"""Waitress' "Task queue depth is N" warning, at most once per interval instead of per request.

Waitress logs that warning for every request that finds all its threads busy: under a steady
load that is a log line (a record, a lock and a file write) per request, on the request path.
The throttled logger drops repeats before any record is made, and the next line it lets through
says how many it held back.
"""
from __future__ import annotations

import logging
import time
from typing import Any

QUEUE_WARNING_INTERVAL = 10.0


class ThrottledLogger:
    """Stands in for a logger that is only asked to `warning`: one line per `interval` seconds."""

    def __init__(self, logger: logging.Logger, interval: float = QUEUE_WARNING_INTERVAL):
        self.logger, self.interval = logger, interval
        self._next_at = 0.0
        self._held = 0

    def warning(self, msg: str, *args: Any) -> None:
        """Log now if the interval has passed (with the count held back), else count it."""
        now = time.monotonic()
        if now < self._next_at:  # racing threads may both pass: one extra line, never a lost count
            self._held += 1
            return
        held, self._held, self._next_at = self._held, 0, now + self.interval
        if held:
            msg, args = f"{msg} (%d more such warning(s) in the last %gs: all threads were busy)", \
                (*args, held, self.interval)
        self.logger.warning(msg, *args)
