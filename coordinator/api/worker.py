"""Worker endpoints: peek, claim (long-poll), input (and subtitles) download, heartbeat, upload,
finish."""
from __future__ import annotations

import base64
import logging
import random
from dataclasses import dataclass
from typing import Any, Mapping

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from shared.protocol import (LEASE_HEADER, MAX_CLAIM_WAIT_SECONDS, SHA256_HEADER, WORKER_SESSION_HEADER,
                             ArtifactInfo, KeyKind, Routes, WorkerInfo)

from .. import direct, jobs, search
from ..auth import require_key
from ..errors import NotFound, ValidationFailed
from ..extensions import db
from ..openapi import DOWNLOAD, LEASED, SESSION, UPLOAD_BODIES, documented
from ..serializers import claimed_job, job_view
from ..state import get_state
from ..validation import (CLAIM_WAIT_RANGE, parse_bool, parse_content_type, parse_csv, parse_fail_report,
                          parse_heartbeat, parse_label, parse_language, parse_number, parse_sha256,
                          parse_worker_info)
from .common import no_content, read_json, reply, require_job_id, send_stored

logger = logging.getLogger(__name__)

bp = Blueprint("worker", __name__)


def session_header() -> str:
    """The caller's X-Worker-Session header ('' when absent)."""
    return request.headers.get(WORKER_SESSION_HEADER, "")


def touch(info: WorkerInfo | None = None) -> None:
    """Record that this worker session is alive (throttled, never fails the request)."""
    get_state().workers.touch(db.session, info.session_id if info else session_header(), info)


def _lease_token() -> str | None:
    """The X-Lease-Token header."""
    return request.headers.get(LEASE_HEADER) or None


def _inline_input(row: Mapping[str, Any]) -> str | None:
    """A small uploaded input, base64, to send inside the claim reply (None: the worker fetches
    it). A file that cannot be read now is simply not inlined: the download route reports it."""
    limit = get_state().policy.inline_input_bytes  # the claim counted such a job as started
    size, storage = row["input_size"], get_state().storage
    if storage.direct or size is None or size > limit or not row["input_sha256"]:
        return None
    try:
        data = storage.resolve(storage.input_relpath(row["id"])).read_bytes()
    except OSError:
        return None
    return base64.b64encode(data).decode("ascii") if len(data) == size else None


def claimed_body(claimed: jobs.Claimed) -> dict[str, Any]:
    """The ClaimedJob of a won claim (a small input inline), counted and logged."""
    body = claimed_job(claimed.job, claimed.lease_token, claimed.lease_expires_at, get_state().policy,
                       input_inline=_inline_input(claimed.job))
    get_state().metrics.claimed(body.job_id, body.kind)
    logger.info("job %s claimed by %s (attempt %s)", body.job_id, claimed.job["worker_id"], body.attempt)
    return body.to_dict()


def _claimed_reply(claimed: jobs.Claimed) -> Response:
    """200 with the ClaimedJob (a small input inline)."""
    return reply(claimed_body(claimed))


@bp.get(Routes.NEXT)
@documented("worker", ok={200: "JobView", 204: None}, query="NextQuery", headers=SESSION, errors=(422,))
@require_key(KeyKind.WORKER)
def peek_next() -> Response:
    """The job this worker would get next, without claiming it (204 when none)."""
    args = request.args
    info = parse_worker_info({"kinds": list(parse_csv(args.get("kinds"))) or ["echo"],
                              "asr_models": list(parse_csv(args.get("asr_models"))),
                              "target_languages": list(parse_csv(args.get("target_languages")))},
                             session_header())
    touch()
    job = jobs.peek_next(db.session, info)
    return no_content() if job is None else reply(job_view(db.session, job))


def _claim_request() -> tuple[WorkerInfo, float]:
    """The worker info and the long-poll wait of POST /jobs/claim."""
    body = read_json()
    info = parse_worker_info(body.get("worker"), session_header())
    wait = parse_number(body.get("wait", 0), "wait", *CLAIM_WAIT_RANGE)
    return info, min(wait, MAX_CLAIM_WAIT_SECONDS)


@bp.post(Routes.CLAIM_NEXT)
@documented("worker", ok={200: "ClaimedJob", 204: None}, body="ClaimRequest", headers=SESSION,
            errors=(422,))
@require_key(KeyKind.WORKER)
def claim_next() -> Response:
    """Claim the next job; with `wait` hold the request until one arrives (204 when none)."""
    info, wait = _claim_request()
    state = get_state()
    touch(info)

    def attempt() -> jobs.Claimed | None:
        return jobs.claim_next(db.session, info, state.policy, events=state.events)

    claimed = attempt()
    if claimed is None and wait > 0:
        with state.notifier.slot() as granted:
            if not granted:
                return no_content(retry_after=random.randint(2, 5))
            claimed = state.notifier.wait_for(attempt, wait)
    return no_content() if claimed is None else _claimed_reply(claimed)


