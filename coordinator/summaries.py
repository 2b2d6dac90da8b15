"""Edited summaries: the owner's corrections of a job's `summary.json`, kept beside the original.

`PUT /jobs/<id>/summary` validates the body (`shared.summary.parse_summary`, the MAX_SUMMARY_*
settings) and stores it as the artifacts `summary.edited.json` and `summary.edited.md` of the
job's completed run; a later edit replaces those two, the worker's `summary.json` stays.
"""
from __future__ import annotations

import io
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.protocol import JobStatus
from shared.summary import (EDITED_JSON, EDITED_MD, SUMMARY_JSON, Summary, SummaryError,
                            SummaryLimits, parse_summary, to_markdown)

from . import queries
from .errors import Conflict, ValidationFailed
from .models import Artifact, Job

logger = logging.getLogger(__name__)

MAX_ORIGINAL_BYTES = 4 * 1024 * 1024


def limits(config: Mapping[str, Any]) -> SummaryLimits:
    """The limits the app's settings name."""
    return SummaryLimits(int(config["MAX_SUMMARY_POINTS"]), int(config["MAX_SUMMARY_CHAPTERS"]),
                         int(config["MAX_SUMMARY_TEXT_CHARS"]))


def parse_edit(body: Mapping[str, Any], config: Mapping[str, Any]) -> Summary:
    """The edited summary of a request body (422 naming the bad field)."""
    try:
        return parse_summary(body, limits(config))
    except SummaryError as exc:
        raise ValidationFailed(str(exc), field=exc.field) from None


def original(session: Session, storage: Any, job: Job) -> Summary:
    """The worker's summary of a completed job (409 when the job has none)."""
    if job.status != JobStatus.COMPLETED.value:
        raise Conflict("only a completed job's summary can be edited")
    found = [a for a in queries.visible_artifacts(session, job) if a.name == SUMMARY_JSON]
    if not found:
        raise Conflict("the job has no summary (transcribe, subtitle and dub jobs with speech "
                       "have one)")
    try:
        data = json.loads(storage.read_bytes(found[0].path, MAX_ORIGINAL_BYTES))
        return parse_summary(data, SummaryLimits(10_000, 10_000, 100_000), method="extractive")
    except (ValueError, OSError) as exc:
        logger.warning("job %s: stored summary unreadable: %s", job.id, exc)
        raise Conflict("the job's stored summary cannot be read") from None


def merge(edit: Summary, base: Summary) -> Summary:
    """The edit, keeping the original's language when the edit names none, and the duration."""
    return replace(edit, language=edit.language or base.language,
                   duration=max(base.duration, edit.duration), method="edited", notes=())


def _store(storage: Any, job: Job, name: str, data: bytes) -> Any:
    """Publish bytes as a new file of the job's run (the same on disk and in object storage)."""
    if storage.direct:  # object storage has no save_artifact: stream the small body in one PUT
        relpath = storage.artifact_relpath(job.id, job.run_number, name, uuid.uuid4().hex[:16])
        return storage._stream(relpath, io.BytesIO(data), len(data))
    return storage.save_artifact(job.id, job.run_number, name, io.BytesIO(data), len(data))


def _upsert(session: Session, job: Job, name: str, stored: Any, content_type: str,
            now: float) -> str | None:
    """Point the (job, run, name) row at the stored file; return the file it pointed to."""
    row = session.scalar(sa.select(Artifact).where(
        Artifact.job_id == job.id, Artifact.attempt == job.run_number, Artifact.name == name))
    replaced = row.path if row is not None else None
    if row is None:
        row = Artifact(job_id=job.id, attempt=job.run_number, name=name)
        session.add(row)
    row.path, row.size, row.sha256 = stored.relpath, stored.size, stored.sha256
    row.content_type, row.created_at = content_type, now
    return replaced


def save(session: Session, storage: Any, job: Job, summary: Summary) -> list[str]:
    """Store the edit as summary.edited.json/.md; return the artifact names."""
    files = {EDITED_JSON: (json.dumps(summary.to_dict(), ensure_ascii=False, indent=2).encode(),
                           "application/json"),
             EDITED_MD: (to_markdown(summary).encode(), "text/markdown")}
    stored = {name: _store(storage, job, name, data) for name, (data, _) in files.items()}
    now = time.time()
    try:
        replaced = [_upsert(session, job, name, stored[name], kind, now)
                    for name, (_, kind) in files.items()]
        session.commit()
    except sa.exc.IntegrityError:  # another edit of the same job won the race
        session.rollback()
        for item in stored.values():
            storage.remove(item.relpath)
        raise Conflict("the summary was edited at the same time; try again") from None
    for path in filter(None, replaced):
        storage.remove(path)
    return list(files)
