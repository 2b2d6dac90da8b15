"""Retention: finished jobs (rows and files) are deleted automatically once old enough.

`RETENTION_DAYS` applies to every kind (unset or 0: keep forever); `RETENTION_DAYS_BY_KIND`
(`"echo=1,transcribe=90"`) overrides it per kind (0 there: keep that kind forever). Only
completed, failed and cancelled jobs are ever removed, never a queued or running one. The reaper
applies it every `ORPHAN_SWEEP_INTERVAL`; `coordinator prune --days N` stays for manual use.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy.orm import Session

from shared.protocol import JobKind

from . import queries, search
from .storage import Storage

logger = logging.getLogger(__name__)
DAY = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep finished jobs: a default and per-kind overrides (None or 0: forever)."""

    default_days: float | None
    by_kind: Mapping[str, float]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RetentionPolicy":
        """Build from RETENTION_DAYS and RETENTION_DAYS_BY_KIND."""
        default = config.get("RETENTION_DAYS")
        return cls(float(default) if default else None, parse_by_kind(config.get("RETENTION_DAYS_BY_KIND")))

    @property
    def active(self) -> bool:
        """True when anything is ever deleted."""
        return bool(self.default_days) or any(self.by_kind.values())


def parse_by_kind(value: Any) -> dict[str, float]:
    """`"echo=1,dub=30"` (or a mapping) → {"echo": 1.0, "dub": 30.0}; unknown kinds are an error."""
    if not value:
        return {}
    pairs = value.items() if isinstance(value, Mapping) else (
        item.split("=", 1) for item in str(value).split(",") if item.strip())
    known = {k.value for k in JobKind}
    result: dict[str, float] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"RETENTION_DAYS_BY_KIND: expected kind=days, got {'='.join(pair)!r}")
        kind, days = str(pair[0]).strip(), float(pair[1])
        if kind not in known or days < 0:
            raise ValueError(f"RETENTION_DAYS_BY_KIND: bad entry {kind}={days} (kinds: {sorted(known)})")
        result[kind] = days
    return result


def apply(session: Session, storage: Storage, policy: RetentionPolicy,
          now: float | None = None) -> list[str]:
    """Delete the finished jobs the policy no longer keeps, rows then files; returns their ids."""
    removed: list[str] = []
    for kind, days in policy.by_kind.items():
        if days:
            removed += queries.prune(session, days * DAY, now=now, kinds=[kind])
    if policy.default_days:
        removed += queries.prune(session, policy.default_days * DAY, now=now,
                                 exclude_kinds=list(policy.by_kind))
    forget(session, removed)
    for job_id in removed:
        storage.remove_job(job_id)
    if removed:
        logger.info("retention: removed %d finished jobs and their files", len(removed))
    return removed


def forget(session: Session, job_ids: list[str]) -> None:
    """Drop deleted jobs' transcript lines from the search index."""
    if job_ids:
        search.remove_jobs(session, job_ids)
        session.commit()
