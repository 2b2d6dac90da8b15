"""The queue: submit, lease-fenced worker calls (heartbeat, complete, fail, release),
cancel/retry and the reaper; claims live in `claims`, uploads in `uploads` (both re-exported
here, so callers use `jobs.*` for the whole queue).

Plain functions over an explicit SQLAlchemy session; each call is one transaction and
commits before it returns. Events (wake-ups, callbacks) fire after the commit.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.protocol import Heartbeat, HeartbeatReply

from . import beatcache, lean, statements
from .claims import (Claimed, NextClaim, claim_batch, claim_next, claim_specific, handed_over,  # noqa: F401
                     peek_next)
from .database import read_only
from .errors import Conflict, LeaseLost, NotFound
from .leases import (CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, TERMINAL,  # noqa: F401
                     _cancel_instead, _commit, _commit_ending, _end_lease, _events, _locked_lease,
                     _now, _refusal)
from .models import Artifact, Job
from .notify import QueueEvents
from .policy import QueuePolicy
from .uploads import Completion, Upload, add_artifact, artifact_info, complete_many  # noqa: F401
from .validation import NewJob

logger = logging.getLogger(__name__)


# --- submit -----------------------------------------------------------------------------

def find_idempotent(session: Session, owner_key_id: int, key: str | None) -> Job | None:
    """The job this owner already submitted under `key`, if any."""
    if not key:
        return None
    return session.scalar(select(Job).where(Job.owner_key_id == owner_key_id,
                                            Job.idempotency_key == key))


def new_job_id() -> str:
    """A fresh job id (uuid4 hex)."""
    return uuid.uuid4().hex


def submit(session: Session, new: NewJob, *, owner_key_id: int, job_id: str | None = None,
           idempotency_key: str | None = None, input_size: int | None = None,
           input_sha256: str | None = None, default_max_attempts: int = 3,
           events: QueueEvents | None = None, now: float | None = None,
           subtitles_size: int | None = None,
           subtitles_sha256: str | None = None,
           parent_job_id: str | None = None) -> tuple[Job, bool]:
    """Insert a queued job; returns (job, created). A repeated idempotency key returns the first job.

    `subtitles_*` describe a dub's own subtitles, already stored next to its input."""
    now = _now(now)
    job = Job(id=job_id or new_job_id(), owner_key_id=owner_key_id, idempotency_key=idempotency_key,
              kind=new.kind, status=QUEUED, priority=new.priority,
              source_language=new.source_language, target_language=new.target_language,
              asr_model=new.asr_model, options=new.options, callback_url=new.callback_url,
              source_url=new.source_url, input_name=new.input_name, input_size=input_size,
              input_sha256=input_sha256, subtitles_size=subtitles_size,
              subtitles_sha256=subtitles_sha256, parent_job_id=parent_job_id,
              max_attempts=new.max_attempts or default_max_attempts,
              attempts=0, run_number=0, available_at=now, cancel_requested=False, progress=0.0,
              created_at=now, updated_at=now)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = find_idempotent(session, owner_key_id, idempotency_key)
        if existing is None:
            raise
        return existing, False
    _events(events).job_available()
    _events(events).job_changed(job.id)
    return job, True


# --- claim ------------------------------------------------------------------------------


# --- lease-fenced calls -----------------------------------------------------------------


def lease_run(session: Session, job_id: str, token: str | None, allow_completed: bool = False) -> lean.Record:
    """Check a lease without changing anything, in one plain read; returns the job's row (its
    run_number scopes uploads), or raises LeaseLost."""
    statuses = [RUNNING, COMPLETED] if allow_completed else [RUNNING]
    row = None
    if token:
        with lean.of(session).reading() as cursor:
            row = cursor.first(statements.leased_job(), {"p_id": job_id, "p_token": token, "p_statuses": statuses})
    if row is None:
        with read_only():
            raise _refusal(session, job_id, token)
    return row


