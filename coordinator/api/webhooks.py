"""The webhook delivery log of a job: GET /jobs/<id>/deliveries (client blueprint)."""
from __future__ import annotations

from flask import Response

from shared.protocol import KeyKind

from ..auth import current_principal, require_key
from ..extensions import db
from ..openapi import documented
from ..webhooks import deliveries_of
from .client import bp as client_bp
from .common import read_view, reply, visible_job

JOB_DELIVERIES = "/jobs/<job_id>/deliveries"


@client_bp.get(JOB_DELIVERIES)
@documented("client", ok="DeliveryList")
@require_key(KeyKind.CLIENT)
@read_view
def job_deliveries(job_id: str) -> Response:
    """The job's `callback_url` deliveries: status, attempts, last HTTP status and error."""
    job = visible_job(job_id, current_principal())  # another client's job is 404
    return reply({"job_id": job.id, "deliveries": deliveries_of(db.session, job.id)})
