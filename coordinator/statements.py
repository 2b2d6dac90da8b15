"""Prebuilt SQL for the hot paths (claim, peek), compiled once and run with bind parameters."""
from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from shared.protocol import LANGUAGE_KINDS, JobStatus

from .models import Artifact, Job

QUEUED, RUNNING, COMPLETED = JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.COMPLETED.value
_T = Job.__table__.c
_A = Artifact.__table__.c

# Columns set by a claim: a new lease, one more attempt, a new run (which scopes artifacts).
_CLAIM_SET = {
    "status": RUNNING, "lease_token": sa.bindparam("p_token"), "lease_expires_at": sa.bindparam("p_expires"),
    "attempts": _T.attempts + 1, "run_number": _T.run_number + 1,
    "worker_id": sa.bindparam("p_worker"), "worker_session": sa.bindparam("p_session"),
    "started_at": sa.bindparam("p_now"), "updated_at": sa.bindparam("p_now"), "stage": None,
    "progress": 0.0, "message": None, "eta_seconds": None,
    # A small stored input travels inside the claim reply, so no download call will confirm the
    # start: such a claim counts as started at once (a crashing job still uses up its attempts).
    "confirmed_at": sa.case((sa.and_(_T.input_sha256.is_not(None), _T.input_size.is_not(None),
                                     _T.input_size <= sa.bindparam("p_inline_max")),
                             sa.bindparam("p_now")), else_=None),
}


def _pick(lock: bool) -> sa.Select:
    """SELECT id of the best claimable job for the capabilities in :p_kinds/:p_models/:p_langs."""
    pick = (sa.select(_T.id).where(
        _T.status == QUEUED, _T.available_at <= sa.bindparam("p_now"),
        _T.kind.in_(sa.bindparam("p_kinds", expanding=True)),
        sa.or_(_T.asr_model.is_(None), _T.asr_model.in_(sa.bindparam("p_models", expanding=True))),
        sa.or_(_T.kind.not_in(LANGUAGE_KINDS), _T.target_language.in_(sa.bindparam("p_langs", expanding=True))))
        .order_by(_T.priority.desc(), _T.created_at, _T.id).limit(1))
    return pick.with_for_update(skip_locked=True) if lock else pick


@functools.lru_cache(maxsize=None)
def claim_next(postgres: bool) -> sa.Update:
    """UPDATE jobs SET <lease> WHERE id = (SELECT id ... LIMIT 1 [FOR UPDATE SKIP LOCKED]) RETURNING *."""
    return (sa.update(Job.__table__).where(_T.id == _pick(lock=postgres).scalar_subquery(), _T.status == QUEUED)
            .values(**_CLAIM_SET).returning(*Job.__table__.c))


@functools.lru_cache(maxsize=None)
def claimable() -> sa.Select:
    """SELECT the id claim_next would take, without locking or changing it (a cheap pre-check)."""
    return _pick(lock=False)


@functools.lru_cache(maxsize=None)
def claim_one() -> sa.Update:
    """UPDATE jobs SET <lease> WHERE id = :p_id AND status = 'queued' AND available_at <= :p_now RETURNING *."""
    return (sa.update(Job.__table__)
            .where(_T.id == sa.bindparam("p_id"), _T.status == QUEUED, _T.available_at <= sa.bindparam("p_now"))
            .values(**_CLAIM_SET).returning(*Job.__table__.c))


@functools.lru_cache(maxsize=None)
def heartbeat() -> sa.Update:
    """UPDATE jobs SET <renewed lease>, stage/progress/message/eta_seconds = COALESCE(:p_x, x)
    WHERE id = :p_id AND lease_token = :p_token AND status = 'running' RETURNING cancel_requested
    (a field the beat leaves out, bound as NULL, keeps its value)."""
    def keep(name: str) -> sa.ColumnElement:
        return sa.func.coalesce(sa.bindparam(f"p_{name}", type_=_T[name].type), _T[name])

    return (sa.update(Job.__table__)
            .where(_T.id == sa.bindparam("p_id"), _T.lease_token == sa.bindparam("p_token"), _T.status == RUNNING)
            .values(lease_expires_at=sa.bindparam("p_expires"), updated_at=sa.bindparam("p_now"),
                    confirmed_at=sa.func.coalesce(_T.confirmed_at, sa.bindparam("p_now")),
                    **{name: keep(name) for name in HEARTBEAT_FIELDS})
            .returning(_T.cancel_requested))


HEARTBEAT_FIELDS = ("stage", "progress", "message", "eta_seconds")


@functools.lru_cache(maxsize=None)
def heartbeat_state() -> sa.Select:
    """SELECT what a heartbeat would change, of the running job this lease holds (no row: the
    lease is not held)."""
    return (sa.select(_T.cancel_requested, _T.lease_expires_at, _T.confirmed_at,
                      *(_T[name] for name in HEARTBEAT_FIELDS))
            .where(_T.id == sa.bindparam("p_id"), _T.lease_token == sa.bindparam("p_token"),
                   _T.status == RUNNING))


@functools.lru_cache(maxsize=None)
def peek_next() -> sa.Select:
    """SELECT the job claim_next would take, without locking or changing it."""
    return sa.select(Job).where(Job.id == _pick(lock=False).scalar_subquery())