def confirm(session: Session, job_id: str, token: str | None, now: float | None = None) -> None:
    """Record that the claiming worker has started (its first call after the claim)."""
    stmt = (sa.update(Job).where(Job.id == job_id, Job.lease_token == (token or ""),
                                 Job.status == RUNNING, Job.confirmed_at.is_(None))
            .values(confirmed_at=_now(now)))
    session.execute(stmt)
    _commit(session)


def heartbeat(session: Session, job_id: str, token: str | None, beat: Heartbeat,
              policy: QueuePolicy, now: float | None = None,
              events: QueueEvents | None = None) -> HeartbeatReply:
    """Renew the lease and record progress, fenced in one UPDATE; the reply carries cancellation.

    A beat that repeats the last one written, soon after it (a retry, an eager or hostile
    worker), is answered from a read when the row confirms it would change nothing: it never
    queues for the write lock. Any other beat is written without a read in front of it."""
    now = _now(now)
    if beatcache.RECENT.repeats(job_id, token, beat, now, policy.heartbeat_interval / 2):
        coalesced = _coalesced_beat(session, job_id, token, beat, policy, now)
        if coalesced is not None:
            return coalesced
    params = {"p_id": job_id, "p_token": token or "", "p_now": now,
              "p_expires": now + policy.lease_seconds,
              **{f"p_{name}": getattr(beat, name) for name in statements.HEARTBEAT_FIELDS}}
    returned = lean.of(session).write_one(session, statements.heartbeat(), params)  # below the ORM
    cancel = returned[0]["cancel_requested"] if returned else None
    if cancel is None:
        raise _refusal(session, job_id, token)
    beatcache.RECENT.wrote(job_id, params["p_token"], beat, now)
    _events(events).job_changed(job_id)
    return HeartbeatReply(cancel_requested=bool(cancel), lease_expires_at=now + policy.lease_seconds,
                          heartbeat_interval=policy.heartbeat_interval)


def _coalesced_beat(session: Session, job_id: str, token: str | None, beat: Heartbeat,
                    policy: QueuePolicy, now: float) -> HeartbeatReply | None:
    """The reply to a beat that needs no write, or None: the lease was renewed less than half a
    heartbeat interval ago (so it still has nearly all of `lease_seconds` to run), the start is
    confirmed, and every field the beat carries equals the stored one. (Only a beat the memory
    matched gets here, so `token` is one a write was accepted under.)"""
    with lean.of(session).reading() as cursor:
        row = cursor.first(statements.heartbeat_state(), {"p_id": job_id, "p_token": token})
    if row is None or row["confirmed_at"] is None or row["lease_expires_at"] is None:
        return None
    if row["lease_expires_at"] < now + policy.lease_seconds - policy.heartbeat_interval / 2:
        return None
    if any(getattr(beat, name) not in (None, row[name]) for name in statements.HEARTBEAT_FIELDS):
        return None
    return HeartbeatReply(cancel_requested=bool(row["cancel_requested"]),
                          lease_expires_at=row["lease_expires_at"], heartbeat_interval=policy.heartbeat_interval)


def _complete(job: Job, main_artifact: str, detected_language: str | None, now: float) -> None:
    """Mark the job completed with `main_artifact` as its result."""
    _end_lease(job, COMPLETED, now)
    job.main_artifact = main_artifact
    job.progress = 100.0
    job.stage = None
    job.error = None
    if detected_language:
        job.detected_language = detected_language