@bp.post(Routes.CLAIM)
@documented("worker", ok="ClaimedJob", body="WorkerInfo", headers=SESSION, errors=(409, 422))
@require_key(KeyKind.WORKER)
def claim_specific(job_id: str) -> Response:
    """Claim this job if it is still queued (409 otherwise)."""
    require_job_id(job_id)
    info = parse_worker_info(read_json(), session_header())
    touch(info)
    state = get_state()
    return _claimed_reply(jobs.claim_specific(db.session, job_id, info, state.policy, events=state.events))


def _leased_job(job_id: str) -> Any:
    """The job's row held under this request's lease token (409 otherwise); the call confirms the
    claim."""
    require_job_id(job_id)
    touch()
    token = _lease_token()
    job = jobs.lease_run(db.session, job_id, token)
    if job.confirmed_at is None:
        jobs.confirm(db.session, job_id, token)
    return job


@bp.get(Routes.DOWNLOAD_INPUT)
@documented("worker", ok=DOWNLOAD, headers=(*LEASED, "Range"), errors=(409, 416))
@require_key(KeyKind.WORKER)
def download_input(job_id: str) -> Response:
    """Stream the job's uploaded input to the lease holder."""
    job = _leased_job(job_id)
    if job.input_size is None or not job.input_sha256:
        raise NotFound("the job has no uploaded input (fetch its source_url)")
    relpath = get_state().storage.input_relpath(job_id)
    return send_stored(relpath, job.input_sha256, job.input_name or "input", "application/octet-stream")


@bp.get(Routes.DOWNLOAD_SUBTITLES)
@documented("worker", ok=DOWNLOAD, headers=(*LEASED, "Range"), errors=(409, 416))
@require_key(KeyKind.WORKER)
def download_subtitles(job_id: str) -> Response:
    """Stream a dub's own subtitles to the lease holder (404 when the job has none)."""
    job = _leased_job(job_id)
    if not job.subtitles_sha256:
        raise NotFound("the job has no subtitles")
    relpath = get_state().storage.subtitles_relpath(job_id)
    return send_stored(relpath, job.subtitles_sha256, "subtitles", "text/plain; charset=utf-8")


@bp.post(Routes.HEARTBEAT)
@documented("worker", ok="HeartbeatReply", body="Heartbeat", headers=LEASED, errors=(409, 422))
@require_key(KeyKind.WORKER)
def heartbeat(job_id: str) -> Response:
    """Renew the lease and record progress; the reply says whether to cancel."""
    require_job_id(job_id)
    beat = parse_heartbeat(read_json())
    touch()
    answer = jobs.heartbeat(db.session, job_id, _lease_token(), beat, get_state().policy,
                            events=get_state().events)
    get_state().metrics.stage_seen(job_id, beat.stage)
    return reply(answer.to_dict())


@dataclass(frozen=True)
class _UploadArgs:
    """The query and headers of an upload, all validated before any byte is stored."""

    name: str
    final: bool
    content_type: str
    expected_sha256: str | None
    detected_language: str | None
    claim_next: bool  # `next=1` on a completing upload: hand this worker its next job in the reply


def _upload_args() -> _UploadArgs:
    """Parse every argument of an upload (a bad one is a 4xx before anything is stored)."""
    detected = request.args.get("detected_language")
    return _UploadArgs(
        name=parse_label(request.args.get("name", "result"), "name"),
        final=parse_bool(request.args.get("final", "1"), "final"),
        content_type=parse_content_type(request.args.get("content_type")),
        expected_sha256=parse_sha256(request.headers.get(SHA256_HEADER)),
        detected_language=parse_language(detected, "detected_language", False) if detected else None,
        claim_next=parse_bool(request.args.get("next", "0"), "next"))


