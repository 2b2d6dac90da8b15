"""Re-dub: a corrected copy of a completed dub that re-voices only the edited lines.

`POST /jobs/<id>/redub` with `{"segments": [{"index": i, "text": "..."} or
{"index": i, "source_text": "..."}]}` makes a new `dub` job (its `parent_job_id` names the
parent) whose options carry the edits (`options.redub`). At submit the parent's input and its
segment bundle (`dub_segments.tar`: every line's voiced clip and placement) are given second paths
under the new job (`inputs/<new>/input`, `inputs/<new>/parent_segments`: a hard link or a copy
inside the store), so pruning the parent later cannot break the re-dub. The worker fetches the
bundle with `GET /jobs/<id>/download-parent` under its lease (`worker.stages.redub`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sqlalchemy.orm import Session

from shared.protocol import JobKind, JobStatus

from . import jobs, queries
from .errors import Conflict, ValidationFailed
from .models import Artifact, Job
from .notify import QueueEvents
from .validation import NewJob

logger = logging.getLogger(__name__)

BUNDLE = "dub_segments.tar"
REPORT = "dub_report.json"
OPTION = "redub"
MAX_REPORT_BYTES = 64 * 1024 * 1024
# A dub's own subtitles were used up by the parent: the re-dub starts from the parent's lines.
_DROPPED_OPTIONS = ("subtitles", "subtitles_language", OPTION)
_FIELD = "segments"


@dataclass(frozen=True)
class RedubLimits:
    """How big one re-dub request may be (the MAX_REDUB_* settings)."""

    max_edits: int = 200
    max_chars: int = 1000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RedubLimits":
        """The limits the app's settings name."""
        return cls(int(config["MAX_REDUB_EDITS"]), int(config["MAX_REDUB_TEXT_CHARS"]))


@dataclass(frozen=True)
class Edit:
    """One edited line: a new translated `text` (voiced as given), or a new `source_text`
    (translated again by the worker)."""

    index: int
    text: str | None = None
    source_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The edit as the job's options keep it."""
        key = "text" if self.text is not None else "source_text"
        return {"index": self.index, key: self.text if self.text is not None else self.source_text}


def _fail(message: str) -> ValidationFailed:
    return ValidationFailed(message, field=_FIELD)


def _text(value: Any, where: str, limits: RedubLimits) -> str:
    """One edited text: a non-empty string within the limit, whitespace collapsed."""
    if not isinstance(value, str):
        raise _fail(f"{where} must be a string")
    text = " ".join("".join(ch for ch in value if ch.isprintable() or ch.isspace()).split())
    if not text:
        raise _fail(f"{where} is empty")
    if len(text) > limits.max_chars:
        raise _fail(f"{where} is longer than {limits.max_chars} characters (MAX_REDUB_TEXT_CHARS)")
    return text


def _edit(item: Any, position: int, limits: RedubLimits) -> Edit:
    """One item of `segments`, checked."""
    where = f"segments[{position}]"
    if not isinstance(item, dict):
        raise _fail(f"{where} must be an object with index and text or source_text")
    index = item.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 10**9:
        raise _fail(f"{where}.index must be a line index (an integer >= 0)")
    unknown = sorted(set(item) - {"index", "text", "source_text"})
    if unknown:
        raise _fail(f"{where} has an unknown field {unknown[0][:40]!r}")
    if ("text" in item) == ("source_text" in item):
        raise _fail(f"{where} needs exactly one of text and source_text")
    if "text" in item:
        return Edit(index, text=_text(item["text"], f"{where}.text", limits))
    return Edit(index, source_text=_text(item["source_text"], f"{where}.source_text", limits))


def parse_edits(body: Mapping[str, Any], limits: RedubLimits) -> list[Edit]:
    """The request's edits: a non-empty list, at most `max_edits`, each index once (422)."""
    unknown = sorted(set(body) - {_FIELD})
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0][:40]!r}", field=unknown[0][:40])
    items = body.get(_FIELD)
    if not isinstance(items, list) or not items:
        raise _fail("segments must be a non-empty list of edited lines")
    if len(items) > limits.max_edits:
        raise _fail(f"at most {limits.max_edits} edited lines per re-dub (MAX_REDUB_EDITS)")
    edits = [_edit(item, i, limits) for i, item in enumerate(items)]
    seen: set[int] = set()
    for edit in edits:
        if edit.index in seen:
            raise _fail(f"line {edit.index} is edited twice")
        seen.add(edit.index)
    return sorted(edits, key=lambda e: e.index)


