"""Read-side queue queries (positions, listings, stats) and pruning of finished jobs."""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import lean, statements
from .models import Artifact, Job
from .jobs import COMPLETED, FAILED, QUEUED, RUNNING, TERMINAL

logger = logging.getLogger(__name__)


def _now(now: float | None) -> float:
    """The given time, or the wall clock."""
    return time.time() if now is None else now


def _claim_order() -> list[Any]:
    """The claim order (ignoring capabilities): priority, then age, then id."""
    return [Job.priority.desc(), Job.created_at, Job.id]


def job_row(session: Session, job_id: str) -> lean.Record | None:
    """One committed job as a plain record (attribute access like a Job) with `queued_ahead` (its
    queue position less one, when queued), in one statement read below the ORM."""
    with lean.of(session).reading() as cursor:
        return cursor.first(statements.job_with_place(), {"p_id": job_id})


def _position_by_count(session: Session, job: Any) -> int:
    """1-based place of one queued job: the queued jobs ahead of it in claim order, counted on
    the claim index (cheaper than ranking the whole queue for one job); a `job_row` has it."""
    if isinstance(job, lean.Record) and job.get("queued_ahead") is not None:
        return int(job["queued_ahead"]) + 1
    params = {"p_priority": job.priority, "p_created": job.created_at, "p_id": job.id}
    with lean.of(session).reading() as cursor:
        ahead = cursor.scalar(statements.jobs_ahead(), params)
    return int(ahead or 0) + 1


def queue_positions(session: Session, jobs: Sequence[Any]) -> dict[str, int]:
    """1-based places in claim order of the queued jobs among `jobs`, in one windowed query
    (one count for a single job)."""
    queued = [job for job in jobs if job.status == QUEUED]
    if len(queued) == 1:
        return {queued[0].id: _position_by_count(session, queued[0])}
    ids = [job.id for job in queued]
    if not ids:
        return {}
    ranked = (select(Job.id.label("id"), func.row_number().over(order_by=_claim_order()).label("pos"))
              .where(Job.status == QUEUED).subquery())
    rows = session.execute(select(ranked.c.id, ranked.c.pos).where(ranked.c.id.in_(ids)))
    return {job_id: int(pos) for job_id, pos in rows}


def queue_position(session: Session, job: Any) -> int | None:
    """1-based place of a queued job in claim order (ignoring capabilities); None otherwise."""
    return queue_positions(session, [job]).get(job.id)


def visible_artifacts_of(session: Session, jobs: Sequence[Any]) -> dict[str, list[lean.Record]]:
    """The artifacts clients see for each of `jobs` (those of its current or completed run), as
    committed records (attribute access like an Artifact), read below the ORM."""
    runs = {job.id: job.run_number for job in jobs if job.status != QUEUED and job.run_number}
    if not runs:
        return {}
    found: dict[str, list[lean.Record]] = {}
    with lean.of(session).reading() as cursor:
        rows = cursor.all(statements.artifacts_of_jobs(), {"p_ids": list(runs)})
    for artifact in rows:
        if artifact.attempt == runs[artifact.job_id]:
            found.setdefault(artifact.job_id, []).append(artifact)
    return found


def visible_artifacts(session: Session, job: Job) -> list[lean.Record]:
    """The artifacts a client sees: those of the current (or completed) run."""
    return visible_artifacts_of(session, [job]).get(job.id, [])


def list_jobs(session: Session, owner_key_id: int | None, status: str | None, limit: int,
              offset: int) -> tuple[list[Job], int]:
    """A page of jobs, newest first, and the total (owner None: every owner)."""
    filters = []
    if owner_key_id is not None:
        filters.append(Job.owner_key_id == owner_key_id)
    if status:
        filters.append(Job.status == status)
    total = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
    page = session.scalars(select(Job).where(*filters).order_by(Job.created_at.desc(), Job.id.desc())
                           .limit(limit).offset(offset))
    return list(page), int(total)


def queue_info(session: Session, now: float | None = None) -> dict[str, Any]:
    """Counts by status, recent completions and failures, and throughput."""
    now = _now(now)

    def count(*where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(Job).where(*where)) or 0)

    recent_done = count(Job.status == COMPLETED, Job.finished_at >= now - 300)
    return {
        "queued": count(Job.status == QUEUED),
        "running": count(Job.status == RUNNING),
        "completed_last_hour": count(Job.status == COMPLETED, Job.finished_at >= now - 3600),
        "failed_last_hour": count(Job.status == FAILED, Job.finished_at >= now - 3600),
        "throughput_per_minute": recent_done / 5.0,
    }


def prune(session: Session, older_than_seconds: float, now: float | None = None,
          batch: int = 500, kinds: Sequence[str] | None = None,
          exclude_kinds: Sequence[str] = ()) -> list[str]:
    """Delete terminal jobs finished more than `older_than_seconds` ago; returns their ids.

    Never a queued or running job. `kinds` limits it to those kinds, `exclude_kinds` skips some.
    """
    cutoff = _now(now) - older_than_seconds
    removed: list[str] = []
    where = [Job.status.in_(TERMINAL), Job.finished_at < cutoff]
    if kinds is not None:
        where.append(Job.kind.in_(list(kinds)))
    if exclude_kinds:
        where.append(Job.kind.not_in(list(exclude_kinds)))
    while True:
        ids = list(session.scalars(select(Job.id).where(*where).limit(batch)))
        if not ids:
            session.rollback()
            return removed
        session.execute(sa.delete(Artifact).where(Artifact.job_id.in_(ids)))
        session.execute(sa.delete(Job).where(Job.id.in_(ids)))
        session.commit()
        removed.extend(ids)
