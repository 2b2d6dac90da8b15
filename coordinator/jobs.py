"""The queue: submit, claim, lease-fenced worker calls, cancel/retry, reaper and stats.

Plain functions over an explicit SQLAlchemy session; each call is one transaction and
commits before it returns. Events (wake-ups, callbacks) fire after the commit.
"""
from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from shared.protocol import ArtifactInfo, Heartbeat, HeartbeatReply, JobStatus, WorkerInfo

from . import beatcache, lean, statements
from .database import read_only
from .errors import Conflict, JobWasCancelled, LeaseLost, NotFound
from .models import Artifact, Job
from .notify import NullEvents, QueueEvents
from .policy import QueuePolicy
from .validation import NewJob

logger = logging.getLogger(__name__)

QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value
TERMINAL = (COMPLETED, FAILED, CANCELLED)
_NULL_EVENTS = NullEvents()


@dataclass(frozen=True)
class Claimed:
    """A claimed job row plus the lease it was granted."""

    job: Mapping[str, Any]
    lease_token: str
    lease_expires_at: float


def _now(now: float | None) -> float:
    """The given time, or the wall clock."""
    return time.time() if now is None else now


def _events(events: QueueEvents | None) -> QueueEvents:
    """The given event sink, or one that ignores everything."""
    return events if events is not None else _NULL_EVENTS


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

def _claim_params(worker: WorkerInfo, policy: QueuePolicy, now: float) -> dict[str, Any]:
    """Bind parameters shared by both claim statements (a fresh lease token each time)."""
    return {"p_now": now, "p_token": secrets.token_urlsafe(24), "p_expires": now + policy.claim_lease_seconds,
            "p_worker": worker.worker_id, "p_session": worker.session_id or None,
            "p_inline_max": policy.inline_input_bytes}


def _next_params(worker: WorkerInfo, policy: QueuePolicy, now: float) -> dict[str, Any]:
    """Bind parameters of `statements.claim_next` (a lease, and the capability filter)."""
    return {**_claim_params(worker, policy, now), **_capability_params(worker)}


def _capability_params(worker: WorkerInfo) -> dict[str, Any]:
    """Bind parameters of the capability filter."""
    return {"p_kinds": list(worker.kinds), "p_models": list(worker.asr_models),
            "p_langs": list(worker.target_languages)}


def _run_claim(session: Session, stmt: sa.Update, params: dict[str, Any],
               events: QueueEvents | None) -> Claimed | None:
    """Execute a claiming UPDATE ... RETURNING and commit (below the ORM session)."""
    returned = lean.of(session).write_one(session, stmt, params)
    if not returned:
        return None
    row = returned[0]
    _events(events).job_changed(row["id"])
    return Claimed(row, params["p_token"], params["p_expires"])


@dataclass(frozen=True)
class NextClaim:
    """Claim-on-complete: the worker (and queue policy) whose next job the completing upload
    claims inside its own transaction (`add_artifact`)."""

    worker: WorkerInfo
    policy: QueuePolicy


_SAVEPOINT = sa.text("SAVEPOINT dubfleet_next_claim")
_UNDO_TO_SAVEPOINT = sa.text("ROLLBACK TO SAVEPOINT dubfleet_next_claim")


def _claim_within(cursor: lean.LeanCursor, then: NextClaim, now: float) -> Claimed | None:
    """Claim `then.worker`'s next job in the cursor's open (writing) transaction: a busy
    worker's job then costs one write transaction instead of two, and the write lock is taken
    once. A claim that fails is undone alone and hands nothing over; the upload still commits
    (SQLite undoes a failed statement by itself, PostgreSQL through a savepoint)."""
    if not then.worker.kinds:
        return None
    params = _next_params(then.worker, then.policy, now)
    postgres = not cursor.sqlite
    try:
        if postgres:
            cursor.execute(_SAVEPOINT, {})
        rows = cursor.all(statements.claim_next(postgres), params)
    except SQLAlchemyError:
        logger.exception("claim-on-complete for worker session %s failed; it will claim",
                         then.worker.session_id)
        if postgres:
            cursor.execute(_UNDO_TO_SAVEPOINT, {})
        return None
    return Claimed(rows[0], params["p_token"], params["p_expires"]) if rows else None


def claim_next(session: Session, worker: WorkerInfo, policy: QueuePolicy,
               now: float | None = None, events: QueueEvents | None = None) -> Claimed | None:
    """Claim the best job this worker can run, in one atomic statement; None when there is none."""
    if not worker.kinds:
        return None
    params = _next_params(worker, policy, _now(now))
    sqlite = lean.of(session).sqlite
    if sqlite and not _claimable(session, params):
        return None
    return _run_claim(session, statements.claim_next(not sqlite), params, events)


def _claimable(session: Session, params: dict[str, Any]) -> bool:
    """SQLite: whether any job is claimable for these capabilities, read without the write lock.
    An idle worker's claim (and every long-poll re-check) then never queues behind the writers;
    a job that arrives after this read wakes the long poll, which claims again."""
    with lean.of(session).reading() as cursor:
        return cursor.first(statements.claimable(), params) is not None


