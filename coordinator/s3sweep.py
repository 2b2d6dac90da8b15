"""The orphan sweep for object storage: objects and unfinished multipart uploads no row needs.

Like the data directory's sweep (`coordinator.sweeper`), listed by prefix against the database:
objects of jobs with no row, artifact objects no row points to (a worker that died between its
upload and the call that publishes it, a refused upload whose deletion failed) and multipart
uploads never completed or aborted, once older than the grace period. Never an input of a job
that exists, nor anything of the current run of a running job (its worker may still publish it).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Iterator, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Artifact, Job
from .sweeper import BATCH, SweepReport

logger = logging.getLogger(__name__)

T = TypeVar("T")
RUNNING = "running"


def _chunks(items: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    """`items` in lists of at most `size`."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _job_of(relpath: str) -> str:
    """The job folder of `inputs/<job>/...` or `artifacts/<job>/...`."""
    parts = relpath.split("/")
    return parts[1] if len(parts) > 1 else ""


class S3Sweeper:
    """One pass over the bucket's prefix against the database."""

    def __init__(self, storage: Any, grace_seconds: float):
        self.storage = storage
        self.grace = grace_seconds

    def sweep(self, session: Session, now: float | None = None) -> SweepReport:
        """Remove old objects and uploads that no row needs; returns what went."""
        cutoff = (time.time() if now is None else now) - self.grace
        report = SweepReport()
        for sub in ("inputs", "artifacts"):
            for batch in _chunks(self.storage.objects(sub)):
                self._objects(session, sub, batch, cutoff, report)
            for batch in _chunks(self.storage.uploads(sub)):
                self._uploads(session, sub, batch, cutoff, report)
        if report.total:
            logger.info("sweeper: removed %d unfinished uploads, objects of %d jobs with no row and %d "
                        "objects no row names (%d bytes)", report.temp_files, report.job_folders,
                        report.files, report.bytes)
        return report

    def _jobs(self, session: Session, ids: set[str]) -> dict[str, str]:
        """For each job that has a row: the artifact folder of its current run if it is running
        ('' otherwise)."""
        rows = session.execute(select(Job.id, Job.status, Job.run_number).where(Job.id.in_(list(ids))))
        return {row.id: (f"artifacts/{row.id}/a{row.run_number}/" if row.status == RUNNING else "")
                for row in rows}

    def _objects(self, session: Session, sub: str, batch: list[tuple[str, float, int]], cutoff: float,
                 report: SweepReport) -> None:
        """Delete the old objects of one listing page that no row needs."""
        live = self._jobs(session, {_job_of(relpath) for relpath, _, _ in batch})
        paths: set[str] = set()
        if sub == "artifacts" and live:
            paths = set(session.scalars(select(Artifact.path).where(Artifact.job_id.in_(list(live)))))
        session.rollback()
        doomed = []
        for relpath, modified, size in batch:
            job = _job_of(relpath)
            if modified >= cutoff or (job in live and (sub == "inputs" or relpath in paths)):
                continue
            if job in live and live[job] and relpath.startswith(live[job]):
                continue  # the running attempt may still publish it
            doomed.append(relpath)
            report.bytes += size
            if job in live:
                report.files += 1
        report.job_folders += len({_job_of(r) for r in doomed if _job_of(r) not in live})
        report.removed.extend(doomed)
        self.storage.remove_many(doomed)

    def _uploads(self, session: Session, sub: str, batch: list[tuple[str, str, float]], cutoff: float,
                 report: SweepReport) -> None:
        """Abort old unfinished uploads, except those of a running job's current run."""
        live = self._jobs(session, {_job_of(relpath) for relpath, _, _ in batch})
        session.rollback()
        for relpath, upload_id, initiated in batch:
            current = live.get(_job_of(relpath), "")
            if initiated >= cutoff or (current and relpath.startswith(current)):
                continue
            self.storage.abort(relpath, upload_id)
            report.temp_files += 1
            report.removed.append(relpath)
