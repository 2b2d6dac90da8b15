"""Claims: the next job for a worker's capabilities in one atomic statement, a named job, a
peek, claim-on-complete inside a completing upload's transaction, and the job a lost
completing reply had handed over."""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from shared.protocol import WorkerInfo

from . import lean, statements
from .errors import Conflict, NotFound
from .leases import COMPLETED, _events, _now
from .models import Job
from .notify import QueueEvents
from .policy import QueuePolicy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    """A claimed job row plus the lease it was granted."""

    job: Mapping[str, Any]
    lease_token: str
    lease_expires_at: float


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
    now = _now(now)
    sqlite = lean.of(session).sqlite
    if sqlite and not _claimable(session, worker, now):
        return None
    return _run_claim(session, statements.claim_next(not sqlite), _next_params(worker, policy, now), events)


def _claimable(session: Session, worker: WorkerInfo, now: float) -> bool:
    """SQLite: whether any job is claimable for these capabilities, read without the write lock.
    An idle worker's claim (and every long-poll re-check) then never queues behind the writers,
    and draws no lease token; a job that arrives after this read wakes the long poll, which
    claims again."""
    with lean.of(session).reading() as cursor:
        return cursor.first(statements.claimable(), {"p_now": now, **_capability_params(worker)}) is not None


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


def claim_batch(session: Session, worker: WorkerInfo, policy: QueuePolicy, limit: int,
                now: float | None = None, events: QueueEvents | None = None) -> list[Claimed]:
    """Claim up to `limit` jobs for this worker in one transaction (a batch call): the claim
    statement again for each, every job with a lease token of its own; [] when none is there."""
    if not worker.kinds or limit <= 0:
        return []
    now = _now(now)
    store = lean.of(session)
    if store.sqlite and not _claimable(session, worker, now):
        return []
    claimed: list[Claimed] = []
    with store.transaction(session) as cursor:
        while len(claimed) < limit:
            params = _next_params(worker, policy, now)
            rows = cursor.all(statements.claim_next(not store.sqlite), params)
            if not rows:
                break
            claimed.append(Claimed(rows[0], params["p_token"], params["p_expires"]))
    for one in claimed:
        _events(events).job_changed(one.job["id"])
    return claimed