@functools.lru_cache(maxsize=None)
def leased_job() -> sa.Select:
    """SELECT the job held under :p_token whose status is one of :p_statuses (a lease check)."""
    return sa.select(Job.__table__).where(_T.id == sa.bindparam("p_id"), _T.lease_token == sa.bindparam("p_token"),
                                          _T.status.in_(sa.bindparam("p_statuses", expanding=True)))


@functools.lru_cache(maxsize=None)
def claimed_on_completion() -> sa.Select:
    """SELECT the running job claimed for worker session :p_session at :p_started (a completing
    upload's claim-on-complete, made at the completion's time) whose lease holds at :p_now."""
    return (sa.select(Job.__table__)
            .where(_T.status == RUNNING, _T.lease_expires_at > sa.bindparam("p_now"),
                   _T.worker_session == sa.bindparam("p_session"), _T.started_at == sa.bindparam("p_started"))
            .order_by(_T.id).limit(1))


@functools.lru_cache(maxsize=None)
def jobs_ahead() -> sa.Select:
    """SELECT count(*) of the queued jobs ahead of (:p_priority, :p_created, :p_id) in claim order
    (priority desc, then age, then id): one count on the claim index for one job's position."""
    return _count_queued_ahead(Job.__table__, sa.bindparam("p_priority"), sa.bindparam("p_created"),
                               sa.bindparam("p_id"))


def _count_queued_ahead(table: sa.FromClause, priority: Any, created: Any, job_id: Any) -> sa.Select:
    """SELECT count(*) of `table`'s queued jobs ahead of (priority, created, job_id) in claim
    order: priority desc, then age, then id."""
    c = table.c
    ahead = sa.or_(c.priority > priority,
                   sa.and_(c.priority == priority,
                           sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < job_id))))
    return sa.select(sa.func.count()).select_from(table).where(c.status == QUEUED, ahead)


@functools.lru_cache(maxsize=None)
def job_with_place() -> sa.Select:
    """SELECT the job :p_id with `queued_ahead`, the count of `jobs_ahead()` when it is queued
    (NULL otherwise): a job view's row and queue position in one statement."""
    count = _count_queued_ahead(Job.__table__.alias("ahead"), _T.priority, _T.created_at, _T.id).scalar_subquery()
    return (sa.select(Job.__table__, sa.case((_T.status == QUEUED, count), else_=None).label("queued_ahead"))
            .where(_T.id == sa.bindparam("p_id")))


@functools.lru_cache(maxsize=None)
def artifacts_of_jobs() -> sa.Select:
    """SELECT the artifacts of the jobs :p_ids (every run), oldest first."""
    return (sa.select(Artifact.__table__).where(_A.job_id.in_(sa.bindparam("p_ids", expanding=True)))
            .order_by(_A.created_at, _A.id))


@functools.lru_cache(maxsize=None)
def leased_job_locked() -> sa.Select:
    """`leased_job()` FOR UPDATE (PostgreSQL locks the row; SQLite holds the write lock)."""
    return leased_job().with_for_update()


@functools.lru_cache(maxsize=None)
def artifact_row() -> sa.Select:
    """SELECT the artifact row (:p_job, :p_run, :p_name)."""
    return sa.select(Artifact.__table__).where(_A.job_id == sa.bindparam("p_job"), _A.attempt == sa.bindparam("p_run"),
                                               _A.name == sa.bindparam("p_name"))


ARTIFACT_FILE_COLUMNS = ("path", "size", "sha256", "content_type", "created_at")


@functools.lru_cache(maxsize=None)
def artifact_insert() -> sa.Insert:
    """INSERT an artifact row (job_id, attempt, name and the file columns, bound by name)."""
    return sa.insert(Artifact.__table__).values(
        {name: sa.bindparam(f"p_{name}") for name in ("job_id", "attempt", "name", *ARTIFACT_FILE_COLUMNS)})


@functools.lru_cache(maxsize=None)
def artifact_repoint() -> sa.Update:
    """UPDATE artifacts SET <file columns> WHERE id = :p_id (a re-upload of the same name)."""
    return (sa.update(Artifact.__table__).where(_A.id == sa.bindparam("p_id"))
            .values({name: sa.bindparam(f"p_{name}") for name in ARTIFACT_FILE_COLUMNS}))


@functools.lru_cache(maxsize=None)
def upload_touch(final: bool) -> sa.Update:
    """UPDATE the job an upload belongs to: confirm its start and, with `final`, complete it with
    :p_main as the main artifact (detected_language = COALESCE(:p_lang, detected_language))."""
    values: dict = {"updated_at": sa.bindparam("p_now"), "confirmed_at": sa.func.coalesce(_T.confirmed_at, sa.bindparam("p_now"))}
    if final:
        values.update(status=COMPLETED, lease_expires_at=None, eta_seconds=None, finished_at=sa.bindparam("p_now"),
                      main_artifact=sa.bindparam("p_main"), progress=100.0, stage=None, error=None,
                      detected_language=sa.func.coalesce(sa.bindparam("p_lang", type_=_T.detected_language.type),
                                                         _T.detected_language))
    return sa.update(Job.__table__).where(_T.id == sa.bindparam("p_id")).values(values)
