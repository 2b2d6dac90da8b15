"""Signing in (a pasted key, or a one-time link) and out."""
from __future__ import annotations

import logging

from flask import current_app, redirect, request, session, url_for
from werkzeug.wrappers import Response

from shared.protocol import KeyKind

from .. import audit
from ..auth import WEB_KINDS, Principal, authenticate, session_principal, sign_in
from ..errors import Unauthorized
from ..extensions import db
from ..models import ApiKey
from . import PREFIX, bp, tokens
from .common import PageError, check_form_csrf, page, safe_next

logger = logging.getLogger(__name__)

_WORKER_KEY = "A worker key cannot sign in here: use a client or admin key."


def _signed_in_as(principal: Principal, how: str) -> None:
    """Start the session and record the sign-in in the audit log."""
    sign_in(principal, current_app.config)
    audit.record(db.engine, "sign_in", audit.Actor(principal.key_id, principal.name), detail=how)
    logger.info("web: key #%s signed in (%s)", principal.key_id, how)


@bp.get(f"{PREFIX}/sign-in", endpoint="sign_in")
def sign_in_form() -> Response:
    """The sign-in page (already signed in: straight to the jobs)."""
    target = safe_next(request.args.get("next"))
    if session_principal(db.session, current_app.config) is not None:
        return redirect(target)
    return page("sign_in.html", next=target, signed_out=request.args.get("signed_out") == "1")


@bp.post(f"{PREFIX}/sign-in")
def sign_in_post() -> Response:
    """Check the pasted key and sign the browser in as it."""
    check_form_csrf()
    target = safe_next(request.form.get("next"))
    try:
        principal = authenticate(db.session, (request.form.get("api_key") or "").strip(),
                                 current_app.config)
    except Unauthorized:
        return page("sign_in.html", 401, next=target, error="That key is unknown or revoked.")
    if principal.kind not in WEB_KINDS:
        return page("sign_in.html", 403, next=target, error=_WORKER_KEY)
    _signed_in_as(principal, "key")
    return redirect(target)


@bp.get(f"{PREFIX}/sign-in/<token>")
def sign_in_link(token: str) -> Response:
    """A one-time link: a button that uses it (link scanners that only GET never spend it)."""
    if not tokens.is_usable(db.session, token):
        raise PageError(410, "Link expired", "This sign-in link has expired or was already used. "
                        "Ask for a new one, or sign in with your key.")
    return page("sign_in_link.html")


@bp.post(f"{PREFIX}/sign-in/<token>")
def sign_in_link_post(token: str) -> Response:
    """Spend the link and sign in as its key (if that key is still active)."""
    check_form_csrf()
    key_id = tokens.consume(db.session, token)
    row = db.session.get(ApiKey, key_id) if key_id is not None else None
    if row is None or row.revoked_at is not None or KeyKind(row.kind) not in WEB_KINDS:
        db.session.rollback()
        raise PageError(410, "Link expired", "This sign-in link has expired or was already used, "
                        "or its key was revoked.")
    principal = Principal(key_id=row.id, kind=KeyKind(row.kind), name=row.name)
    db.session.rollback()
    _signed_in_as(principal, "link")
    return redirect(url_for("web.jobs"))


@bp.post(f"{PREFIX}/sign-out")
def sign_out() -> Response:
    """Forget the sign-in."""
    check_form_csrf()
    session.clear()
    return redirect(url_for("web.sign_in", signed_out=1))
