"""Client endpoints: submit, list, view, cancel, retry, download (results and the input), queue
info."""
from __future__ import annotations

import logging
import mimetypes
from dataclasses import replace
from typing import Any, BinaryIO, Mapping
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request

from shared.protocol import IDEMPOTENCY_HEADER, JobStatus, KeyKind, Routes, is_valid_artifact_name

from .. import audit, jobs, queries, subtitles
from ..auth import current_principal, require_key
from ..errors import BadRequest, Conflict, NotFound, ValidationFailed
from ..extensions import db
from ..openapi import DOWNLOAD, SUBMIT_BODIES, documented
from ..serializers import job_view, job_views, submit_reply
from ..state import get_state
from ..storage import StoredFile, is_job_id
from ..validation import (LIMIT_RANGE, OFFSET_RANGE, NewJob, display_name, parse_idempotency_key,
                          parse_int, parse_submission)
from ..workers import workers_online
from .common import end_read, read_json, read_view, reply, send_stored, visible_job

logger = logging.getLogger(__name__)

bp = Blueprint("client", __name__)

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _submission() -> tuple[Mapping[str, Any], BinaryIO | None, str]:
    """The submitted fields, the input stream (None for source_url jobs) and its display name."""
    if request.mimetype in _FORM_TYPES:
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest("no file: send a multipart 'file' part, a raw body or a source_url")
        fields = _merged(request.args.to_dict(), request.form.to_dict())
        return fields, upload.stream, fields.get("filename") or upload.filename or ""
    if request.is_json:
        body = read_json(required=True)
        if not body.get("source_url"):
            raise BadRequest("no file: a JSON submission needs a source_url")
        return _merged(request.args.to_dict(), body), None, ""  # query fields too, like the others
    if request.content_length == 0:
        raise BadRequest("the uploaded file is empty")
    return request.args.to_dict(), request.stream, request.args.get("filename", "")


