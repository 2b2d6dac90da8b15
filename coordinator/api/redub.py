"""Re-dub endpoints: a client's POST /jobs/<id>/redub, and the worker's download of the parent's
segment bundle. They join the client and worker blueprints (and so their rate-limit scopes)."""
from __future__ import annotations

import logging

from flask import Response, current_app, request

from shared.protocol import IDEMPOTENCY_HEADER, KeyKind, Routes

from .. import audit, jobs, redub
from ..auth import current_principal, require_key
from ..errors import NotFound
from ..extensions import db
from ..openapi import DOWNLOAD, LEASED, documented
from ..serializers import job_view
from ..state import get_state
from ..validation import parse_idempotency_key
from .client import bp as client_bp
from .common import read_json, reply, send_stored, visible_job
from .worker import _leased_job
from .worker import bp as worker_bp

logger = logging.getLogger(__name__)


@client_bp.post(Routes.JOB_REDUB)
@documented("client", ok={201: "JobView", 200: "JobView"}, body="RedubRequest", body_required=True,
            headers=(IDEMPOTENCY_HEADER,), errors=(409, 422))
@require_key(KeyKind.CLIENT)
def redub_job(job_id: str) -> Response:
    """Correct lines of a completed dub: a new job re-voices only those and re-uses the rest."""
    idem = parse_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    principal = current_principal()
    parent = visible_job(job_id, principal)
    limits = redub.RedubLimits.from_config(current_app.config)
    edits = redub.parse_edits(read_json(required=True), limits)
    existing = jobs.find_idempotent(db.session, principal.key_id, idem)
    if existing is not None:
        return reply(job_view(db.session, existing), 200)
    state = get_state()
    job, created = redub.submit(db.session, state.storage, parent, edits,
                                owner_key_id=principal.key_id,
                                default_max_attempts=state.policy.max_attempts,
                                idempotency_key=idem, events=state.events)
    if created:
        audit.record(db.engine, "redub", audit.Actor(principal.key_id, principal.name), job.id,
                     f"parent={job_id} lines={','.join(str(e.index) for e in edits)[:500]}")
    return reply(job_view(db.session, job), 201 if created else 200)


@worker_bp.get(Routes.DOWNLOAD_PARENT)
@documented("worker", ok=DOWNLOAD, headers=(*LEASED, "Range"), errors=(409, 416))
@require_key(KeyKind.WORKER)
def download_parent(job_id: str) -> Response:
    """Stream a re-dub's copy of its parent's segment bundle to the lease holder (404 when the
    job is not a re-dub)."""
    job = _leased_job(job_id)
    bundle = redub.bundle_of(job)
    if bundle is None:
        raise NotFound("the job is not a re-dub")
    relpath = get_state().storage.parent_relpath(job_id)
    return send_stored(relpath, bundle[0], redub.BUNDLE, "application/x-tar")
