"""POST /jobs/batch (on the worker blueprint): short jobs' results, releases and the next claims
in one request (`coordinator.batch`)."""
from __future__ import annotations

import io
from typing import Any

from flask import Response

from shared.protocol import KeyKind, Routes

from .. import batch, jobs
from ..auth import require_key
from ..extensions import db
from ..openapi import SESSION, documented
from ..state import get_state
from .common import read_json, reply
from .worker import bp, claimed_body, index_upload, session_header, store_upload, touch


def _deliver(held: Any, data: bytes) -> dict[str, Any]:
    """Complete one job with its held result (a completing upload-result of these bytes)."""
    upload = store_upload(held.job_id, held.lease_token, io.BytesIO(data), name=held.name,
                          content_type=held.content_type, expected_sha256=held.sha256, final=True,
                          detected_language=held.detected_language)
    index_upload(held.job_id, upload)
    return {"status": upload.status, "artifact": upload.artifact.to_dict(), "repeated": upload.repeated}


def _release(ref: Any) -> dict[str, Any]:
    """Give one job back to the queue."""
    job = jobs.release(db.session, ref.job_id, ref.lease_token, events=get_state().events)
    return {"status": job.status}


@bp.post(Routes.BATCH)
@documented("worker", ok="BatchReply", body="BatchRequest", body_required=True, headers=SESSION,
            errors=(422,))
@require_key(KeyKind.WORKER)
def settle_batch() -> Response:
    """Complete jobs with their small results, give jobs back, and claim up to `claim` more.

    Every result and release is fenced by its own lease and answered on its own (an entry with
    `error` and `status_code` is what that call alone would have answered); the claims come
    last, so a job given back here is not claimed again by the same call."""
    req = batch.parse_batch(read_json(required=True), session_header())
    touch(req.worker)
    results = [batch.outcome(held.job_id, lambda h=held, d=data: _deliver(h, d)) for held, data in req.results]
    released = [batch.outcome(ref.job_id, lambda r=ref: _release(r)) for ref in req.release]
    claimed: list[dict[str, Any]] = []
    if req.worker is not None:
        state = get_state()
        won = jobs.claim_batch(db.session, req.worker, state.policy, req.claim, events=state.events)
        claimed = [claimed_body(one) for one in won]
    return reply({"results": results, "released": released, "jobs": claimed})
