"""Uploads: an artifact of the current run recorded under the lease that fences it, the
completion it may carry (with claim-on-complete), and repeats after a lost reply."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy.orm import Session

from shared.protocol import ArtifactInfo

from . import lean, statements
from .claims import Claimed, NextClaim, _claim_within
from .errors import LeaseLost
from .leases import COMPLETED, RUNNING, _cancel_instead, _events, _locked_lease, _now, _refusal
from .notify import QueueEvents

logger = logging.getLogger(__name__)


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


def _repeat_upload(session: Session, job: lean.Record, info: ArtifactInfo) -> Upload:
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


def add_artifact(session: Session, job_id: str, token: str | None, info: ArtifactInfo,
                 publish: Callable[[], str], *, final: bool = False,
                 detected_language: str | None = None, events: QueueEvents | None = None,
                 now: float | None = None, then: NextClaim | None = None) -> Upload:
    """Record an uploaded artifact of the current run (replacing a same-named one); `final` completes.

    `publish` returns the path of the received file (the upload view renames it to its unique
    path before this transaction); it is called only by the request that wins this fenced
    transaction, and not at all when the stored artifact already has these bytes. A job whose cancel was requested ends `cancelled` instead. With
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
    if final:
        _announce_completed(events, job, info)
        if handed is not None:
            _events(events).job_changed(handed.job["id"])
    return Upload(COMPLETED if final else job.status, info, recorded.replaced, recorded.repeated,
                  recorded.path, next_tried=final and then is not None, next=handed)


def _announce_completed(events: QueueEvents | None, job: lean.Record, info: ArtifactInfo) -> None:
    """Log a committed completion and fire its events."""
    logger.info("job %s: completed by %s with %s", job.id, job.worker_id, info.name)
    _events(events).job_changed(job.id)
    _events(events).job_finished(job.id, job.callback_url, COMPLETED, job.kind)


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
        if not _common_case(job, info, final):
            raise _NeedsSession()  # rolls the transaction back
        recorded = _record_upload(cursor, job_id, info, publish, final, detected_language, now)
        handed = _claim_within(cursor, then, now) if final and then is not None else None
    return job, recorded, handed


def _common_case(job: lean.Record | None, info: ArtifactInfo, final: bool) -> bool:
    """Whether an upload under this (locked) running job's lease is the common case: this run's,
    no cancel requested, and no webhook delivery to commit with a completion."""
    return job is not None and not job.cancel_requested and info.attempt == job.run_number \
        and not (final and job.callback_url)


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


@dataclass(frozen=True)
class Completion:
    """A staged result that completes its job (a batch call's entry)."""

    job_id: str
    token: str
    info: ArtifactInfo
    path: str  # the published file
    detected_language: str | None = None


def complete_many(session: Session, items: list[Completion], events: QueueEvents | None = None,
                  now: float | None = None) -> list[Upload | None]:
    """Complete several jobs with their staged results in one transaction below the ORM (a batch
    call): each job is fenced by its own lease, exactly as `add_artifact(final=True)` would in
    its common case. None for an item that case does not cover (a refused lease, a repeat, a
    cancel requested, a webhook to deliver): `add_artifact` answers it alone, after this."""
    now = _now(now)
    done: list[tuple[lean.Record, _Recorded] | None] = []
    with lean.of(session).transaction(session) as cursor:
        for item in items:
            job = cursor.first(statements.leased_job_locked(),
                               {"p_id": item.job_id, "p_token": item.token, "p_statuses": [RUNNING]})
            if not _common_case(job, item.info, True):
                done.append(None)
                continue
            done.append((job, _record_upload(cursor, item.job_id, item.info, lambda p=item.path: p, True,
                                             item.detected_language, now)))
    uploads: list[Upload | None] = []
    for item, result in zip(items, done):
        if result is None:
            uploads.append(None)
            continue
        job, recorded = result
        _announce_completed(events, job, item.info)
        uploads.append(Upload(COMPLETED, item.info, recorded.replaced, recorded.repeated, recorded.path))
    return uploads
