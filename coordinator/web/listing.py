"""What the pages show: a filtered, sorted page of jobs, and the fleet (plain queries)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.protocol import JobKind, JobStatus

from ..models import Job, Worker

SORTS = {"newest": (Job.created_at.desc(), Job.id.desc()),
         "oldest": (Job.created_at.asc(), Job.id.asc()),
         "priority": (Job.priority.desc(), Job.created_at.desc(), Job.id.desc())}
PER_PAGE = 25
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Filters:
    """The jobs list's filters, sort and page, as kept in the query string."""

    status: str = ""
    kind: str = ""
    sort: str = "newest"
    page: int = 1

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "Filters":
        """Read the query string; unknown values fall back to the defaults (never an error)."""
        status = args.get("status", "")
        kind = args.get("kind", "")
        sort = args.get("sort", "newest")
        try:
            number = min(max(int(args.get("page", "1")), 1), MAX_PAGE)
        except ValueError:
            number = 1
        return cls(status=status if status in {s.value for s in JobStatus} else "",
                   kind=kind if kind in {k.value for k in JobKind} else "",
                   sort=sort if sort in SORTS else "newest", page=number)

    def query(self, **changes: Any) -> dict[str, Any]:
        """The query string of these filters with `changes` (defaults left out)."""
        values = {"status": self.status, "kind": self.kind, "sort": self.sort, "page": self.page}
        values.update(changes)
        defaults = {"sort": "newest", "page": 1}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}


def job_page(session: Session, owner_key_id: int | None, filters: Filters,
             per_page: int = PER_PAGE) -> tuple[list[Job], int]:
    """One page of jobs matching `filters` and the total (owner None: every owner's)."""
    where = []
    if owner_key_id is not None:
        where.append(Job.owner_key_id == owner_key_id)
    if filters.status:
        where.append(Job.status == filters.status)
    if filters.kind:
        where.append(Job.kind == filters.kind)
    total = int(session.scalar(select(func.count()).select_from(Job).where(*where)) or 0)
    rows = session.scalars(select(Job).where(*where).order_by(*SORTS[filters.sort])
                           .limit(per_page).offset((filters.page - 1) * per_page))
    return list(rows), total


def fleet(session: Session, window: float, now: float | None = None) -> list[dict[str, Any]]:
    """Workers seen within `window` seconds: identity, device, what they run and their jobs."""
    now = time.time() if now is None else now
    workers = list(session.scalars(select(Worker).where(Worker.last_seen >= now - window)
                                   .order_by(Worker.worker_id, Worker.session_id)))
    running = session.execute(select(Job.id, Job.kind, Job.stage, Job.progress, Job.worker_session)
                              .where(Job.status == JobStatus.RUNNING.value)).all()
    by_session: dict[str, list[Any]] = {}
    for row in running:
        by_session.setdefault(row.worker_session or "", []).append(row)
    return [_worker_row(worker, by_session.get(worker.session_id, []), now) for worker in workers]


def _worker_row(worker: Worker, jobs: list[Any], now: float) -> dict[str, Any]:
    """One worker as the fleet page shows it."""
    caps = worker.capabilities or {}
    return {"worker_id": worker.worker_id or worker.session_id, "hostname": worker.hostname,
            "device": worker.device, "kinds": caps.get("kinds", []),
            "asr_models": caps.get("asr_models", []),
            "target_languages": caps.get("target_languages", []),
            "engines": caps.get("engines", []), "memory_mb": caps.get("memory_mb", 0),
            "gpu_memory_mb": caps.get("gpu_memory_mb", 0),
            "seen_seconds_ago": max(0, round(now - worker.last_seen)),
            "jobs": [{"id": j.id, "kind": j.kind, "stage": j.stage, "progress": j.progress}
                     for j in jobs]}