def complete(session: Session, job_id: str, token: str | None, main_artifact: str,
             detected_language: str | None = None, *, events: QueueEvents | None = None,
             now: float | None = None) -> Job:
    """Complete with an artifact already uploaded in this run (404 if it is absent).

    Repeating the call that completed the job answers the same; a job whose cancel was
    requested ends `cancelled` instead (409 `cancelled`).
    """
    now = _now(now)
    job = _locked_lease(session, job_id, token, allow_completed=True)
    if job.status == COMPLETED:
        same = job.main_artifact == main_artifact
        session.rollback()
        if same:
            return job
        raise LeaseLost("the job already completed with another main artifact",
                        job_status=COMPLETED, this_lease=True)
    if job.cancel_requested:
        raise _cancel_instead(session, job, "completion", events, now)
    found = session.scalar(select(Artifact.id).where(Artifact.job_id == job_id, Artifact.name == main_artifact,
                                                     Artifact.attempt == job.run_number))
    if found is None:
        session.rollback()
        raise NotFound(f"no artifact named {main_artifact!r} was uploaded in this attempt")
    _complete(job, main_artifact, detected_language, now)
    callback_url, worker, kind = job.callback_url, job.worker_id, job.kind
    _commit_ending(session, events, job_id, callback_url, COMPLETED)
    logger.info("job %s: completed by %s with %s", job_id, worker, main_artifact)
    _events(events).job_changed(job_id)
    _events(events).job_finished(job_id, callback_url, COMPLETED, kind)
    return job


def fail(session: Session, job_id: str, token: str | None, reason: str, retryable: bool,
         policy: QueuePolicy, *, events: QueueEvents | None = None, now: float | None = None,
         rand: float | None = None) -> Job:
    """Record a failed attempt: requeue after a backoff, or fail for good, or end cancelled."""
    now = _now(now)
    job = _locked_lease(session, job_id, token)
    if job.cancel_requested:
        _end_lease(job, CANCELLED, now)
        job.message = "cancelled"
    elif retryable and job.attempts < job.max_attempts:
        delay = policy.backoff(job.attempts, rand)
        _end_lease(job, QUEUED, now)
        job.available_at = now + delay
        job.message = f"attempt {job.attempts} failed: {reason}; retrying in {delay:.0f}s"[:2000]
    else:
        _end_lease(job, FAILED, now)
        job.error = reason
    status, callback_url, worker, kind = job.status, job.callback_url, job.worker_id, job.kind
    _commit_ending(session, events, job_id, callback_url, status)
    logger.info("job %s: attempt failed on %s (%s) -> %s: %s", job_id, worker,
                "retryable" if retryable else "permanent", status, reason[:300])
    _announce(events, job_id, status, callback_url, kind)
    return job


def release(session: Session, job_id: str, token: str | None, *, events: QueueEvents | None = None,
            now: float | None = None) -> Job:
    """Give the job back now (the attempt does not count), or end it cancelled if asked to."""
    now = _now(now)
    job = _locked_lease(session, job_id, token)
    if job.cancel_requested:
        _end_lease(job, CANCELLED, now)
    else:
        _end_lease(job, QUEUED, now)
        job.attempts = max(0, job.attempts - 1)
        job.message = "released by the worker"
    status, callback_url, kind = job.status, job.callback_url, job.kind
    _commit_ending(session, events, job_id, callback_url, status)
    logger.info("job %s: released by its worker -> %s", job_id, status)
    _announce(events, job_id, status, callback_url, kind)
    return job


def _announce(events: QueueEvents | None, job_id: str, status: str, callback_url: str | None,
              kind: str) -> None:
    """Fire the event matching a job's new status."""
    _events(events).job_changed(job_id)
    if status == QUEUED:
        _events(events).job_available()
    elif status in TERMINAL:
        _events(events).job_finished(job_id, callback_url, status, kind)


# --- client-side transitions ------------------------------------------------------------

def _locked_job(session: Session, job_id: str) -> Job:
    """Lock and return a job, or raise NotFound."""
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update()
                         .execution_options(populate_existing=True))
    if job is None:
        session.rollback()
        raise NotFound()
    return job


def cancel(session: Session, job_id: str, *, events: QueueEvents | None = None,
           now: float | None = None) -> Job:
    """Cancel: queued ends now, running is asked to stop, terminal is a 409."""
    now = _now(now)
    job = _locked_job(session, job_id)
    if job.status in TERMINAL:
        status = job.status
        session.rollback()
        raise Conflict(f"the job is already {status}")
    if job.status == QUEUED:
        _end_lease(job, CANCELLED, now)
        job.message = "cancelled"
    else:
        job.cancel_requested = True
        job.updated_at = now
    status, callback_url, kind = job.status, job.callback_url, job.kind
    _commit_ending(session, events, job_id, callback_url, status)
    logger.info("job %s: %s", job_id, "cancelled" if status == CANCELLED else "cancel requested")
    _announce(events, job_id, status, callback_url, kind)
    return job


