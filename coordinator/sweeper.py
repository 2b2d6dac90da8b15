"""Remove stored files that no row points to: uploads cut off by a crash, inputs of jobs whose
row never committed, artifacts replaced or orphaned. Runs at start-up and then periodically.

A job's input folder (`inputs/<job>/`: the input and a dub's own subtitles) belongs to its row
and goes only with it. Anything younger than the grace period is left alone: an upload in flight keeps writing its
temp file, and a published file commits its row a moment after its rename.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Artifact, Job
from .storage import TEMP_PREFIX, Storage, is_job_id

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class SweepReport:
    """What one sweep removed."""

    temp_files: int = 0
    job_folders: int = 0
    files: int = 0
    bytes: int = 0
    removed: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Everything removed."""
        return self.temp_files + self.job_folders + self.files


def _old(path: Path, cutoff: float) -> bool:
    """True when `path` (and, for a folder, everything in it) was last changed before `cutoff`."""
    try:
        if path.is_dir():
            return all(p.stat().st_mtime < cutoff for p in [path, *path.rglob("*")])
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _size(path: Path) -> int:
    """Bytes under `path`."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _batches(items: Iterable[str]) -> Iterator[list[str]]:
    """`items` in lists of at most BATCH."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class Sweeper:
    """One pass over the data directory against the database."""

    def __init__(self, storage: Storage, grace_seconds: float):
        self.storage = storage
        self.grace = grace_seconds

    def sweep(self, session: Session, now: float | None = None) -> SweepReport:
        """Remove old temp files, folders of jobs with no row, and files no artifact row names."""
        cutoff = (time.time() if now is None else now) - self.grace
        report = SweepReport()
        self._temp_files(cutoff, report)
        for sub in ("inputs", "artifacts"):
            folder = self.storage.root / sub
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            for batch in _batches(names):
                self._job_batch(session, sub, batch, cutoff, report)
        if report.total:
            logger.info("sweeper: removed %d temp files, %d job folders and %d files with no row "
                        "(%d bytes)", report.temp_files, report.job_folders, report.files, report.bytes)
        return report

    def _remove(self, path: Path, report: SweepReport) -> None:
        """Delete a file or folder and count it."""
        report.bytes += _size(path)
        report.removed.append(self.storage.relative(path))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _temp_files(self, cutoff: float, report: SweepReport) -> None:
        """Upload temp files whose writer stopped before the cutoff (a crash or a cut-off client)."""
        for sub in ("inputs", "artifacts"):
            for path in (self.storage.root / sub).rglob(TEMP_PREFIX + "*"):
                if path.is_file() and _old(path, cutoff):
                    self._remove(path, report)
                    report.temp_files += 1

    def _job_batch(self, session: Session, sub: str, names: list[str], cutoff: float,
                   report: SweepReport) -> None:
        """Check one batch of job folders under inputs/ or artifacts/ against the database."""
        ids = [n for n in names if is_job_id(n)]
        known = set(session.scalars(select(Job.id).where(Job.id.in_(ids)))) if ids else set()
        paths: set[str] = set()
        if sub == "artifacts" and known:
            paths = set(session.scalars(select(Artifact.path).where(Artifact.job_id.in_(known))))
        session.rollback()
        for name in names:
            folder = self.storage.root / sub / name
            if name not in known:
                if _old(folder, cutoff):
                    self._remove(folder, report)
                    report.job_folders += 1
            elif sub == "artifacts":
                self._unreferenced_files(folder, paths, cutoff, report)

    def _unreferenced_files(self, folder: Path, paths: set[str], cutoff: float,
                            report: SweepReport) -> None:
        """Published artifact files of a live job that no row points to any more."""
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_dir():
                if not any(path.iterdir()) and _old(path, cutoff):
                    path.rmdir()
                continue
            if path.name.startswith(TEMP_PREFIX) or self.storage.relative(path) in paths:
                continue
            if _old(path, cutoff):
                self._remove(path, report)
                report.files += 1


def make_sweeper(storage: Any, grace_seconds: float) -> Any:
    """The orphan sweep for `storage`: files under the data directory, or objects in a bucket."""
    if storage.direct:
        from .s3sweep import S3Sweeper
        return S3Sweeper(storage, grace_seconds)
    return Sweeper(storage, grace_seconds)
