"""`PUT /jobs/<id>/summary`: the owner's edit of a job's summary (see coordinator.summaries).

It joins the client blueprint (its key kind, rate-limit scope and OpenAPI security)."""
from __future__ import annotations

from flask import Response, current_app, request

from shared.protocol import KeyKind
from shared.summary import ROUTE

from .. import audit, summaries
from ..auth import current_principal, require_key
from ..errors import PayloadTooLarge
from ..extensions import db
from ..openapi import documented
from ..state import get_state
from .client import bp as client_bp
from .common import read_json, reply, visible_job


@client_bp.put(ROUTE)
@documented("client", ok="SummaryReply", body="SummaryEdit", body_required=True,
            query="SummaryQuery", errors=(409, 413, 422))
@require_key(KeyKind.CLIENT)
def edit_summary(job_id: str) -> Response:
    """Store the owner's corrected title, key points and chapters beside the worker's summary
    (as `summary.edited.json` and `summary.edited.md`; with `?language=<target>`, of the
    translated summary, as `summary.<target>.edited.json` and `.md`)."""
    principal = current_principal()
    job = visible_job(job_id, principal)
    limit = int(current_app.config["MAX_SUMMARY_BYTES"])
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"a summary is limited to {limit} bytes (MAX_SUMMARY_BYTES)")
    language = summaries.check_language(request.args.get("language"))
    edit = summaries.parse_edit(read_json(required=True), current_app.config)
    storage = get_state().storage
    files, base = summaries.original(db.session, storage, job, language)
    stored = summaries.merge(edit, base)
    names = summaries.save(db.session, storage, job, stored, files)
    audit.record(db.engine, "summary_edit", audit.Actor(principal.key_id, principal.name), job.id,
                 f"language={stored.language or '-'} points={len(stored.key_points)} "
                 f"chapters={len(stored.chapters)}")
    return reply({"summary": stored.to_dict(), "artifacts": names})