def retry(session: Session, job_id: str, *, events: QueueEvents | None = None,
          now: float | None = None) -> Job:
    """Requeue a failed or cancelled job with its attempts reset."""
    now = _now(now)
    job = _locked_job(session, job_id)
    if job.status not in (FAILED, CANCELLED):
        status = job.status
        session.rollback()
        raise Conflict(f"only failed or cancelled jobs can be retried (this one is {status})")
    _end_lease(job, QUEUED, now)
    job.attempts = 0
    job.error = job.message = job.main_artifact = job.finished_at = None
    job.cancel_requested = False
    job.progress = 0.0
    _commit(session)
    logger.info("job %s: retried by the client -> queued", job_id)
    _events(events).job_available()
    _events(events).job_changed(job_id)
    return job


# --- reaper -----------------------------------------------------------------------------

def _reap_step(session: Session, extra: Sequence[Any], values: dict[str, Any], now: float) -> list[Any]:
    """One bulk UPDATE over expired leases; returns (id, callback_url, worker_session, kind) rows."""
    stmt = (sa.update(Job).where(Job.status == RUNNING, Job.lease_expires_at < now, *extra)
            .values(lease_token=None, lease_expires_at=None, updated_at=now, eta_seconds=None, **values)
            .returning(Job.id, Job.callback_url, Job.worker_session, Job.kind))
    return list(session.execute(stmt).all())


def reap(session: Session, *, events: QueueEvents | None = None, now: float | None = None) -> dict[str, int]:
    """Return expired leases to the queue (or fail them when attempts are used up, or cancel).

    A lease that expires before the worker made a single call (its claim reply was lost) never
    started: the job goes back without using an attempt. A claim that carried its input inline
    counts as started when made (`statements._CLAIM_SET`), so its expiry uses the attempt.
    """
    now = _now(now)
    try:
        cancelled = _reap_step(session, [Job.cancel_requested.is_(True)],
                               {"status": CANCELLED, "finished_at": now, "message": "cancelled"}, now)
        unstarted = _reap_step(session, [Job.confirmed_at.is_(None)], {
            "status": QUEUED, "available_at": now, "worker_id": None, "stage": None,
            "attempts": sa.case((Job.attempts > 0, Job.attempts - 1), else_=0),
            "message": "the worker never started its claim (no call after it); requeued without "
                       "using an attempt"}, now)
        failed = _reap_step(session, [Job.attempts >= Job.max_attempts],
                            {"status": FAILED, "finished_at": now, "error": "lease expired"}, now)
        requeued = _reap_step(session, [], {"status": QUEUED, "available_at": now, "worker_id": None,
                                            "stage": None, "message": "lease expired; requeued"}, now)
        for status, rows in ((CANCELLED, cancelled), (FAILED, failed)):
            for job_id, callback_url, _worker, _kind in rows:
                _events(events).job_ending(session, job_id, callback_url, status)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    _log_reaped(cancelled=cancelled, unstarted=unstarted, failed=failed, requeued=requeued)
    for row in (*cancelled, *unstarted, *failed, *requeued):
        _events(events).job_changed(row[0])
    for status, rows in ((CANCELLED, cancelled), (FAILED, failed)):
        for job_id, callback_url, _worker, kind in rows:
            _events(events).job_finished(job_id, callback_url, status, kind)
    if requeued or unstarted:
        _events(events).job_available()
    return {"requeued": len(requeued), "failed": len(failed), "cancelled": len(cancelled),
            "unstarted": len(unstarted)}


def _log_reaped(**groups: list[Any]) -> None:
    """One log line per job the reaper moved, naming the worker whose lease expired."""
    for what, rows in groups.items():
        for job_id, _callback, worker, _kind in rows:
            logger.info("reaper: job %s %s (lease of worker session %s expired)", job_id, what, worker)
