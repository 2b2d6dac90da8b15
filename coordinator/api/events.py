"""Live updates: Server-Sent Events of one job, or of all the caller's jobs (`coordinator.events`).

Each stream holds a request thread, so open streams are capped (MAX_EVENT_STREAMS: 503 with
Retry-After beyond it; pages then poll), last at most EVENT_STREAM_MAX_SECONDS (the client
reconnects with Last-Event-ID and resumes) and end at once when the server shuts down.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed

from shared.protocol import KeyKind, Routes

from ..auth import current_principal, require_key
from ..errors import NotFound, ServiceUnavailable
from ..events import EventHub, EventStream, JobEvent, Loaded, StreamTiming, Subscription, snapshot
from ..jobs import TERMINAL
from ..openapi import EVENTS, documented
from ..state import get_state
from .common import no_content, read_view, visible_job

logger = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

RETRY_AFTER_SECONDS = 5
_MAX_ID_DIGITS = 18  # fits a signed 64-bit integer


@bp.before_app_request
def _events_is_not_a_job() -> None:
    """`/jobs/events` also matches `/jobs/<job_id>`: a method other than GET there is a 405 (with
    Allow), not a 404 for a job named "events"."""
    current = request._get_current_object()  # one context lookup: this runs on every request
    if current.path != Routes.JOBS_EVENTS:
        return
    rule = current.url_rule
    if rule is not None and rule.rule != Routes.JOBS_EVENTS:
        raise MethodNotAllowed(valid_methods=["GET", "HEAD", "OPTIONS"])


def _hub() -> EventHub:
    """This coordinator's event hub."""
    return get_state().events.hub


def _last_event_id() -> int | None:
    """The Last-Event-ID header as an id (None when absent or not one of ours)."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= _MAX_ID_DIGITS:
        return int(raw)
    return None


def _subscribe(accepts: Callable[[JobEvent], bool]) -> Subscription:
    """A slot in the hub, or 503 + Retry-After when every slot (or every slot this key may
    hold) is taken."""
    hub, key = _hub(), current_principal().key_id
    subscription = hub.open(accepts, key)
    if subscription is None:
        if hub.streams_of(key) >= hub.max_per_key:
            setting = f"this key has {hub.streams_of(key)} open, MAX_EVENT_STREAMS_PER_KEY"
        else:
            setting = "MAX_EVENT_STREAMS"
        logger.info("event stream refused: %d streams open (%s)", hub.streams, setting)
        error = ServiceUnavailable(f"too many live event streams are open ({setting}); poll "
                                   "the job instead, or retry after Retry-After seconds")
        error.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        raise error
    return subscription


def _open(accepts: Callable[[JobEvent], bool],
          load: Callable[[], Sequence[Loaded]]) -> tuple[Subscription, list[JobEvent], bool]:
    """Take a slot, then resume after Last-Event-ID or else take a snapshot: (subscription,
    first messages, resumed)."""
    subscription = _subscribe(accepts)
    try:
        last_id = _last_event_id()
        first = None if last_id is None else subscription.resume(last_id)
        if first is not None:
            return subscription, first, True
        return subscription, snapshot(subscription, load), False
    except BaseException:
        subscription.close()
        raise


def _event_stream(subscription: Subscription, load: Callable[[], Sequence[Loaded]],
                  first: list[JobEvent], until_terminal: bool) -> Response:
    """The streaming reply; the server closes `EventStream` (and so the slot) when it ends."""
    config = current_app.config
    timing = StreamTiming(float(config["EVENT_HEARTBEAT_SECONDS"]),
                          float(config["EVENT_STREAM_MAX_SECONDS"]))
    body = EventStream(subscription, load, timing, first, until_terminal)
    response = Response(body, status=200, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each message on at once
    return response


@bp.get(Routes.JOB_EVENTS)
@documented("client", ok={200: EVENTS, 204: None}, headers=("Last-Event-ID",), errors=(503,))
@require_key(KeyKind.CLIENT)
@read_view
def job_events(job_id: str) -> Response:
    """Live updates of one job (Server-Sent Events): its state now, then every change; the
    stream ends after the message with a terminal status.

    204: a resumed stream of a job that has ended, with nothing left to send (EventSource then
    stops reconnecting).
    """
    ended = visible_job(job_id, current_principal()).status in TERMINAL
    source = _hub().source

    def load() -> list[Loaded]:
        loaded = source.one(job_id)
        return [] if loaded is None else [loaded]

    subscription, first, resumed = _open(lambda event: event.data["id"] == job_id, load)
    if not first and (ended or not resumed):
        subscription.close()
        if resumed:
            return no_content()
        raise NotFound()  # deleted since the check above
    return _event_stream(subscription, load, first, until_terminal=True)


@bp.get(Routes.JOBS_EVENTS)
@documented("client", ok=EVENTS, headers=("Last-Event-ID",), errors=(503,))
@require_key(KeyKind.CLIENT)
def jobs_events() -> Response:
    """Live updates of the caller's jobs (admin: everyone's), as Server-Sent Events: the queued
    and running ones now, then every change of any of them (new jobs included)."""
    principal = current_principal()
    owner = None if principal.is_admin else principal.key_id
    source = _hub().source

    def load() -> list[Loaded]:
        return source.open_jobs(owner)

    subscription, first, _resumed = _open(
        lambda event: owner is None or event.owner_key_id == owner, load)
    return _event_stream(subscription, load, first, until_terminal=False)
