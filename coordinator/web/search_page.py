"""The search page: the header's search box leads here; a result opens the job at that moment."""
from __future__ import annotations

from flask import request
from werkzeug.wrappers import Response

from ..api.common import read_view
from ..api.search import run_search, search_request
from ..errors import ValidationFailed
from ..search_query import snippet_parts
from . import PREFIX, bp
from .common import page, principal, signed_in

PER_PAGE = 20


def clock(seconds: float) -> str:
    """12.5 -> "0:12"; 3725 -> "1:02:05"."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _results(args) -> tuple[list[dict], int, int, str]:
    """(results, total, offset, error message) for the page's query string."""
    if not (args.get("q") or "").strip():
        return [], 0, 0, ""
    try:
        query = search_request({**args.to_dict(), "limit": str(PER_PAGE),
                                "offset": args.get("offset") or "0"})
    except ValidationFailed as exc:
        return [], 0, 0, str(exc.message)
    hits, total = run_search(query, principal())
    results = [{**hit.to_dict(), "at": clock(hit.start), "t": round(hit.start, 2),
                "parts": snippet_parts(hit.snippet.text, hit.snippet.highlights)} for hit in hits]
    return results, total, query.offset, ""


@bp.get(f"{PREFIX}/search")
@signed_in
@read_view
def search() -> Response:
    """Transcript lines of the caller's jobs that match the query, each linking to its moment."""
    results, total, offset, error = _results(request.args)
    return page("search.html", q=request.args.get("q", ""), results=results, total=total,
                offset=offset, per_page=PER_PAGE, error=error,
                kind=request.args.get("kind", ""))
