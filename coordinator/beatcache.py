"""The beats this process wrote last, per job: a beat that repeats the last one soon after it
is worth checking for coalescing (`jobs.heartbeat`); any other beat goes straight to its write,
with no read in front of it.

A hint only: a job missing here (evicted, or its beats went to another replica) is written as
usual, and a hit is confirmed against the database before any write is skipped.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from shared.protocol import Heartbeat

MAX_JOBS = 4096


class RecentBeats:
    """job id -> (lease token, beat, when it was written), for the most recent `max_jobs` jobs."""

    def __init__(self, max_jobs: int = MAX_JOBS):
        self.max_jobs = max_jobs
        self._beats: OrderedDict[str, tuple[str, Heartbeat, float]] = OrderedDict()
        self._lock = threading.Lock()

    def repeats(self, job_id: str, token: str | None, beat: Heartbeat, now: float, within: float) -> bool:
        """Whether `beat` repeats the last beat written for this lease less than `within` s ago."""
        with self._lock:
            last = self._beats.get(job_id)
        return last is not None and last[0] == token and last[1] == beat and 0 <= now - last[2] < within

    def wrote(self, job_id: str, token: str, beat: Heartbeat, now: float) -> None:
        """Remember the beat just written for this lease."""
        with self._lock:
            self._beats[job_id] = (token, beat, now)
            self._beats.move_to_end(job_id)
            while len(self._beats) > self.max_jobs:
                self._beats.popitem(last=False)


RECENT = RecentBeats()
