"""The heartbeat thread: renews a job's lease and carries cancellation back to the pipeline.

It only does I/O, so heavy CPU work in the main thread cannot starve it; the pipeline just sets
fields under a lock. It keeps beating through a graceful shutdown and stops only when told to,
when the lease is lost (409), or when the coordinator has been unreachable for longer than the
lease would last.

Each job's heartbeat runs on a thread of its own, but threads are reused: one that finished a
job's heartbeat waits for the next job's instead of exiting (starting a thread per job cost a
tiny job about 0.1 ms). A heartbeat still busy with a beat when its job ended is left to finish
on its thread while the next job gets another.

A heartbeat reaches a thread only once its job has run `launch_delay` (0.1 s, at most half the
interval): no beat is due sooner (the claim granted the lease, and an urgent beat waits
`urgent_delay` to let quick changes settle), and a job that ends sooner never wakes a thread for
its heartbeat; handing it over and stopping it cost a tiny job about a tenth of its CPU.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Protocol

from shared.protocol import ClaimedJob, Heartbeat, HeartbeatReply
from worker.errors import Backoff, CoordinatorError, CoordinatorUnavailable, LeaseLost
from worker.transfer import backoff_delay

logger = logging.getLogger(__name__)

MAX_LEASE_ESTIMATE = 3600.0
LAUNCH_DELAY = 0.1


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


class _Runner(threading.Thread):
    """A daemon thread that runs one job's heartbeat after another, parked in between."""

    def __init__(self, pool: "RunnerPool"):
        super().__init__(name="heartbeat", daemon=True)
        self._pool = pool
        self._next: HeartbeatThread | None = None
        self._ready = threading.Event()

    def hand(self, beat: "HeartbeatThread") -> None:
        """Run `beat` next (the runner is new or parked, so it is not running one)."""
        self._next = beat
        self._ready.set()

    def run(self) -> None:
        """Run the heartbeats handed over until the pool has enough parked runners."""
        keep = True
        while keep:
            self._ready.wait()
            self._ready.clear()
            beat, self._next = self._next, None
            if beat is None:
                continue
            self.name = beat.name
            try:
                beat.run_here()
            finally:
                self.name = "heartbeat"
                # Parked before the beat counts as finished: the job that waits for it to
                # finish finds this thread parked for its next job's heartbeat.
                keep = self._pool.park(self)
                beat.finished()


class RunnerPool:
    """The threads heartbeats run on: a parked one when there is one, else a new one."""

    def __init__(self, keep: int = 2):
        self.keep = keep  # parked threads kept at most (more exit)
        self._parked: list[_Runner] = []
        self._lock = threading.Lock()

    def run(self, beat: "HeartbeatThread") -> None:
        """Run `beat` on a parked thread, or on a new one if none is parked."""
        with self._lock:
            runner = self._parked.pop() if self._parked else None
        if runner is not None:
            runner.hand(beat)
            return
        runner = _Runner(self)
        runner.hand(beat)
        runner.start()

    def park(self, runner: _Runner) -> bool:
        """Keep `runner` for a later heartbeat; False: enough are parked, let it exit."""
        with self._lock:
            if len(self._parked) >= self.keep:
                return False
            self._parked.append(runner)
            return True

    def forget(self) -> None:
        """Drop the parked threads (a forked child has none of its parent's threads)."""
        self._lock = threading.Lock()
        self._parked = []


class _Launcher:
    """Hands heartbeats to their pool when their launch time comes, from one daemon thread.

    Launch times are rounded up to a grid of half the delay, so a stream of tiny jobs wakes the
    thread a few times per launch delay, not once per job; a heartbeat stopped before its time
    is dropped when it comes up."""

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh (a forked child has none of its parent's threads)."""
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, HeartbeatThread]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, beat: "HeartbeatThread", delay: float) -> None:
        """Launch `beat` in about `delay` seconds (rounded up to the grid) unless it stops first."""
        step = delay / 2
        due = math.ceil((time.monotonic() + delay) / step) * step
        with self._cond:
            heapq.heappush(self._due, (due, next(self._order), beat))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat-launcher",
                                                daemon=True)
                self._thread.start()
            elif self._due[0][2] is beat:  # sooner than what the thread waits for
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                beat = heapq.heappop(self._due)[2]
            try:
                beat.launch()
            except Exception:  # no thread to be had: that job's lease will lapse, others go on
                logger.exception("job %s: could not start its heartbeat", beat.job.job_id)


RUNNERS = RunnerPool()
LAUNCHER = _Launcher()
os.register_at_fork(after_in_child=RUNNERS.forget)
os.register_at_fork(after_in_child=LAUNCHER.forget)


class HeartbeatThread:
    """Beats every `heartbeat_interval` with the latest stage/progress/message/eta.

    Thread-like (`start`, `join`, `is_alive`), but run on a reused thread of `pool`, and only
    once its job has run `launch_delay` seconds (0: at once; None: LAUNCH_DELAY, at most half the
    interval).
    """

    def __init__(self, client: HeartbeatClient, job: ClaimedJob, *, min_gap: float = 2.0,
                 urgent_delay: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 pool: RunnerPool | None = None, launch_delay: float | None = None,
                 on_launch: Callable[[], Any] | None = None):
        self.name = f"heartbeat-{job.job_id}"
        self.client, self.job = client, job
        self._pool = pool or RUNNERS
        self._started, self._started_at = False, 0.0
        self._launched = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None  # the thread running it, once it runs
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
        self.launch_delay = min(LAUNCH_DELAY, self.interval / 2) if launch_delay is None else launch_delay
        self._on_launch = on_launch  # told (on the launching thread) that the job turned long

    @property
    def launched(self) -> bool:
        """Whether the job ran past the launch delay (its heartbeat went to a thread)."""
        return self._launched

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

    def start(self) -> None:
        """Start beating (on a parked thread of the pool, or a new one) once the launch delay
        has passed."""
        if self._started:
            raise RuntimeError(f"{self.name} already started")
        self._started, self._started_at = True, self._clock()
        if self.launch_delay > 0:
            LAUNCHER.add(self, self.launch_delay)
        else:
            self.launch()

    def launch(self) -> None:
        """Hand it to a thread of the pool, unless it was stopped already (`on_launch` first)."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._launched = True
        if self._on_launch is not None:
            try:
                self._on_launch()
            except Exception:  # the heartbeat itself must still start
                logger.exception("job %s: on-launch hook failed", self.job.job_id)
        self._pool.run(self)

    def is_alive(self) -> bool:
        """Whether it was started and has not finished yet."""
        return self._started and not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        """Wait until it finished (at most `timeout` seconds)."""
        self._done.wait(timeout)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop beating (an in-flight beat is left to finish in the background)."""
        with self._lock:
            self._stopping.set()
            launched = self._launched
        self._wake.set()
        if not launched:  # no thread ever ran it
            if self._started:
                self.finished()
            return
        if self.is_alive() and threading.current_thread() is not self._thread:
            self.join(timeout)

    def run_here(self) -> None:
        """Run it on the calling thread (a runner of the pool, which calls `finished` after)."""
        self._thread = threading.current_thread()
        try:
            self.run()
        except Exception:  # a bug: logged, and the thread goes on serving later jobs
            logger.exception("job %s: heartbeat thread crashed", self.job.job_id)

    def finished(self) -> None:
        """Mark it finished (`join` returns, `is_alive` is False)."""
        self._done.set()

    def run(self) -> None:
        """Beat until stopped or the lease is gone (the claim itself granted the lease)."""
        try:
            wait = max(0.0, self.interval - (self._clock() - self._started_at))  # launched late
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
