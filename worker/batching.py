"""Batching short jobs: their small results are held and delivered with the next claims.

With `--batch N` (N > 1), a worker running a stream of short jobs stops paying one request per
job. A job that ends within its heartbeat's launch delay (0.1 s) with one small output (at most
MAX_BATCH_RESULT_BYTES) holds its result instead of uploading it. When the jobs claimed ahead run
out, one batch call (POST /jobs/batch) completes every held job, each under its own lease and in
its own fenced transaction, and claims up to N more.

A job that runs past the launch delay ends batching for the moment: as its heartbeat starts, the
held results are delivered and the jobs claimed ahead go back to the queue for other workers, so
a long job never keeps short ones waiting, and it finishes with a plain completing upload.

A crash loses the held results and the jobs claimed ahead, as it loses a running job: their
leases lapse and the reaper requeues them. Nothing completes twice: every completion is fenced.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable

from shared.protocol import MAX_BATCH_JOBS, MAX_BATCH_RESULT_BYTES, ClaimedJob, HeldResult, WorkerInfo
from worker.client import error_for
from worker.errors import CoordinatorError, CoordinatorUnavailable, LeaseLost
from worker.transfer import read_small

logger = logging.getLogger(__name__)

Outcome = Callable[[str, str], Any]  # (job id, outcome) of a held job, once it is known
MISSING_ROUTE = (404, 405)  # a coordinator from before batch calls


class Batcher:
    """The held results and the jobs claimed ahead of one worker (thread-safe: a job that turns
    long gives them back from another thread)."""

    def __init__(self, client: Any, size: int, on_outcome: Outcome):
        self.client = client
        self.size = max(1, min(int(size), MAX_BATCH_JOBS))
        self.on_outcome = on_outcome
        self.enabled = self.size > 1
        self._held: list[tuple[ClaimedJob, HeldResult]] = []
        self._ahead: deque[ClaimedJob] = deque()
        self._lock = threading.RLock()

    @property
    def holding(self) -> bool:
        """Whether results wait for a batch call."""
        return bool(self._held)

    @property
    def ahead(self) -> int:
        """How many jobs were claimed ahead and not taken yet."""
        return len(self._ahead)

    def take(self) -> ClaimedJob | None:
        """The next job claimed ahead, if any."""
        with self._lock:
            return self._ahead.popleft() if self._ahead else None

    def can_hold(self, job: ClaimedJob, outputs: tuple, short: bool) -> bool:
        """Whether this job's result may wait for a batch call: batching is on, the job was short,
        its only output is small, and results go through the coordinator."""
        if not (self.enabled and short and len(outputs) == 1) or job.direct_upload:
            return False
        return os.stat(outputs[0].path).st_size <= MAX_BATCH_RESULT_BYTES

    def hold_if_short(self, job: ClaimedJob, outputs: tuple, detected_language: str | None,
                      short: bool) -> bool:
        """Hold the job's result if it may wait for a batch call (`can_hold`); whether it did."""
        if not self.can_hold(job, outputs, short):
            return False
        output = outputs[0]
        data = read_small(output.path, MAX_BATCH_RESULT_BYTES + 1)
        if data is None:  # it grew since
            return False
        self.hold(job, output.name, data, hashlib.sha256(data).hexdigest(), output.content_type,
                  detected_language)
        return True

    def hold(self, job: ClaimedJob, name: str, data: bytes, sha256: str, content_type: str,
             detected_language: str | None) -> None:
        """Keep a finished job's result for the next batch call."""
        held = HeldResult(job_id=job.job_id, lease_token=job.lease_token, name=name,
                          data=base64.b64encode(data).decode("ascii"), sha256=sha256,
                          content_type=content_type, detected_language=detected_language)
        with self._lock:
            self._held.append((job, held))

    def flush(self, claim: int, worker: WorkerInfo | None) -> None:
        """Deliver the held results and claim up to `claim` jobs ahead. An unreachable
        coordinator keeps the results held for the next try."""
        with self._lock:
            self._call(claim if self.enabled else 0, worker, release=False)

    def give_back(self) -> None:
        """Deliver the held results and give the jobs claimed ahead back to the queue (a job
        turned long, or the worker stops)."""
        with self._lock:
            if self._held or self._ahead:
                self._call(0, None, release=True)

    def give_back_soon(self) -> None:
        """`give_back` on a thread of its own (the heartbeat launcher must not wait for it)."""
        if self._held or self._ahead:
            threading.Thread(target=self.give_back, name="batch-give-back", daemon=True).start()

    def _call(self, claim: int, worker: WorkerInfo | None, release: bool) -> None:
        """One batch call (the lock is held)."""
        held, ahead = list(self._held), list(self._ahead) if release else []
        if not (held or ahead or claim):
            return
        try:
            reply = self.client.batch([h for _, h in held], ahead, claim, worker)
        except CoordinatorUnavailable as exc:
            logger.warning("batch call failed (%d result(s) kept for the next try): %s", len(held), exc)
            return
        except CoordinatorError as exc:
            self._refused(exc)
            return
        self._held.clear()
        if release:
            self._ahead.clear()
        self._settled(held, reply.get("results"))
        _log_released(ahead, reply.get("released"))
        jobs = [ClaimedJob.from_dict(j) for j in reply.get("jobs") or () if isinstance(j, dict)]
        self._ahead.extend(jobs)
        if held or jobs:
            logger.debug("batch call: %d result(s), %d released, %d claimed", len(held), len(ahead), len(jobs))

    def _settled(self, held: list[tuple[ClaimedJob, HeldResult]], entries: Any) -> None:
        """Log and report what became of each held result."""
        by_id = {e.get("job_id"): e for e in entries or () if isinstance(e, dict)}
        for job, _ in held:
            entry = by_id.get(job.job_id)
            outcome = _entry_outcome(job, entry) if entry is not None else "unknown"
            if outcome == "completed":
                logger.info("job %s: completed (result delivered in a batch call)", job.job_id)
            elif entry is None:
                logger.error("job %s: the batch reply says nothing of its result", job.job_id)
            self.on_outcome(job.job_id, outcome)

    def _refused(self, exc: CoordinatorError) -> None:
        """The coordinator refused the call itself: stop batching. One without the route gets
        each held result as a plain completing upload; otherwise they are dropped (their jobs
        run again once the leases lapse) and the jobs claimed ahead are run as usual."""
        self.enabled = False
        held, self._held = list(self._held), []
        if exc.status in MISSING_ROUTE:
            logger.warning("the coordinator has no batch route: batching off, uploading held results")
            for job, result in held:
                self.on_outcome(job.job_id, self._upload(job, result))
            return
        logger.error("batch call refused, batching off (%d held result(s) dropped; their jobs run "
                     "again when their leases lapse): %s", len(held), exc)
        for job, _ in held:
            self.on_outcome(job.job_id, "error")

    def _upload(self, job: ClaimedJob, result: HeldResult) -> str:
        """Deliver one held result as a completing upload-result."""
        try:
            self.client.upload_result(job, Path(os.devnull), result.name, final=True,
                                      content_type=result.content_type, sha256=result.sha256,
                                      detected_language=result.detected_language,
                                      data=base64.b64decode(result.data))
        except LeaseLost as exc:
            return exc.outcome()
        except CoordinatorError as exc:
            logger.error("job %s: could not deliver its result: %s", job.job_id, exc)
            return "error"
        logger.info("job %s: completed", job.job_id)
        return "completed"


def _entry_outcome(job: ClaimedJob, entry: dict) -> str:
    """The outcome of one result entry: its status, or what its error means for the job."""
    if "error" not in entry:
        return str(entry.get("status") or "unknown")
    status = entry.get("status_code")
    error = str(entry.get("error"))
    exc = error_for(status if isinstance(status, int) else 500, entry,
                    f"job {job.job_id}: {entry.get('message') or error}", error)
    if isinstance(exc, LeaseLost):
        outcome = exc.outcome()
        logger.warning("job %s: batch delivery refused (%s): %s", job.job_id, outcome, exc)
        return outcome
    logger.error("job %s: batch delivery refused: %s", job.job_id, exc)
    return "error"


def _log_released(ahead: list[ClaimedJob], entries: Any) -> None:
    """Log the jobs given back (one line each; a refusal means the lease had ended anyway)."""
    by_id = {e.get("job_id"): e for e in entries or () if isinstance(e, dict)}
    for job in ahead:
        entry = by_id.get(job.job_id) or {}
        if "error" in entry:
            logger.info("job %s: not given back (%s)", job.job_id, entry.get("message") or entry["error"])
        else:
            logger.info("job %s: given back to the queue unstarted (%s)", job.job_id, entry.get("status"))
