"""The heartbeat thread: renews a job's lease and carries cancellation back to the pipeline.

It only does I/O, so heavy CPU work in the main thread cannot starve it; the pipeline just sets
fields under a lock. It keeps beating through a graceful shutdown and stops only when told to,
when the lease is lost (409), or when the coordinator has been unreachable for longer than the
lease would last.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from shared.protocol import ClaimedJob, Heartbeat, HeartbeatReply
from worker.errors import Backoff, CoordinatorError, CoordinatorUnavailable, LeaseLost
from worker.transfer import backoff_delay

logger = logging.getLogger(__name__)

MAX_LEASE_ESTIMATE = 3600.0


class HeartbeatClient(Protocol):
    """The part of the coordinator client the heartbeat thread uses."""

    def heartbeat(self, job: ClaimedJob, beat: Heartbeat) -> HeartbeatReply:
        """Send one beat."""

    def close(self) -> None:
        """Release this thread's connection."""


def lease_seconds(lease_expires_at: float, interval: float) -> float:
    """How long the lease lasts from now, robust to clock skew (else 4 × interval)."""
    left = lease_expires_at - time.time()
    if interval <= left <= MAX_LEASE_ESTIMATE:
        return left
    return 4 * interval


class HeartbeatThread(threading.Thread):
    """Beats every `heartbeat_interval` with the latest stage/progress/message/eta."""

    def __init__(self, client: HeartbeatClient, job: ClaimedJob, *, min_gap: float = 2.0,
                 urgent_delay: float = 0.25, clock: Callable[[], float] = time.monotonic):
        super().__init__(name=f"heartbeat-{job.job_id}", daemon=True)
        self.client, self.job = client, job
        self.interval = max(0.05, float(job.heartbeat_interval or 30.0))
        self.min_gap = min_gap
        self.urgent_delay = urgent_delay
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.lost: LeaseLost | None = None  # the coordinator's 409, saying what became of the job
        self.beats = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._failures = 0
        self._last_try = float("-inf")
        self._deadline = clock() + lease_seconds(job.lease_expires_at, self.interval)

    def update(self, *, urgent: bool = False, **fields: Any) -> None:
        """Set stage/progress/message/eta_seconds for the next beat; `urgent` sends one soon."""
        with self._lock:
            self._fields.update(fields)
        if urgent:
            self._wake.set()

    def snapshot(self) -> Heartbeat:
        """The beat that would be sent now."""
        with self._lock:
            return Heartbeat.from_dict(self._fields)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop beating (an in-flight beat is left to finish in the background)."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        """Beat until stopped or the lease is gone (the claim itself granted the lease)."""
        try:
            wait = self.interval
            while not self._stopping.is_set():
                woke = self._wake.wait(wait)
                self._wake.clear()
                if self._stopping.is_set() or (woke and not self._settle()):
                    break
                wait = self._beat_once()
        finally:
            self.client.close()

    def _settle(self) -> bool:
        """Before an urgent beat: let quick changes settle and keep the minimum gap."""
        gap = max(self.urgent_delay, self._last_try + self.min_gap - self._clock())
        return not self._stopping.wait(gap)

    def _beat_once(self) -> float:
        """Send one beat and return how long to wait before the next one."""
        self._last_try = self._clock()
        try:
            reply = self.client.heartbeat(self.job, self.snapshot())
        except LeaseLost as exc:
            self.lost = exc
            if exc.outcome() != "lease_lost":  # this lease ended the job: not an error
                logger.info("job %s: the coordinator says this lease already ended it: %s",
                            self.job.job_id, exc.outcome())
                return self._lose("")
            return self._lose(f"lease lost: {exc}")
        except CoordinatorUnavailable as exc:
            return self._unreachable(exc)
        except CoordinatorError as exc:
            return self._lose(f"heartbeat rejected: {exc}")
        except Exception as exc:  # never let the thread die silently
            logger.exception("job %s: heartbeat crashed", self.job.job_id)
            return self._unreachable(exc)
        return self._accept(reply)

    def _accept(self, reply: HeartbeatReply) -> float:
        """Take a reply: renew the local lease deadline and note cancellation."""
        self.beats += 1
        self._failures = 0
        if reply.heartbeat_interval and reply.heartbeat_interval > 0:
            self.interval = max(0.05, float(reply.heartbeat_interval))
        self._deadline = self._last_try + lease_seconds(reply.lease_expires_at, self.interval)
        if reply.cancel_requested and not self.cancel_requested.is_set():
            logger.info("job %s: cancel requested", self.job.job_id)
            self.cancel_requested.set()
        return self.interval

    def _unreachable(self, exc: Exception) -> float:
        """Retry with backoff until the lease would have expired, then give the job up."""
        self._failures += 1
        left = self._deadline - self._clock()
        if left <= 0:
            return self._lose(f"coordinator unreachable past the lease: {exc}")
        delay = getattr(exc, "retry_after", None) if isinstance(exc, Backoff) else None
        delay = min(delay or backoff_delay(self._failures - 1, 1.0, self.interval), left)
        logger.warning("job %s: heartbeat failed (%s), retrying in %.1fs (lease left ~%.0fs)",
                       self.job.job_id, exc, delay, left)
        return max(0.05, delay)

    def _lose(self, why: str) -> float:
        """Mark the lease lost and stop."""
        if why and not self._stopping.is_set():
            logger.warning("job %s: %s", self.job.job_id, why)
        self.lease_lost.set()
        self._stopping.set()
        return 0.0
