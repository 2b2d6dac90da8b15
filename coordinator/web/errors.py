"""The web app's error pages and response headers: HTML for people (the JSON API keeps its own
handler), with a strict content security policy."""
from __future__ import annotations

import logging

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..errors import CoordinatorError
from ..extensions import db
from ..state import get_state
from . import bp
from .common import PageError, page

logger = logging.getLogger(__name__)

_TITLES = {400: "Bad request", 401: "Please sign in", 403: "Not allowed", 404: "Page not found",
           405: "Not allowed", 409: "Not possible now", 413: "Too large", 429: "Too many requests",
           500: "Something went wrong", 503: "Busy right now"}
_NOT_FOUND = ("There is no page here, or it belongs to someone else. Check the address, or go "
              "back to your jobs.")


def error_page(status: int, message: str, title: str | None = None) -> Response:
    """A friendly HTML error page."""
    if status == 404:
        message = _NOT_FOUND
    return page("error.html", status, status_code=status, title=title or _TITLES.get(status, "Error"),
                message=message)


@bp.errorhandler(PageError)
def _page_error(exc: PageError) -> Response:
    return error_page(exc.status, exc.message, exc.title)


@bp.errorhandler(CoordinatorError)
def _coordinator_error(exc: CoordinatorError) -> Response:
    if exc.status_code >= 500:
        db.session.rollback()
    return error_page(exc.status_code, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return error_page(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    logger.exception("web: unhandled error")
    db.session.rollback()
    return error_page(500, "The coordinator hit an unexpected error; it has been logged.")


def _content_security_policy() -> str:
    """Only this site's own scripts, styles and data; media and fetches may follow a redirect to
    object storage when files live there."""
    extra = " https:" if get_state().storage.direct else ""
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"media-src 'self'{extra}; connect-src 'self'{extra}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'")


@bp.after_request
def _headers(response: Response) -> Response:
    """Pages are never cached or framed, and never leak their address (sign-in links) onward."""
    response.headers.setdefault("Content-Security-Policy", _content_security_policy())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response