def claim_specific(session: Session, job_id: str, worker: WorkerInfo, policy: QueuePolicy,
                   now: float | None = None, events: QueueEvents | None = None) -> Claimed:
    """Claim one named job if it is still queued and available; 409 otherwise, 404 if unknown."""
    params = {**_claim_params(worker, policy, _now(now)), "p_id": job_id}
    claimed = _run_claim(session, statements.claim_one(), params, events)
    if claimed is not None:
        return claimed
    exists = session.scalar(select(Job.id).where(Job.id == job_id))
    session.rollback()
    if exists is None:
        raise NotFound()
    raise Conflict("the job is no longer queued (or is waiting out a retry backoff)")


def peek_next(session: Session, worker: WorkerInfo, now: float | None = None) -> Job | None:
    """The job `claim_next` would hand this worker now, without claiming it."""
    if not worker.kinds:
        return None
    params = {"p_now": _now(now), **_capability_params(worker)}
    return session.scalar(statements.peek_next(), params)


# --- lease-fenced calls -----------------------------------------------------------------

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
    confirmed, and every field the beat carries equals the stored one."""
    if not token:
        return None
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


@dataclass(frozen=True)
class Upload:
    """What an upload did: the job's status, the artifact as stored, and what it replaced."""

    status: str
    artifact: ArtifactInfo
    replaced: str | None = None  # a file the new row no longer points to (delete after commit)
    repeated: bool = False  # the same bytes were already stored: nothing changed
    path: str | None = None  # the file the row points to now
    next_tried: bool = False  # the completing transaction tried to claim the worker's next job
    next: Claimed | None = None  # ... and this is the job it claimed


def _artifact_row(cursor: lean.LeanCursor, job_id: str, run: int, name: str) -> lean.Record | None:
    """The artifact row (job, run, name), if any, read in the cursor's transaction (a plain
    record: no ORM loading on the hot path)."""
    return cursor.first(statements.artifact_row(), {"p_job": job_id, "p_run": run, "p_name": name})


def _locked_lease_row(session: Session, job_id: str, token: str | None) -> lean.Record:
    """Like `_locked_lease(allow_completed=True)`, as a plain record (the session's transaction
    holds the lock)."""
    row = None
    if token:
        row = lean.joined(session).first(statements.leased_job_locked(),
                                         {"p_id": job_id, "p_token": token, "p_statuses": [RUNNING, COMPLETED]})
    if row is None:
        raise _refusal(session, job_id, token)
    return row


def _store_artifact(cursor: lean.LeanCursor, row: lean.Record | None, info: ArtifactInfo, job_id: str,
                    path: str, now: float) -> None:
    """Insert the artifact row, or point the existing one at the new file."""
    values = {"p_path": path, "p_size": info.size, "p_sha256": info.sha256, "p_content_type": info.content_type,
              "p_created_at": now}
    if row is None:
        cursor.execute(statements.artifact_insert(), {"p_job_id": job_id, "p_attempt": info.attempt,
                                                      "p_name": info.name, **values})
    else:
        cursor.execute(statements.artifact_repoint(), {"p_id": row.id, **values})


@dataclass(frozen=True)
class _Recorded:
    """What `_record_upload` wrote: the file the row points to, the one it replaced, and whether
    the stored artifact already had these bytes."""

    path: str | None
    replaced: str | None
    repeated: bool


def _record_upload(cursor: lean.LeanCursor, job_id: str, info: ArtifactInfo, publish: Callable[[], str],
                   final: bool, detected_language: str | None, now: float) -> _Recorded:
    """In the open transaction that holds the job's lease: publish the file (unless these bytes
    are stored already), point the artifact row at it, and touch (or, `final`, complete) the job."""
    row = _artifact_row(cursor, job_id, info.attempt, info.name)
    repeated = row is not None and row.sha256 == info.sha256
    path, replaced = (row.path if row is not None else None), None
    if not repeated:
        replaced, path = path, publish()
    _store_artifact(cursor, row, info, job_id, path, now)
    touch = {"p_id": job_id, "p_now": now}
    if final:
        touch.update(p_main=info.name, p_lang=detected_language)
    cursor.execute(statements.upload_touch(final), touch)
    return _Recorded(path, replaced, repeated)


def artifact_info(row: Any) -> ArtifactInfo:
    """The wire form of an artifact row."""
    return ArtifactInfo(name=row.name, size=row.size, sha256=row.sha256, content_type=row.content_type,
                        attempt=row.attempt)


def _repeat_upload(session: Session, job: Job, info: ArtifactInfo) -> Upload:
    """An upload by the lease that already completed the job: same bytes → the same result."""
    row = _artifact_row(lean.joined(session), job.id, job.run_number, info.name)
    stored = None if row is None else artifact_info(row)
    path = None if row is None else row.path
    session.rollback()
    if stored is not None and stored.sha256 == info.sha256:
        logger.info("job %s: repeated upload of %s after completion: same bytes, same result",
                    job.id, info.name)
        return Upload(COMPLETED, stored, repeated=True, path=path)
    raise LeaseLost("the job already completed; this upload differs from its stored result",
                    job_status=COMPLETED, this_lease=True)


