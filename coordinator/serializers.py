"""Rows to wire dicts: the job view, claimed jobs and artifact infos."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from flask import current_app
from sqlalchemy.orm import Session

from shared.protocol import ClaimedJob, Routes

from .direct import claim_fields
from .models import Artifact, Job
from .policy import QueuePolicy
from .queries import queue_position, queue_positions, visible_artifacts_of
from .state import get_state
from .workers import waiting_for

_TIMES = ("created_at", "started_at", "finished_at", "updated_at")


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


_JOB_PATH = Routes.JOB.replace("<job_id>", "{}")
_LINKS = {"self": _JOB_PATH, "download": Routes.JOB_DOWNLOAD.replace("<job_id>", "{}"),
          "cancel": _JOB_PATH, "retry": Routes.JOB_RETRY.replace("<job_id>", "{}")}


def job_links(job_id: str) -> dict[str, str]:
    """Paths of the job's client endpoints."""
    return {name: path.format(job_id) for name, path in _LINKS.items()}


def artifact_view(artifact: Artifact) -> dict[str, Any]:
    """An artifact as listed in the job view."""
    return {"name": artifact.name, "size": artifact.size, "sha256": artifact.sha256,
            "content_type": artifact.content_type,
            "url": Routes.fill(Routes.JOB_ARTIFACT, job_id=artifact.job_id, name=artifact.name)}


def subtitles_view(job: Job) -> dict[str, Any] | None:
    """A dub's own subtitles as the job view lists them (None when it has none)."""
    if not job.subtitles_sha256:
        return None
    options = job.options or {}
    return {"size": job.subtitles_size, "sha256": job.subtitles_sha256,
            "language": options.get("subtitles_language"), "used_as": options.get("subtitles")}


@dataclass(frozen=True)
class ViewContext:
    """What job views need beyond the rows, fetched once per request in O(1) queries."""

    positions: Mapping[str, int]
    artifacts: Mapping[str, list[Any]]  # artifact records (coordinator.lean)
    workers: list[dict]


def view_context(session: Session, page: Sequence[Job]) -> ViewContext:
    """Queue positions, visible artifacts and online workers for a page of jobs (3 queries)."""
    window = float(current_app.config.get("WORKER_ONLINE_SECONDS", 60))
    queued = any(job.status == "queued" for job in page)
    return ViewContext(positions=queue_positions(session, page),
                       artifacts=visible_artifacts_of(session, page),
                       workers=get_state().workers.online(session, window) if queued else [])


class _Fields:
    """A Job's attributes read as a mapping (job views read records and Jobs alike)."""

    __slots__ = ("job",)

    def __init__(self, job: Job):
        self.job = job

    def __getitem__(self, name: str) -> Any:
        return getattr(self.job, name)


# Job view keys copied from the row as they are.
_PLAIN = ("kind", "status", "stage", "progress", "message", "eta_seconds", "attempts", "max_attempts",
          "worker_id", "source_language", "target_language", "detected_language", "priority",
          "asr_model", "source_url", "input_name", "input_size", "error", "main_artifact",
          "parent_job_id")  # parent_job_id: a re-dub's parent (coordinator.redub)


def job_view(session: Session, job: Job | Mapping[str, Any], context: ViewContext | None = None) -> dict[str, Any]:
    """The full client view of a job (GET /jobs/<id>) from a Job or a job record (the hot path
    reads records, `queries.job_row`); `context` is shared across a page."""
    context = context or view_context(session, [job])
    fields = job if isinstance(job, Mapping) else _Fields(job)
    job_id = fields["id"]
    view: dict[str, Any] = {"job_id": job_id}
    view.update({name: fields[name] for name in _PLAIN})
    view["queue_position"] = context.positions.get(job_id)
    view["options"] = fields["options"] or {}
    view["cancel_requested"] = bool(fields["cancel_requested"])
    view["subtitles"] = subtitles_view(job)
    for name in _TIMES:
        value = fields[name]
        view[name] = value
        view[f"{name}_iso"] = iso(value)
    view["artifacts"] = [artifact_view(a) for a in context.artifacts.get(job_id, ())]
    view["links"] = job_links(job_id)
    view["waiting_for"] = waiting_for(job, context.workers) if fields["status"] == "queued" else None
    return view


def job_views(session: Session, page: Sequence[Job]) -> list[dict[str, Any]]:
    """Views of a page of jobs with one shared context (O(1) queries for the whole page)."""
    context = view_context(session, page)
    return [job_view(session, job, context) for job in page]


def submit_reply(session: Session, job: Job) -> dict[str, Any]:
    """The body of a POST /jobs reply."""
    return {"job_id": job.id, "status": job.status,
            "queue_position": queue_position(session, job), "links": job_links(job.id)}


def claimed_job(row: Mapping[str, Any], lease_token: str, lease_expires_at: float,
                policy: QueuePolicy, input_inline: str | None = None) -> ClaimedJob:
    """The ClaimedJob handed to the worker that won the claim."""
    return ClaimedJob(
        job_id=row["id"], kind=row["kind"], lease_token=lease_token,
        lease_expires_at=lease_expires_at, attempt=row["attempts"],
        max_attempts=row["max_attempts"], heartbeat_interval=policy.heartbeat_interval,
        source_language=row["source_language"], target_language=row["target_language"],
        options=row["options"] or {}, input_name=row["input_name"] or "",
        input_size=row["input_size"], input_sha256=row["input_sha256"],
        source_url=row["source_url"], asr_model=row["asr_model"],
        max_source_bytes=int(current_app.config["MAX_SOURCE_BYTES"]) if row["source_url"] else None,
        subtitles_size=row["subtitles_size"], subtitles_sha256=row["subtitles_sha256"],
        input_inline=input_inline, **claim_fields(get_state().storage, row),
    )
