"""Results that workers put into object storage themselves: upload slots and their publication.

A worker asks for a slot (`open_slot`): presigned PUT URLs for a key unique to that upload,
`artifacts/<job>/a<run>/<name>~<random>`, which is the very path the artifact row will record,
so publishing copies nothing. It then names the key in the fenced upload call (`publish`): the
coordinator completes a multipart upload, checks the size and sha256 of what the store holds and
records the key in the same fenced transaction as a local upload (`jobs.add_artifact`). A
rejected, losing, cancelled or duplicate upload's object is deleted at once; objects no row
points to are swept later (`coordinator.s3sweep`). Workers get presigned GET URLs for the input
in their claim (`claim_fields`).
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.protocol import ArtifactInfo, SlotRequest, UploadSlot

from . import jobs
from .errors import CoordinatorError, NotFound, PayloadTooLarge, ValidationFailed
from .models import Artifact
from .notify import QueueEvents
from .validation import parse_content_type, parse_label, parse_sha256

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# The limits of the fields (`coordinator.schemas` documents these same values).
TOKEN_PATTERN = r"^[\x21-\x7e]{1,1024}$"  # keys and upload ids: printable ASCII, no spaces
SIZE_PATTERN = r"^[0-9]{1,15}$"  # a byte count in the query string
MAX_SIZE = 10**15 - 1
_TOKEN_RE, _SIZE_RE = re.compile(TOKEN_PATTERN), re.compile(SIZE_PATTERN)


@dataclass(frozen=True)
class Staged:
    """A result a worker says it put into the store: where, and what it must be."""

    key: str
    upload_id: str | None
    size: int
    sha256: str


def require_direct(storage: Any) -> None:
    """404 unless results go to object storage."""
    if not storage.direct:
        raise NotFound("this coordinator keeps files itself (no STORAGE_URL): upload the bytes to "
                       "upload-result")


def _token(value: Any, name: str) -> str | None:
    """An optional key or upload id (absent or null: None)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value):
        raise ValidationFailed(f"{name} must be 1 to 1024 printable ASCII characters, no spaces",
                               field=name)
    return value


def _size(value: Any) -> int:
    """A byte count: a JSON integer, or digits in the query string."""
    if isinstance(value, str) and _SIZE_RE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise ValidationFailed("size must be a byte count", field="size")
    return value


def _sha256(value: Any) -> str:
    """A required hex sha256 (the body's `sha256`, or X-Content-SHA256 with `key`)."""
    digest = parse_sha256(value) if isinstance(value, str) else None
    if digest is None:
        raise ValidationFailed("the result's sha256 is required (64 hex characters)", field="sha256")
    return digest


def parse_slot_request(body: Mapping[str, Any]) -> SlotRequest:
    """The JSON body of POST upload-slot."""
    size, content_type = body.get("size"), body.get("content_type")
    if isinstance(size, str):  # JSON carries a number
        raise ValidationFailed("size must be a byte count", field="size")
    if content_type is not None and not isinstance(content_type, str):
        raise ValidationFailed("content_type must be a MIME type like video/mp4", field="content_type")
    return SlotRequest(name=parse_label(body.get("name"), "name"), size=_size(size),
                       sha256=_sha256(body.get("sha256")), content_type=parse_content_type(content_type),
                       key=_token(body.get("key"), "key"), upload_id=_token(body.get("upload_id"), "upload_id"))


def parse_staged(args: Mapping[str, str], sha256: str | None) -> Staged:
    """`key`, `upload_id` and `size` of an upload-result call that names a stored object."""
    key = _token(args.get("key"), "key")
    if key is None:
        raise ValidationFailed("key is required", field="key")
    return Staged(key=key, upload_id=_token(args.get("upload_id"), "upload_id"), size=_size(args.get("size")),
                  sha256=_sha256(sha256))


def check_key(key: str, job_id: str, run: int, name: str) -> None:
    """422 unless `key` is a slot of this job's current run for the artifact `name`."""
    if not re.fullmatch(rf"artifacts/{job_id}/a{int(run)}/{re.escape(name)}~[0-9a-f]{{16}}", key):
        raise ValidationFailed(f"key is not an upload slot of artifact {name!r} of this run", field="key")


