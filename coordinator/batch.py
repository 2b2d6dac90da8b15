"""Batch calls (POST /jobs/batch): a worker running a stream of short jobs delivers their small
results, gives back jobs it will not start, and claims its next jobs, all in one request.

Each result completes its own job under its own lease, exactly as a completing upload-result
would: the common case of every result commits in one transaction (`jobs.complete_many`), any
other is answered alone by `jobs.add_artifact`. One result refused (a lost lease, a cancelled
job) never touches the others, and a repeat of the whole call after a lost reply answers the
same results (a completed job's identical upload is a repeat). The jobs claimed come from one
transaction (`jobs.claim_batch`). The reply lists what became of every result and release, in
the order sent, plus the jobs claimed.
"""
from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from shared.protocol import MAX_BATCH_JOBS, MAX_BATCH_RESULT_BYTES, HeldResult, LeaseRef, WorkerInfo

from .errors import CoordinatorError, ValidationFailed
from .storage import is_job_id
from .validation import parse_content_type, parse_label, parse_language, parse_sha256, parse_worker_info

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 200
T = TypeVar("T")


@dataclass(frozen=True)
class BatchRequest:
    """A parsed batch call: results to deliver (with their bytes), leases to give back, and how
    many jobs to claim for `worker`."""

    worker: WorkerInfo | None
    claim: int
    results: tuple[tuple[HeldResult, bytes], ...]
    release: tuple[LeaseRef, ...]


def _entries(body: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """A list of JSON objects (absent: empty; null is not a list), at most MAX_BATCH_JOBS."""
    if name not in body:
        return []
    items = body[name]
    if not isinstance(items, list) or len(items) > MAX_BATCH_JOBS \
            or not all(isinstance(item, dict) for item in items):
        raise ValidationFailed(f"{name} must be a list of at most {MAX_BATCH_JOBS} objects", field=name)
    return items


def _lease(item: Mapping[str, Any], where: str) -> LeaseRef:
    """The job id and lease token of one entry."""
    job_id, token = item.get("job_id"), item.get("lease_token")
    if not isinstance(job_id, str) or not is_job_id(job_id):
        raise ValidationFailed(f"{where}: job_id must be a job id (32 hex digits)", field="job_id")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise ValidationFailed(f"{where}: lease_token is required", field="lease_token")
    return LeaseRef(job_id=job_id, lease_token=token)


def _result(item: Mapping[str, Any], where: str) -> tuple[HeldResult, bytes]:
    """One result: its lease, artifact fields and decoded bytes (size and sha256 checked later,
    as an upload's are)."""
    lease = _lease(item, where)
    sha256 = parse_sha256(item.get("sha256")) if isinstance(item.get("sha256"), str) else None
    if sha256 is None:
        raise ValidationFailed(f"{where}: sha256 is required (64 hex characters)", field="sha256")
    content_type = item.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise ValidationFailed(f"{where}: content_type must be a MIME type", field="content_type")
    detected = item.get("detected_language")
    data = item.get("data")
    if not isinstance(data, str) or len(data) > 4 * ((MAX_BATCH_RESULT_BYTES + 2) // 3):
        raise ValidationFailed(f"{where}: data must be base64 of at most {MAX_BATCH_RESULT_BYTES} "
                               "bytes (larger results go to upload-result)", field="data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{where}: data is not valid base64", field="data") from None
    if len(raw) > MAX_BATCH_RESULT_BYTES:
        raise ValidationFailed(f"{where}: data is larger than {MAX_BATCH_RESULT_BYTES} bytes (larger "
                               "results go to upload-result)", field="data")
    held = HeldResult(job_id=lease.job_id, lease_token=lease.lease_token,
                      name=parse_label(item.get("name"), "name"), data="", sha256=sha256,
                      content_type=parse_content_type(content_type),
                      detected_language=None if detected is None else parse_language(detected, "detected_language", False))
    return held, raw


def parse_batch(body: Mapping[str, Any], session_header: str) -> BatchRequest:
    """The JSON body of POST /jobs/batch (422 naming the first bad field)."""
    claim = body.get("claim", 0)
    if isinstance(claim, bool) or not isinstance(claim, int) or not 0 <= claim <= MAX_BATCH_JOBS:
        raise ValidationFailed(f"claim must be an integer from 0 to {MAX_BATCH_JOBS}", field="claim")
    worker = parse_worker_info(body.get("worker"), session_header) \
        if claim or body.get("worker") is not None else None
    results = tuple(_result(item, f"results[{n}]") for n, item in enumerate(_entries(body, "results")))
    release = tuple(_lease(item, f"release[{n}]") for n, item in enumerate(_entries(body, "release")))
    ids = [held.job_id for held, _ in results] + [ref.job_id for ref in release]
    if len(set(ids)) != len(ids):
        raise ValidationFailed("a job appears more than once in results and release", field="results")
    return BatchRequest(worker=worker, claim=claim, results=results, release=release)


def attempt(call: Callable[[], T]) -> T | CoordinatorError:
    """`call`'s value, or the refusal (4xx) it raised: that entry's answer. A database or server
    failure fails the whole call (503): the worker repeats it, and what already committed
    answers as a repeat."""
    try:
        return call()
    except CoordinatorError as exc:
        if exc.status_code >= 500:
            raise
        return exc


def entry(job_id: str, answer: Mapping[str, Any] | CoordinatorError) -> dict[str, Any]:
    """One entry of the reply: the fields of a call's answer, or the error body that call alone
    would have answered (`status_code` added)."""
    if isinstance(answer, CoordinatorError):
        logger.info("job %s: batch entry refused (%s): %s", job_id, answer.error, answer.message)
        return {"job_id": job_id, "status_code": answer.status_code, **answer.payload()}
    return {"job_id": job_id, **answer}
