"""POST /jobs/batch (on the worker blueprint): short jobs' results, releases and the next claims
in one request (`coordinator.batch`)."""
from __future__ import annotations

import contextlib
import io
from typing import Any

from flask import Response

from shared.protocol import HeldResult, KeyKind, Routes

from .. import batch, durability, jobs
from ..auth import require_key
from ..errors import CoordinatorError
from ..extensions import db
from ..openapi import SESSION, documented
from ..state import get_state
from .common import read_json, reply
from .worker import (bp, claimed_body, drop_unused, index_upload, record_upload, session_header, stage_upload,
                     touch)


def _deliver(results: tuple[tuple[HeldResult, bytes], ...]) -> list[dict[str, Any]]:
    """Complete each job with its held result, as a completing upload-result of those bytes
    would: every file is stored first and made durable together (`durability.deferred`), then
    one transaction completes every job whose lease holds (`jobs.complete_many`, each fenced by
    its own lease); any other (a refusal, a repeat, a cancel) is answered alone, as
    upload-result answers it."""
    storage = get_state().storage
    durable = contextlib.nullcontext() if storage.direct else durability.deferred(storage.root)
    with durable:
        answers: list[Any] = [batch.attempt(lambda h=held, d=data: stage_upload(
            h.job_id, h.lease_token, io.BytesIO(d), name=h.name, content_type=h.content_type,
            expected_sha256=h.sha256)) for held, data in results]
    ready = {n: jobs.Completion(held.job_id, held.lease_token, *answers[n], held.detected_language)
             for n, (held, _) in enumerate(results) if not isinstance(answers[n], CoordinatorError)}
    try:
        done = jobs.complete_many(db.session, list(ready.values()), events=get_state().events) if ready else []
    except BaseException:
        for item in ready.values():
            storage.remove(item.path)  # no committed row points to them
        raise
    for (n, item), upload in zip(ready.items(), done):
        held = results[n][0]
        if upload is None:  # answered alone, as upload-result would
            answers[n] = batch.attempt(lambda h=held, i=item: _answer(h, record_upload(
                h.job_id, h.lease_token, i.info, i.path, final=True, detected_language=h.detected_language)))
        else:
            drop_unused(upload, item.path)
            answers[n] = _answer(held, upload)
    return [batch.entry(held.job_id, answer) for (held, _), answer in zip(results, answers)]


def _answer(held: HeldResult, upload: Any) -> dict[str, Any]:
    """A completed result's entry (its transcript indexed for search, as upload-result does)."""
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
    results = _deliver(req.results)
    released = [batch.entry(ref.job_id, batch.attempt(lambda r=ref: _release(r))) for ref in req.release]
    claimed: list[dict[str, Any]] = []
    if req.worker is not None:
        state = get_state()
        won = jobs.claim_batch(db.session, req.worker, state.policy, req.claim, events=state.events)
        claimed = [claimed_body(one) for one in won]
    return reply({"results": results, "released": released, "jobs": claimed})
