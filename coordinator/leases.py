"""What the queue's modules share: job states, the clock and event defaults, and the lease
checks and commits of the fenced calls (`jobs`, `claims`, `uploads`)."""
from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.protocol import JobStatus

from .errors import JobWasCancelled, LeaseLost
from .models import Job
from .notify import NullEvents, QueueEvents

logger = logging.getLogger(__name__)

QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value
TERMINAL = (COMPLETED, FAILED, CANCELLED)
_NULL_EVENTS = NullEvents()


def _now(now: float | None) -> float:
    """The given time, or the wall clock."""
    return time.time() if now is None else now


def _events(events: QueueEvents | None) -> QueueEvents:
    """The given event sink, or one that ignores everything."""
    return events if events is not None else _NULL_EVENTS


def _refusal(session: Session, job_id: str, token: str | None, reason: str | None = None) -> LeaseLost:
    """A LeaseLost saying what became of the job, so the worker can log what really happened."""
    row = session.execute(select(Job.status, Job.lease_token).where(Job.id == job_id)).first()
    session.rollback()
    if row is None:
        return LeaseLost(reason or "the job no longer exists", job_status=None, this_lease=False)
    this_lease = bool(token) and row.lease_token == token
    if reason is None:
        reason = (f"this lease already ended: the job is {row.status}" if this_lease
                  else f"the lease token is stale or wrong (the job is {row.status})")
    return LeaseLost(reason, job_status=row.status, this_lease=this_lease)


def _locked_lease(session: Session, job_id: str, token: str | None,
                  allow_completed: bool = False) -> Job:
    """Lock and return the running job held under `token`, or raise LeaseLost.

    With `allow_completed`, a job this very lease completed is returned too (repeated calls).
    """
    job = None
    if token:
        statuses = (RUNNING, COMPLETED) if allow_completed else (RUNNING,)
        job = session.scalar(select(Job).where(Job.id == job_id, Job.lease_token == token,
                                               Job.status.in_(statuses))
                             .with_for_update().execution_options(populate_existing=True))
    if job is None:
        raise _refusal(session, job_id, token)
    return job


def _commit(session: Session) -> None:
    """Commit, rolling back on failure."""
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _commit_ending(session: Session, events: QueueEvents | None, job_id: str, callback_url: str | None,
                   status: str) -> None:
    """Commit a transition to `status`; a terminal one records its webhook delivery in the same
    transaction (`job_ending`), so the ending and its delivery commit together or not at all."""
    try:
        if status in TERMINAL:
            _events(events).job_ending(session, job_id, callback_url, status)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _end_lease(job: Job, status: str, now: float) -> None:
    """End the lease and move the job to `status`.

    A terminal job keeps the token of the lease that ended it, so a repeated call from that
    worker (a retry after a lost reply) is recognised; the status fences it from any change.
    """
    job.status = status
    job.lease_expires_at = None
    job.updated_at = now
    job.eta_seconds = None
    if status in TERMINAL:
        job.finished_at = now
    else:
        job.lease_token = None
        job.worker_id = None
        job.stage = None
        job.available_at = now


def _cancel_instead(session: Session, job: Job, what: str, events: QueueEvents | None,
                    now: float) -> JobWasCancelled:
    """End a job whose cancel was requested `cancelled` instead of taking its result."""
    _end_lease(job, CANCELLED, now)
    job.message = "cancelled"
    job_id, callback_url, kind = job.id, job.callback_url, job.kind
    _commit_ending(session, events, job_id, callback_url, CANCELLED)
    logger.info("job %s: cancelled (cancel was requested; %s refused)", job_id, what)
    _events(events).job_changed(job_id)
    _events(events).job_finished(job_id, callback_url, CANCELLED, kind)
    return JobWasCancelled(f"the job was cancelled; the {what} was discarded",
                           job_status=CANCELLED, this_lease=True)