def _upload_stream():
    """The uploaded bytes: a multipart 'file' part or the raw body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ValidationFailed("multipart uploads need a 'file' part", field="file")
        return upload.stream
    return request.stream


@bp.post(Routes.UPLOAD_RESULT)
@documented("worker", ok="UploadReply", body=UPLOAD_BODIES, query="UploadQuery",
            headers=(*LEASED, SHA256_HEADER), errors=(409, 413, 422))
@require_key(KeyKind.WORKER)
def upload_result(job_id: str) -> Response:
    """Store an artifact of the current run; `final=1` also completes the job.

    The body streams into a private temp file, which is then renamed to a path of its own
    (unique to this upload) before the fenced database transition: the write lock is never held
    across a rename and a directory fsync. Only a transition that wins points a row at that
    path; a refused upload, or one whose bytes were stored already, has its file removed at once
    (a crash in between leaves it to the orphan sweep). Racing or repeated uploads never touch a
    file another row points to. A repeated identical upload after completion answers the same
    result.
    """
    require_job_id(job_id)
    args = _upload_args()
    if "key" in request.args:  # the bytes are in object storage already
        return _publish_staged(job_id, args)
    touch()
    then = _next_claim(args)
    upload = store_upload(job_id, _lease_token(), _upload_stream(), name=args.name,
                          content_type=args.content_type, expected_sha256=args.expected_sha256,
                          final=args.final, detected_language=args.detected_language, then=then)
    return _upload_reply(upload, args, then)


def store_upload(job_id: str, token: str | None, stream: Any, *, name: str, content_type: str,
                 expected_sha256: str | None, final: bool, detected_language: str | None,
                 then: jobs.NextClaim | None = None) -> jobs.Upload:
    """Receive the bytes of an artifact of the lease's current run into local storage and record
    them (see `upload_result`)."""
    info, published = stage_upload(job_id, token, stream, name=name, content_type=content_type,
                                   expected_sha256=expected_sha256)
    return record_upload(job_id, token, info, published, final=final, detected_language=detected_language,
                         then=then)


def stage_upload(job_id: str, token: str | None, stream: Any, *, name: str, content_type: str,
                 expected_sha256: str | None) -> tuple[ArtifactInfo, str]:
    """Receive an artifact into a temp file and publish it under its own unique path, outside
    any transaction (no row points to it yet); the artifact and that path."""
    state = get_state()
    run = jobs.lease_run(db.session, job_id, token, allow_completed=True).run_number
    if state.storage.direct:
        raise ValidationFailed("results go to object storage: POST upload-slot, PUT the bytes there, "
                               "then name the key here", field="key")
    received = state.storage.receive_artifact(job_id, run, stream, current_app.config["MAX_UPLOAD_BYTES"],
                                              expected_sha256)
    try:
        published = state.storage.publish_artifact(received, job_id, run, name).relpath
    finally:
        state.storage.discard(received)  # a no-op once renamed
    return ArtifactInfo(name=name, size=received.size, sha256=received.sha256, content_type=content_type,
                        attempt=run), published


def record_upload(job_id: str, token: str | None, info: ArtifactInfo, published: str, *, final: bool,
                  detected_language: str | None, then: jobs.NextClaim | None = None) -> jobs.Upload:
    """The fenced transaction that points the artifact row at a staged file; the file a refused
    or repeated upload leaves (or the row's previous one) is removed."""
    state = get_state()
    try:
        upload = jobs.add_artifact(db.session, job_id, token, info, lambda: published, final=final,
                                   detected_language=detected_language, events=state.events, then=then)
    except BaseException:
        state.storage.remove(published)  # no committed row points to it
        raise
    drop_unused(upload, published)
    return upload


def drop_unused(upload: jobs.Upload, published: str) -> None:
    """Remove what a recorded upload left: the row's previous file, or ours when the stored
    artifact already had these bytes."""
    for unused in {upload.replaced, published} - {upload.path, None}:
        get_state().storage.remove(unused)


def index_upload(job_id: str, upload: jobs.Upload) -> None:
    """Index a new transcript for search (never fails the upload)."""
    search.on_upload(db.session, get_state().storage, job_id, upload,
                     current_app.config["MAX_INDEXED_TRANSCRIPT_MB"] * 1024 * 1024)


def _upload_reply(upload: jobs.Upload, args: _UploadArgs, then: jobs.NextClaim | None) -> Response:
    """The reply of an upload: the artifact as stored, the job's status, whether it was a repeat,
    and (asked with `next=1` by the upload that completed the job) the worker's next job: the one
    its transaction claimed; for a repeated completion (a retry after a lost reply) the job the
    first reply handed over while its lease holds, else the one `then` claims now."""
    index_upload(request.view_args["job_id"], upload)
    body: dict[str, Any] = {"artifact": upload.artifact.to_dict(), "status": upload.status,
                            "repeated": upload.repeated}
    if args.claim_next and args.final and upload.status == "completed":
        if upload.next_tried:  # claimed in the upload's own transaction
            body["next"] = None if upload.next is None else claimed_body(upload.next)
        else:
            body["next"] = _next_job(then, upload)
    return reply(body)


def _next_claim(args: _UploadArgs) -> jobs.NextClaim | None:
    """What a completing upload asked with `next=1` claims in its own transaction: the next job
    of this worker session, with the capabilities its last claim here advertised (None: this
    process has not seen the session claim; it then claims as usual)."""
    if not (args.claim_next and args.final):
        return None
    state = get_state()
    info = state.workers.info_of(session_header())
    return None if info is None else jobs.NextClaim(info, state.policy)


def _next_job(then: jobs.NextClaim | None, upload: jobs.Upload) -> dict[str, Any] | None:
    """Claim-on-complete for a repeated completing upload (the completion committed earlier, so
    there is no transaction to claim in): the job the first reply handed over, while its lease
    holds (that reply was lost); else the next job `then` names, claimed now (None as in
    `_next_claim`). A failure here only means no job is handed over."""
    try:
        handed = jobs.handed_over(db.session, request.view_args["job_id"], _lease_token()) \
            if upload.repeated else None
        if handed is not None:
            return claimed_body(handed)
        if then is None:
            return None
        claimed = jobs.claim_next(db.session, then.worker, then.policy, events=get_state().events)
        return None if claimed is None else claimed_body(claimed)
    except SQLAlchemyError:
        logger.exception("claim-on-complete for worker session %s failed; it will claim", session_header())
        return None


def _publish_staged(job_id: str, args: _UploadArgs) -> Response:
    """An upload-result naming an object the worker put into the store (`key`, `upload_id`,
    `size`, X-Content-SHA256): verified, then published under the same fencing."""
    staged = direct.parse_staged(request.args, args.expected_sha256)
    touch()
    state, then = get_state(), _next_claim(args)
    upload = direct.publish(db.session, state.storage, job_id, _lease_token(), staged, name=args.name,
                            content_type=args.content_type, final=args.final,
                            detected_language=args.detected_language, events=state.events,
                            max_bytes=current_app.config["MAX_UPLOAD_BYTES"], then=then)
    return _upload_reply(upload, args, then)


@bp.post(Routes.UPLOAD_SLOT)
@documented("worker", ok="UploadSlot", body="SlotRequest", body_required=True, headers=LEASED,
            errors=(409, 413, 422))
@require_key(KeyKind.WORKER)
def upload_slot(job_id: str) -> Response:
    """Presigned URLs to put a result straight into object storage (a new slot, or fresh URLs
    for the slot `key` names); 404 when the coordinator keeps files itself."""
    require_job_id(job_id)
    slot_request = direct.parse_slot_request(read_json(required=True))
    job = _leased_job(job_id)
    slot = direct.open_slot(get_state().storage, job_id, job.run_number, slot_request,
                            current_app.config["MAX_UPLOAD_BYTES"])
    return reply(slot.to_dict())


@bp.post(Routes.COMPLETE)
@documented("worker", ok="JobStatusReply", body="CompleteRequest", body_required=True, headers=LEASED,
            errors=(409, 422))
@require_key(KeyKind.WORKER)
def complete(job_id: str) -> Response:
    """Complete with an artifact uploaded earlier in this run."""
    require_job_id(job_id)
    body = read_json(required=True)
    main = parse_label(body.get("main_artifact"), "main_artifact")
    detected = body.get("detected_language")
    detected = parse_language(detected, "detected_language", False) if detected else None
    touch()
    job = jobs.complete(db.session, job_id, _lease_token(), main, detected, events=get_state().events)
    return reply({"job_id": job_id, "status": job.status})


@bp.post(Routes.FAIL)
@documented("worker", ok="FailReply", body="FailReport", headers=LEASED, errors=(409, 422))
@require_key(KeyKind.WORKER)
def fail(job_id: str) -> Response:
    """Record a failed attempt (requeue with backoff, or fail for good)."""
    require_job_id(job_id)
    report = parse_fail_report(read_json())
    touch()
    state = get_state()
    job = jobs.fail(db.session, job_id, _lease_token(), report.reason, report.retryable, state.policy,
                    events=state.events)
    if job.status == "queued":  # final endings are counted by the queue's job_finished event
        state.metrics.ended(job_id, job.status, job.kind)
    return reply({"job_id": job_id, "status": job.status, "attempts": job.attempts,
                  "available_at": job.available_at})


@bp.post(Routes.RELEASE)
@documented("worker", ok="JobStatusReply", headers=LEASED, errors=(409,))
@require_key(KeyKind.WORKER)
def release(job_id: str) -> Response:
    """Give the job back to the queue now."""
    require_job_id(job_id)
    touch()
    job = jobs.release(db.session, job_id, _lease_token(), events=get_state().events)
    return reply({"job_id": job_id, "status": job.status})
