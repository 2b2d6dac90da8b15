"""Edited summaries: the owner's corrections of a job's summaries, kept beside the originals.

`PUT /jobs/<id>/summary` validates the body (`shared.summary.parse_summary`, the MAX_SUMMARY_*
settings) and stores it as the artifacts `summary.edited.json` and `summary.edited.md` of the
job's completed run; `?language=<target>` edits the translated `summary.<target>.json` instead
(stored as `summary.<target>.edited.json` / `.md`). A later edit replaces those two; the worker's
files stay.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.languages import LANGUAGES
from shared.protocol import JobStatus
from shared.summary import (Summary, SummaryError, SummaryFiles, SummaryLimits, parse_summary,
                            to_markdown, translated_language)

from . import queries
from .errors import Conflict, NotFound, ValidationFailed
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


def check_language(value: str | None) -> str:
    """The `?language=` of an edit: "" (the source summary) or a code dubfleet knows (else 422)."""
    language = value or ""
    if language and language not in LANGUAGES:
        raise ValidationFailed(f"language {language[:16]!r} is not a language code dubfleet "
                               "knows", field="language")
    return language


def _choose(names: set[str], language: str) -> SummaryFiles:
    """The files `language` names: the translated summary in it when the job has one, else the
    source summary (whose language is checked once read)."""
    translated = SummaryFiles.of(language) if language else None
    return translated if translated and translated.json in names else SummaryFiles.of()


def _read(storage: Any, job: Job, artifact: Artifact) -> Summary:
    """A stored summary file, parsed (409 when it cannot be read)."""
    try:
        data = json.loads(storage.read_bytes(artifact.path, MAX_ORIGINAL_BYTES))
        return parse_summary(data, SummaryLimits(10_000, 10_000, 100_000), method="extractive")
    except (ValueError, OSError) as exc:
        logger.warning("job %s: stored %s unreadable: %s", job.id, artifact.name, exc)
        raise Conflict("the job's stored summary cannot be read") from None


def original(session: Session, storage: Any, job: Job,
             language: str = "") -> tuple[SummaryFiles, Summary]:
    """The worker's summary of a completed job in `language` (default: the source's) and its
    files; 409 when the job has no summary, 404 when it has none in that language."""
    if job.status != JobStatus.COMPLETED.value:
        raise Conflict("only a completed job's summary can be edited")
    artifacts = {a.name: a for a in queries.visible_artifacts(session, job)}
    if SummaryFiles.of().json not in artifacts:
        raise Conflict("the job has no summary (transcribe, subtitle and dub jobs with speech "
                       "have one)")
    files = _choose(set(artifacts), language)
    summary = _read(storage, job, artifacts[files.json])
    if language and files == SummaryFiles.of() and summary.language != language:
        raise NotFound(f"the job has no summary in {language!r} (its summaries: "
                       f"{', '.join(_languages(summary, artifacts))})")
    return files, summary


def _languages(source: Summary, artifacts: Mapping[str, Artifact]) -> list[str]:
    """The languages a job has summaries in, the source's first."""
    found = [translated_language(name) for name in artifacts]
    return [source.language or "source", *sorted(filter(None, found))]


def merge(edit: Summary, base: Summary) -> Summary:
    """The edit in the original's language (422 when the body names another) and duration."""
    if edit.language and base.language and edit.language != base.language:
        raise ValidationFailed(f"this summary is in {base.language!r}, the body says "
                               f"{edit.language!r} (choose a summary with ?language=)",
                               field="language")
    return replace(edit, language=base.language or edit.language,
                   duration=max(base.duration, edit.duration), method="edited", notes=())


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


def save(session: Session, storage: Any, job: Job, summary: Summary,
         files: SummaryFiles | None = None) -> list[str]:
    """Store the edit as `files`' edited JSON and Markdown (default: the source summary's,
    summary.edited.json/.md); return the artifact names."""
    files = files or SummaryFiles.of()
    content = {files.edited_json: (json.dumps(summary.to_dict(), ensure_ascii=False,
                                              indent=2).encode(), "application/json"),
               files.edited_md: (to_markdown(summary).encode(), "text/markdown")}
    stored = {name: storage.write_artifact(job.id, job.run_number, name, data)
              for name, (data, _) in content.items()}
    now = time.time()
    try:
        replaced = [_upsert(session, job, name, stored[name], kind, now)
                    for name, (_, kind) in content.items()]
        session.commit()
    except sa.exc.IntegrityError:  # another edit of the same job won the race
        session.rollback()
        for item in stored.values():
            storage.remove(item.relpath)
        raise Conflict("the summary was edited at the same time; try again") from None
    for path in filter(None, replaced):
        storage.remove(path)
    return list(content)
