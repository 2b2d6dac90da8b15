"""The web app: server-rendered pages for people who submit videos, signed in with a key.

Pages live under /app (and / redirects there); they call the JSON API from the browser with the
session cookie (see `coordinator.auth.session_principal`). They are HTML, not API: the blueprint
is marked `not_api`, so the OpenAPI document leaves it out.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from flask import Blueprint, Flask, Request
from flask.sessions import SecureCookieSessionInterface

from ..openapi import not_api

logger = logging.getLogger(__name__)

PREFIX = "/app"

bp = not_api(Blueprint("web", __name__, template_folder="templates", static_folder="static",
                       static_url_path=f"{PREFIX}/static"))

SECRET_FILE = "secret_key"


def _is_https(request: Request) -> bool:
    """HTTPS as the browser sees it: directly, or as a TLS-terminating proxy says (Render's)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


class WebSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the `Secure` flag decided per request.

    A request without the session cookie (every API and worker call) gets a fresh empty session
    without building the signing serializer, a cost Flask otherwise pays on every request."""

    def open_session(self, app: Flask, request: Request):  # type: ignore[override]
        """The request's session; the cheap empty one when it sends no session cookie."""
        if "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies:
            return self.session_class()  # (API clients send no cookies: not even parsed then)
        return super().open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:  # type: ignore[override]
        """Set, refresh or delete the cookie; nothing at all for an untouched empty session."""
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)

    def get_cookie_secure(self, app: Flask) -> bool:
        """SESSION_COOKIE_SECURE_MODE: always, never, or auto (when the request is HTTPS)."""
        from flask import request
        mode = app.config["SESSION_COOKIE_SECURE_MODE"]
        return mode == "always" or (mode == "auto" and _is_https(request))


def _secret_key(app: Flask) -> str:
    """SECRET_KEY from the settings, else the one generated at first start in the data dir."""
    if app.config.get("SECRET_KEY"):
        return str(app.config["SECRET_KEY"])
    path = Path(app.config["DATA_DIR"]) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as handle:  # first start: no other process can have written it
        handle.write(secrets.token_urlsafe(48))
    logger.info("web: generated a session secret in %s", path)
    return path.read_text().strip()


def _read_secret(path: Path) -> str:
    """The stored secret (waiting briefly when another process is writing it right now)."""
    for _ in range(50):
        secret = path.read_text().strip()
        if secret:
            return secret
        time.sleep(0.05)
    raise RuntimeError(f"{path} is empty: delete it or set SECRET_KEY")


def init_web(app: Flask) -> None:
    """Register the web app on `app`: session secret and cookie, pages, static files."""
    app.config["SECRET_KEY"] = _secret_key(app)
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False  # a sign-in lasts WEB_SESSION_HOURS, no more
    app.session_interface = WebSessions()
    from . import account, errors, pages, search_page  # noqa: F401 - register the routes and handlers
    app.register_blueprint(bp)