def check_parent(parent: Job) -> None:
    """Only a completed dub (or re-dub) can be re-dubbed: 422 for other kinds, 409 otherwise."""
    if parent.kind != JobKind.DUB.value:
        raise ValidationFailed(f"only dub jobs can be re-dubbed (this one is {parent.kind})",
                               field="job_id")
    if parent.status != JobStatus.COMPLETED.value:
        raise Conflict(f"only a completed dub can be re-dubbed (this one is {parent.status})")


def parent_files(session: Session, parent: Job) -> tuple[Artifact, Artifact]:
    """The parent's segment bundle and dub report (409 when it has none: dubbed before
    re-dubbing existed)."""
    found = {a.name: a for a in queries.visible_artifacts(session, parent)}
    if BUNDLE not in found or REPORT not in found:
        raise Conflict(f"the job has no {BUNDLE} (it was dubbed by an older worker): dub the "
                       "video again to correct it")
    return found[BUNDLE], found[REPORT]


def line_indices(report: bytes) -> set[int]:
    """The line indices of a dub report (dub_report.json)."""
    try:
        data = json.loads(report)
        return {int(row["index"]) for row in data["segments"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise Conflict(f"the job's {REPORT} cannot be read: {exc}") from None


def check_indices(edits: Sequence[Edit], indices: set[int]) -> None:
    """422 for an edit of a line the parent does not have."""
    for edit in edits:
        if edit.index not in indices:
            raise _fail(f"the dub has no line with index {edit.index}")


def new_job(parent: Job, edits: Sequence[Edit], bundle: Artifact) -> NewJob:
    """The re-dub's submission: the parent's languages and options, plus the edits."""
    options = {k: v for k, v in (parent.options or {}).items() if k not in _DROPPED_OPTIONS}
    options[OPTION] = {"parent_job_id": parent.id, "bundle_sha256": bundle.sha256,
                       "bundle_size": bundle.size, "edits": [e.to_dict() for e in edits]}
    return NewJob(kind=JobKind.DUB.value, source_language=parent.source_language,
                  target_language=parent.target_language, priority=parent.priority,
                  callback_url=parent.callback_url, asr_model=parent.asr_model, options=options,
                  source_url=None if parent.input_sha256 else parent.source_url,
                  input_name=parent.input_name or "input")


def bundle_of(job: Job) -> tuple[str, int] | None:
    """A re-dub's (sha256, size) of its copy of the parent's bundle; None for other jobs."""
    spec = (job.options or {}).get(OPTION)
    if not job.parent_job_id or not isinstance(spec, dict) or not spec.get("bundle_sha256"):
        return None
    return str(spec["bundle_sha256"]), int(spec.get("bundle_size") or 0)


def submit(session: Session, storage: Any, parent: Job, edits: Sequence[Edit], *,
           owner_key_id: int, default_max_attempts: int, idempotency_key: str | None = None,
           events: QueueEvents | None = None) -> tuple[Job, bool]:
    """Check the edits against the parent, give its input and bundle second paths under a new
    job id and queue the re-dub (the files go again when the insert does not happen)."""
    check_parent(parent)
    bundle, report = parent_files(session, parent)
    try:
        check_indices(edits, line_indices(storage.read_bytes(report.path, MAX_REPORT_BYTES)))
    except FileNotFoundError:
        raise Conflict("the dub's stored files are missing: dub the video again") from None
    new = new_job(parent, edits, bundle)
    inputs = (parent.input_size, parent.input_sha256) if parent.input_sha256 else (None, None)
    parent_id, bundle_path = parent.id, bundle.path
    session.rollback()  # no transaction stays open while files are copied
    job_id = jobs.new_job_id()
    try:
        if inputs[1]:
            storage.copy(storage.input_relpath(parent_id), storage.input_relpath(job_id))
        storage.copy(bundle_path, storage.parent_relpath(job_id))
        job, created = jobs.submit(session, new, owner_key_id=owner_key_id, job_id=job_id,
                                   idempotency_key=idempotency_key, input_size=inputs[0],
                                   input_sha256=inputs[1], parent_job_id=parent_id,
                                   default_max_attempts=default_max_attempts, events=events)
    except FileNotFoundError:
        storage.remove_job(job_id)
        raise Conflict("the dub's stored files are missing: dub the video again") from None
    except BaseException:
        storage.remove_job(job_id)
        raise
    if not created:
        storage.remove_job(job_id)
    logger.info("job %s: re-dub of %s queued (%d edited lines)", job.id, parent_id, len(edits))
    return job, created

