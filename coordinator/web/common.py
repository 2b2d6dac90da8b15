"""What every page needs: the signed-in decorator, form CSRF checks, safe redirects, rendering."""
from __future__ import annotations

import functools
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import current_app, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..auth import Principal, csrf_matches, csrf_token, session_principal
from ..extensions import db
from . import PREFIX


class PageError(Exception):
    """A page that cannot be shown: rendered as a friendly HTML page with this status."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def safe_next(target: str | None) -> str:
    """A redirect target inside the web app (never another site): the path and query only."""
    default = url_for("web.jobs")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or "\\" in target:
        return default
    return parts.path + (f"?{parts.query}" if parts.query else "")


def signed_in(view: Callable) -> Callable:
    """Decorator: the page needs a signed-in browser; others go to the sign-in page and back."""
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = session_principal(db.session, current_app.config)
        if principal is None:
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("web.sign_in", next=target))
        g.principal = principal
        return view(*args, **kwargs)
    return wrapper


def principal() -> Principal:
    """The signed-in caller of this page."""
    return g.principal


def check_form_csrf() -> None:
    """A form post must carry this session's CSRF token (403 page otherwise)."""
    if not csrf_matches(request.form.get("csrf_token")):
        raise PageError(403, "Form expired", "This form is out of date or did not come from this "
                        "site. Reload the page and try again.")


def page(template: str, status: int = 200, **context: Any) -> Response:
    """Render a page with what the layout needs (the caller, the CSRF token)."""
    html = render_template(template, me=g.get("principal"), csrf=csrf_token(), **context)
    response = current_app.make_response((html, status))
    return response