def _check_size(size: int, max_bytes: int) -> None:
    """413 past the upload limit (before any byte moves)."""
    if size > max_bytes:
        raise PayloadTooLarge(f"the result is larger than {max_bytes // MIB} MB")


def open_slot(storage: Any, job_id: str, run: int, req: SlotRequest, max_bytes: int) -> UploadSlot:
    """Presigned URLs for a new upload of `req`, or fresh ones for the slot it names (renewal)."""
    require_direct(storage)
    _check_size(req.size, max_bytes)
    if req.key is None:
        key = storage.artifact_relpath(job_id, run, req.name, secrets.token_hex(8))
        upload_id = storage.start_upload(key, req.size, req.content_type)
        logger.info("job %s: upload slot %s (%d bytes, %s)", job_id, key, req.size,
                    "multipart" if upload_id else "one PUT")
    else:
        check_key(req.key, job_id, run, req.name)
        key, upload_id = req.key, req.upload_id
        if (upload_id is None) != (req.size <= storage.part_size_for(req.size)):
            raise ValidationFailed("upload_id does not fit the size (a multipart upload has one "
                                   "exactly when the result needs more than one part)", field="upload_id")
        logger.info("job %s: fresh upload URLs for %s", job_id, key)
    urls, part_size = storage.presign_upload(key, upload_id, req.size)
    return UploadSlot(key=key, urls=tuple(urls), part_size=part_size, expires_in=float(storage.ttl),
                      upload_id=upload_id)


def publish(session: Session, storage: Any, job_id: str, token: str | None, staged: Staged, *,
            name: str, content_type: str, final: bool, detected_language: str | None,
            events: QueueEvents | None, max_bytes: int, then: jobs.NextClaim | None = None) -> jobs.Upload:
    """Verify a worker's stored upload and record it like a local upload (same fencing; `then`:
    claim-on-complete in the same transaction).

    The object is read outside any transaction; the row then points to its key. A definite
    refusal (4xx) deletes the object unless a row already points to it; a store or database
    outage keeps it, so the worker's retry of this call can still succeed.
    """
    require_direct(storage)
    run = jobs.lease_run(session, job_id, token, allow_completed=True).run_number
    check_key(staged.key, job_id, run, name)
    try:
        _check_size(staged.size, max_bytes)
        storage.finish_upload(staged.key, staged.upload_id)
        storage.verify(staged.key, staged.size, staged.sha256)
        info = ArtifactInfo(name=name, size=staged.size, sha256=staged.sha256, content_type=content_type,
                            attempt=run)
        upload = jobs.add_artifact(session, job_id, token, info, lambda: staged.key, final=final,
                                   detected_language=detected_language, events=events, then=then)
    except CoordinatorError as exc:
        if exc.status_code < 500:
            logger.info("job %s: upload %s refused (%s): %s", job_id, staged.key, exc.error, exc.message)
            _discard(session, storage, job_id, staged.key)
        raise
    if upload.path != staged.key:  # the row already had these bytes under another key
        storage.remove(staged.key)
    if upload.replaced and upload.replaced != staged.key:
        storage.remove(upload.replaced)
    return upload


def _discard(session: Session, storage: Any, job_id: str, key: str) -> None:
    """Delete a refused upload's object, unless a row points to it (a repeat of a published one)."""
    referenced = session.scalar(select(Artifact.id).where(Artifact.job_id == job_id, Artifact.path == key)
                                .limit(1))
    session.rollback()
    if referenced is None:
        storage.remove(key)


def claim_fields(storage: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """The ClaimedJob fields of direct transfers: presigned input URLs and `direct_upload`."""
    if not storage.direct:
        return {}
    fields: dict[str, Any] = {"direct_upload": True}
    if row["input_sha256"]:
        fields["input_url"] = storage.presign_get(storage.input_relpath(row["id"]))
    if row["subtitles_sha256"]:
        fields["subtitles_url"] = storage.presign_get(storage.subtitles_relpath(row["id"]))
    return fields