def _merged(query: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """Query and body fields together; a field given in both is refused (422) rather than one
    value silently overriding the other."""
    both = sorted(set(query) & set(body))
    if both:
        raise ValidationFailed(f"'{both[0][:40]}' is given both in the query string and in the "
                               "body: send each field once", field=both[0][:40])
    return {**query, **body}


def _subtitles(fields: Mapping[str, Any], new: NewJob) -> tuple[NewJob, subtitles.SubtitlesPart | None]:
    """A dub's own `subtitles` part, checked (422 with the reason), with its language recorded
    in the job's options; (new, None) without one."""
    upload = request.files.get(subtitles.FIELD) if request.mimetype in _FORM_TYPES else None
    if upload is None:
        subtitles.refuse_stray_fields(fields, new)
        return new, None
    limit = int(current_app.config["MAX_SUBTITLES_BYTES"])
    part = subtitles.read_part(upload.stream, upload.filename or "", limit)
    return subtitles.check(part, new, fields), part


def _input_name(new: NewJob, raw_name: str) -> NewJob:
    """Fill in the display name: the given file name, else the URL's last path segment."""
    name = new.input_name or display_name(raw_name)
    if not name and new.source_url:
        name = display_name(urlsplit(new.source_url).path)
    return replace(new, input_name=name or "input")


def _store_and_submit(new: NewJob, stream: BinaryIO | None, idem: str | None,
                      subs: subtitles.SubtitlesPart | None = None) -> tuple[Any, bool]:
    """Stream the input (and store a dub's subtitles) to disk outside any transaction, then
    insert the job; the files go when the insert does not happen."""
    state, principal = get_state(), current_principal()
    job_id = jobs.new_job_id()
    stored: StoredFile | None = None
    subs_stored: StoredFile | None = None
    try:
        if stream is not None:
            stored = state.storage.save_input(job_id, stream, current_app.config["MAX_UPLOAD_BYTES"])
        if subs is not None:
            subs_stored = state.storage.save_subtitles(job_id, subs.data)
        job, created = jobs.submit(
            db.session, new, owner_key_id=principal.key_id, job_id=job_id, idempotency_key=idem,
            input_size=stored.size if stored else None, input_sha256=stored.sha256 if stored else None,
            default_max_attempts=state.policy.max_attempts, events=state.events,
            subtitles_size=subs_stored.size if subs_stored else None,
            subtitles_sha256=subs_stored.sha256 if subs_stored else None)
    except BaseException:
        state.storage.remove_job(job_id)
        raise
    if not created:
        state.storage.remove_job(job_id)
    return job, created


def _audit(action: str, job_id: str, detail: str = "") -> None:
    """Record a client action in the audit log."""
    principal = current_principal()
    audit.record(db.engine, action, audit.Actor(principal.key_id, principal.name), job_id, detail)


@bp.post(Routes.JOBS)
@bp.post(Routes.UPLOAD_ASYNC)
@documented("client", ok={202: "SubmitReply", 200: "SubmitReply"}, body=SUBMIT_BODIES, body_required=True,
            query="SubmitQuery", headers=(IDEMPOTENCY_HEADER,), errors=(413, 422))
@require_key(KeyKind.CLIENT)
def submit_job() -> Response:
    """Accept a job (multipart file, raw body or source_url) and queue it."""
    idem = parse_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    fields, stream, raw_name = _submission()
    allow_private = bool(current_app.config["ALLOW_PRIVATE_CALLBACKS"])
    new = _input_name(parse_submission(fields, current_app.config["MAX_ATTEMPTS"],
                                       allow_private_callbacks=allow_private), raw_name)
    new, subs = _subtitles(fields, new)
    existing = jobs.find_idempotent(db.session, current_principal().key_id, idem)
    if existing is not None:
        return reply(submit_reply(db.session, existing), 200)
    db.session.rollback()  # no transaction may stay open while the upload streams
    job, created = _store_and_submit(new, stream, idem, subs)
    logger.info("job %s %s (%s)", job.id, "queued" if created else "deduplicated", job.kind)
    if created:
        extra = (f" subtitles={job.subtitles_size}B {new.options['subtitles_language']}"
                 f"/{new.options['subtitles']}" if subs else "")
        _audit("submit", job.id, f"kind={job.kind} {job.source_language}->{job.target_language} "
                                 f"input={job.input_name!r} size={job.input_size}{extra}")
    return reply(submit_reply(db.session, job), 202 if created else 200)


def _list_args() -> tuple[str | None, int, int]:
    """status, limit and offset of GET /jobs."""
    status = request.args.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        raise ValidationFailed(f"unknown status {status[:20]!r}", field="status")
    # Bigger pages are clamped (the reply's `limit` says so): one caller cannot make a page costly.
    limit = min(parse_int(request.args.get("limit", "50"), "limit", *LIMIT_RANGE),
                int(current_app.config["MAX_LIST_LIMIT"]))
    offset = parse_int(request.args.get("offset", "0"), "offset", *OFFSET_RANGE)
    return status, limit, offset


@bp.get(Routes.JOBS)
@documented("client", ok="JobList", query="ListQuery", errors=(422,))
@require_key(KeyKind.CLIENT)
@read_view
def list_jobs() -> Response:
    """A page of the caller's jobs (admin: everyone's), newest first."""
    status, limit, offset = _list_args()
    principal = current_principal()
    owner = None if principal.is_admin else principal.key_id
    with get_state().costly:
        page, total = queries.list_jobs(db.session, owner, status, limit, offset)
        body = {"jobs": job_views(db.session, page), "total": total, "limit": limit, "offset": offset}
        db.session.rollback()  # end the read snapshot before the JSON encoding
        return reply(body)


@bp.get(Routes.JOB)
@documented("client", ok="JobView")
@require_key(KeyKind.CLIENT)
@read_view
def get_job(job_id: str) -> Response:
    """The job view."""
    job = queries.job_row(db.session, job_id) if is_job_id(job_id) else None
    principal = current_principal()
    if job is None or not (principal.is_admin or job.owner_key_id == principal.key_id):
        raise NotFound()  # another client's job is 404, exactly like an unknown one
    view = job_view(db.session, job)
    end_read()  # before the JSON encoding
    return reply(view)


@bp.delete(Routes.JOB)
@documented("client", ok="JobView", errors=(409,))
@require_key(KeyKind.CLIENT)
def cancel_job(job_id: str) -> Response:
    """Cancel a queued job now, or ask a running one to stop."""
    visible_job(job_id, current_principal())
    job = jobs.cancel(db.session, job_id, events=get_state().events)
    _audit("cancel", job_id, f"-> {job.status}")
    return reply(job_view(db.session, job))


@bp.post(Routes.JOB_RETRY)
@documented("client", ok="JobView", errors=(409,))
@require_key(KeyKind.CLIENT)
def retry_job(job_id: str) -> Response:
    """Requeue a failed or cancelled job."""
    visible_job(job_id, current_principal())
    job = jobs.retry(db.session, job_id, events=get_state().events)
    _audit("retry", job_id)
    return reply(job_view(db.session, job))


def _send_artifact(job_id: str, name: str) -> Response:
    """Stream one of the job's visible artifacts."""
    job = visible_job(job_id, current_principal())
    match = [a for a in queries.visible_artifacts(db.session, job) if a.name == name]
    if not match:
        raise NotFound(f"the job has no artifact named {name[:128]!r}")
    artifact = match[0]
    relpath, sha256, content_type = artifact.path, artifact.sha256, artifact.content_type
    size = artifact.size
    db.session.rollback()  # release the database before streaming the file
    if request.headers.get("Range", "bytes=0-").startswith("bytes=0-"):  # once, not per range
        _audit("download", job_id, f"{name} ({size} bytes)")
    return send_stored(relpath, sha256, name, content_type)


@bp.get(Routes.JOB_DOWNLOAD)
@documented("client", ok=DOWNLOAD, headers=("Range",), errors=(409, 416))
@require_key(KeyKind.CLIENT)
@read_view
def download(job_id: str) -> Response:
    """The main result of a completed job."""
    job = visible_job(job_id, current_principal())
    if job.status != JobStatus.COMPLETED.value or not job.main_artifact:
        raise Conflict(f"the job has not completed (it is {job.status})")
    return _send_artifact(job_id, job.main_artifact)


@bp.get(Routes.JOB_ARTIFACT)
@documented("client", ok=DOWNLOAD, headers=("Range",), errors=(416,))
@require_key(KeyKind.CLIENT)
@read_view
def download_artifact(job_id: str, name: str) -> Response:
    """A named artifact of the completed run, or a partial one of the running attempt."""
    if not is_valid_artifact_name(name):
        raise NotFound("no such artifact")
    return _send_artifact(job_id, name)


@bp.get(Routes.JOB_INPUT)
@documented("client", ok=DOWNLOAD, headers=("Range",), errors=(416,))
@require_key(KeyKind.CLIENT)
@read_view
def download_job_input(job_id: str) -> Response:
    """The job's own uploaded input, as submitted (404 for a source_url job, which has none)."""
    job = visible_job(job_id, current_principal())
    if job.input_size is None or not job.input_sha256:
        raise NotFound("the job has no uploaded input (it was fetched from its source_url)")
    sha256, name = job.input_sha256, job.input_name or "input"
    db.session.rollback()  # release the database before streaming the file
    if request.headers.get("Range", "bytes=0-").startswith("bytes=0-"):
        _audit("download", job_id, f"input {name!r}")
    guessed = mimetypes.guess_type(name)[0] or ""  # media types only: nothing a browser renders
    content_type = guessed if guessed.startswith(("video/", "audio/")) else "application/octet-stream"
    return send_stored(get_state().storage.input_relpath(job_id), sha256, name, content_type)


@bp.get(Routes.QUEUE_INFO)
@documented("client", ok="QueueInfo")
@require_key(KeyKind.CLIENT)
@read_view
def queue_info() -> Response:
    """Queue counts and throughput."""
    info = queries.queue_info(db.session)
    info["workers_online"] = workers_online(db.session, current_app.config["WORKER_ONLINE_SECONDS"])
    return reply(info)
