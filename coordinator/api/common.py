"""Helpers shared by the views: JSON bodies, job lookup with ownership, file responses."""
from __future__ import annotations

import functools
import json
from urllib.parse import quote
from typing import Any, Callable

from flask import Response, request, send_file
from flask.json.provider import DefaultJSONProvider

from shared.protocol import SHA256_HEADER

from ..auth import Principal
from ..database import read_only
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..extensions import db
from ..models import Job
from ..state import get_state
from ..storage import is_job_id

MAX_JSON_BYTES = 1024 * 1024


def read_json(required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty and not required); 400 when malformed."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge("JSON bodies are limited to 1 MB")
    raw = request.stream.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise PayloadTooLarge("JSON bodies are limited to 1 MB")
    if not raw.strip():
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def read_view(view: Callable) -> Callable:
    """Run a view that only reads as a deferred (WAL snapshot) transaction, never holding the
    SQLite write lock: a page of jobs being built must not keep submits and workers waiting."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with read_only():
            try:
                return view(*args, **kwargs)
            finally:
                end_read()
    return wrapper


def end_read() -> None:
    """End this request's read snapshot (a no-op when the request never opened the session:
    the hot views read below it, see coordinator.lean)."""
    if db.session.registry.has():
        db.session.rollback()


# The JSON Flask's jsonify writes here (compact, ASCII, its `default` for dates, dataclasses and
# UUIDs), without the provider's per-call set-up: every hot reply is one of these.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=DefaultJSONProvider.default)


def reply(payload: dict[str, Any], status: int = 200) -> Response:
    """A JSON response."""
    return Response(_ENCODER.encode(payload) + "\n", status=status, mimetype="application/json")


def no_content(retry_after: int | None = None) -> Response:
    """An empty 204 reply, optionally with Retry-After."""
    response = Response(status=204)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def get_job(job_id: str) -> Job:
    """A job by id (404 when the id is malformed or unknown)."""
    job = db.session.get(Job, job_id) if is_job_id(job_id) else None
    if job is None:
        raise NotFound()
    return job


def visible_job(job_id: str, principal: Principal) -> Job:
    """A job the caller may see: its own, or any for admin; others' jobs are 404."""
    job = get_job(job_id)
    if not principal.is_admin and job.owner_key_id != principal.key_id:
        raise NotFound()
    return job


def require_job_id(job_id: str) -> str:
    """404 for ids that cannot be job ids (before any database work)."""
    if not is_job_id(job_id):
        raise NotFound()
    return job_id


def send_stored(relpath: str, sha256: str, download_name: str, mimetype: str) -> Response:
    """Stream a stored file with Range support and the sha256 as ETag; from object storage, a
    302 to a presigned GET that answers with the same Content-Disposition and type."""
    storage = get_state().storage
    if storage.direct:
        url = storage.presign_get(relpath, content_disposition(download_name), mimetype)
        return Response(status=302, headers={"Location": url, SHA256_HEADER: sha256,
                                             "Cache-Control": "no-store"})
    path = storage.resolve(relpath)
    if not path.is_file():
        raise NotFound("the stored file is missing")
    response = send_file(path, mimetype=mimetype, conditional=True, etag=sha256, max_age=None)
    response.headers["Content-Disposition"] = content_disposition(download_name)
    response.headers[SHA256_HEADER] = sha256
    return response


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name and the full name as RFC 6266 / 5987 `filename*`.

    Control characters are dropped and quotes/backslashes replaced, so no stored name can break
    the header (a newline in a name once made this a 500).
    """
    clean = "".join(ch for ch in str(name) if ch.isprintable()).strip() or "download"
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in clean)
    encoded = quote(clean, safe="!#$&+-.^_`|~")
    return f'attachment; filename="{fallback}"; filename*=UTF-8\'\'{encoded}'
