"""GET /search: full-text search of the caller's transcripts and translations."""
from __future__ import annotations

import sqlite3

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import DBAPIError

from shared.protocol import KeyKind, Routes

from .. import search
from ..auth import Principal, current_principal, require_key
from ..errors import ValidationFailed
from ..extensions import db
from ..openapi import documented
from ..search_query import SearchRequest, check_request
from ..state import get_state
from ..validation import LIMIT_RANGE, OFFSET_RANGE, parse_int
from .common import read_view, reply

bp = Blueprint("search", __name__)


def search_request(args) -> SearchRequest:
    """The checked query of GET /search (or of the web app's search page)."""
    config = current_app.config
    limit = min(parse_int(args.get("limit", "20"), "limit", *LIMIT_RANGE),
                int(config["MAX_LIST_LIMIT"]))
    offset = parse_int(args.get("offset", "0"), "offset", *OFFSET_RANGE)
    return check_request(args.get("q"), int(config["MAX_SEARCH_QUERY_CHARS"]),
                         args.get("language") or None, args.get("kind") or None, limit, offset)


def run_search(query: SearchRequest, principal: Principal) -> tuple[list[search.Hit], int]:
    """The caller's hits (admin: everyone's); a query the engine refuses is 422, not 500."""
    owner = None if principal.is_admin else principal.key_id
    with get_state().costly:
        try:
            return search.search(db.session, query, owner)
        except DBAPIError as exc:
            if not isinstance(exc.orig, sqlite3.OperationalError) or "fts5" not in str(exc.orig):
                raise
            db.session.rollback()
            raise ValidationFailed("the search query cannot be understood", field="q") from exc


@bp.get(Routes.SEARCH)
@documented("client", ok="SearchReply", query="SearchQuery", errors=(422,))
@require_key(KeyKind.CLIENT)
@read_view
def search_transcripts() -> Response:
    """Transcript and translation lines of the caller's jobs that match `q`, best first."""
    query = search_request(request.args)
    hits, total = run_search(query, current_principal())
    db.session.rollback()  # end the read snapshot before the JSON encoding
    return reply({"q": query.q, "results": [hit.to_dict() for hit in hits], "total": total,
                  "limit": query.limit, "offset": query.offset})
