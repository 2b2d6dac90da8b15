"""Coordinator exceptions and the one JSON error handler (`{"error", "message"}`)."""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, has_request_context, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from shared.errors import error_payload
from shared.protocol import WORKER_SESSION_HEADER

from .extensions import db

logger = logging.getLogger(__name__)


class CoordinatorError(Exception):
    """Internal error."""

    status_code = 500
    error = "internal_error"

    def __init__(self, message: str | None = None, **extra: Any):
        self.message = message or (self.__doc__ or "").strip()
        self.extra = extra
        self.headers: dict[str, str] = {}
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        """The JSON body of this error."""
        return error_payload(self.error, self.message, **self.extra)


class BadRequest(CoordinatorError):
    """The request is malformed."""

    status_code = 400
    error = "bad_request"


class Unauthorized(CoordinatorError):
    """A valid API key is required."""

    status_code = 401
    error = "unauthorized"


class Forbidden(CoordinatorError):
    """This API key may not do that."""

    status_code = 403
    error = "forbidden"


class NotFound(CoordinatorError):
    """No such job."""

    status_code = 404
    error = "not_found"


class Conflict(CoordinatorError):
    """The job is not in a state that allows this."""

    status_code = 409
    error = "conflict"


class LeaseLost(Conflict):
    """The lease token is stale or wrong; nothing was changed."""

    error = "lease_lost"


class JobWasCancelled(Conflict):
    """The client cancelled the job: it ended `cancelled` and this result was discarded."""

    error = "cancelled"


class PayloadTooLarge(CoordinatorError):
    """The upload is over the size limit."""

    status_code = 413
    error = "payload_too_large"


class TooManyRequests(CoordinatorError):
    """Too many requests in progress for this API key; retry shortly."""

    status_code = 429
    error = "too_many_requests"


class ValidationFailed(CoordinatorError):
    """A field has an invalid value."""

    status_code = 422
    error = "validation_failed"


class ServiceUnavailable(CoordinatorError):
    """The coordinator cannot serve this right now; try again."""

    status_code = 503
    error = "service_unavailable"


def _json(payload: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON response with status and headers."""
    response = jsonify(payload)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _http_code(exc: HTTPException) -> str:
    """A snake_case error code for a werkzeug HTTP exception."""
    if exc.code == 413:
        return PayloadTooLarge.error
    return re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")


def _log_refusal(exc: CoordinatorError) -> None:
    """Log a refused call with its route (which names the job), the caller and the reason."""
    if not has_request_context():
        return
    who = request.headers.get(WORKER_SESSION_HEADER) or "-"
    level = logging.WARNING if exc.status_code == 409 else logging.INFO
    logger.log(level, "refused %s %s (worker session %s): %s %s: %s", request.method, request.path,
               who[:64], exc.status_code, exc.error, exc.message)


def handle_coordinator_error(exc: CoordinatorError) -> Response:
    """Render a coordinator error (and log it: an operator can follow a job from the log)."""
    if exc.status_code >= 500:
        db.session.rollback()
    else:
        _log_refusal(exc)
    return _json(exc.payload(), exc.status_code, exc.headers)


def handle_http_exception(exc: HTTPException) -> Response:
    """Render werkzeug's errors (unknown route, 405, 413, ...) in the same JSON shape."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return _json(error_payload(_http_code(exc), exc.description or exc.name), exc.code or 500,
                 headers)


def handle_operational_error(exc: OperationalError) -> Response:
    """The database is busy or unreachable: 503, the client may retry."""
    logger.warning("database error: %s", exc)
    db.session.rollback()
    error = ServiceUnavailable("the database is busy or unavailable; retry shortly")
    error.headers["Retry-After"] = "2"
    return handle_coordinator_error(error)


def handle_unexpected(exc: Exception) -> Response:
    """Last resort: log, roll back, answer JSON 500 (this is a bug)."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    logger.exception("unhandled error")
    db.session.rollback()
    return _json(error_payload("internal_error", "internal server error"), 500)


def register_error_handlers(app: Flask) -> None:
    """Route every error through the JSON handlers."""
    app.register_error_handler(CoordinatorError, handle_coordinator_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(Exception, handle_unexpected)