def handed_over(session: Session, job_id: str, token: str | None, now: float | None = None) -> Claimed | None:
    """The job that the completion of `job_id` under `token` claimed for the same worker session
    (claim-on-complete, at the completion's own time), while that lease still holds; None
    otherwise. A retried completing upload gets it again: the first reply was lost, so the
    worker never saw that claim. Only the holder of the completing lease can ask."""
    if not token:
        return None
    with lean.of(session).reading() as cursor:
        done = cursor.first(statements.leased_job(), {"p_id": job_id, "p_token": token, "p_statuses": [COMPLETED]})
        if done is None or not done.worker_session or done.finished_at is None:
            return None
        row = cursor.first(statements.claimed_on_completion(),
                           {"p_session": done.worker_session, "p_started": done.finished_at, "p_now": _now(now)})
    if row is None:
        return None
    logger.info("job %s: repeated completion hands over its next job %s again", job_id, row.id)
    return Claimed(row, row.lease_token, row.lease_expires_at)


def add_artifact(session: Session, job_id: str, token: str | None, info: ArtifactInfo,
                 publish: Callable[[], str], *, final: bool = False,
                 detected_language: str | None = None, events: QueueEvents | None = None,
                 now: float | None = None, then: NextClaim | None = None) -> Upload:
    """Record an uploaded artifact of the current run (replacing a same-named one); `final` completes.

    `publish` renames the received file into place and returns its path; it is called only by
    the request that wins this fenced transaction, and not at all when the stored artifact
    already has these bytes. A job whose cancel was requested ends `cancelled` instead. With
    `then`, a completing upload also claims that worker's next job in the same transaction.
    """
    now = _now(now)
    try:
        done = _lean_upload(session, job_id, token, info, publish, final, detected_language, now, then)
    except _NeedsSession:
        done = _session_upload(session, job_id, token, info, publish, final, detected_language, events,
                               now, then)
    if isinstance(done, Upload):
        return done
    job, recorded, handed = done
    stored = ArtifactInfo(name=info.name, size=info.size, sha256=info.sha256, content_type=info.content_type,
                          attempt=info.attempt)
    if final:
        logger.info("job %s: completed by %s with %s", job_id, job.worker_id, info.name)
        _events(events).job_changed(job_id)
        _events(events).job_finished(job_id, job.callback_url, COMPLETED, job.kind)
        if handed is not None:
            _events(events).job_changed(handed.job["id"])
    return Upload(COMPLETED if final else job.status, stored, recorded.replaced, recorded.repeated,
                  recorded.path, next_tried=final and then is not None, next=handed)


class _NeedsSession(Exception):
    """This upload takes the ORM session's path (`_session_upload`); nothing was changed."""


_Done = tuple[lean.Record, _Recorded, Claimed | None]


def _lean_upload(session: Session, job_id: str, token: str | None, info: ArtifactInfo,
                 publish: Callable[[], str], final: bool, detected_language: str | None, now: float,
                 then: NextClaim | None) -> _Done:
    """The common upload (the lease's job is running this run, no cancel was requested, and no
    webhook delivery has to commit with a completion) in one transaction below the ORM session,
    whose begin and commit cost a tiny job's upload about a quarter of its interpreter time.
    Every other case raises `_NeedsSession` before anything is written."""
    if not token:
        raise _NeedsSession()
    with lean.of(session).transaction(session) as cursor:
        job = cursor.first(statements.leased_job_locked(),
                           {"p_id": job_id, "p_token": token, "p_statuses": [RUNNING]})
        if job is None or job.cancel_requested or info.attempt != job.run_number or (final and job.callback_url):
            raise _NeedsSession()  # rolls the transaction back
        recorded = _record_upload(cursor, job_id, info, publish, final, detected_language, now)
        handed = _claim_within(cursor, then, now) if final and then is not None else None
    return job, recorded, handed


def _session_upload(session: Session, job_id: str, token: str | None, info: ArtifactInfo,
                    publish: Callable[[], str], final: bool, detected_language: str | None,
                    events: QueueEvents | None, now: float, then: NextClaim | None) -> _Done | Upload:
    """Every upload `_lean_upload` leaves: a refused lease (409 saying why), a repeat after
    completion, an earlier run, a cancel requested (ends `cancelled`), and a completion whose
    webhook delivery row commits with it (the ORM session's transaction)."""
    job = _locked_lease_row(session, job_id, token)
    if job.status == COMPLETED:
        return _repeat_upload(session, job, info)
    if info.attempt != job.run_number:
        session.rollback()
        raise LeaseLost("the upload belongs to an earlier run of this job")
    if job.cancel_requested:
        locked = _locked_lease(session, job_id, token)
        raise _cancel_instead(session, locked, f"upload of {info.name}", events, now)
    try:
        cursor = lean.joined(session)
        recorded = _record_upload(cursor, job_id, info, publish, final, detected_language, now)
        handed = None
        if final:
            _events(events).job_ending(session, job_id, job.callback_url, COMPLETED)
            handed = _claim_within(cursor, then, now) if then is not None else None
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return job, recorded, handed


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
