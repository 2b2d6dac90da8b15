"""Webhook deliveries: one row per terminal state of a job, sent and retried from a loop.

When a job with a `callback_url` ends, the transaction that ends it also inserts a
`webhook_deliveries` row holding the job view as the body, so no crash can commit the ending
without its delivery. The row is unique per job, event and finished_at: a terminal state is
delivered once, and a retried job that ends again is a new row.
A `DeliveryLoop` thread in every serving process claims due rows (on PostgreSQL with
`FOR UPDATE SKIP LOCKED`, and every claim pushes the row's next attempt a lease ahead, so one
replica sends a given attempt), POSTs them signed (`coordinator.callbacks`), and records the
outcome: delivered on a 2xx, else retried with exponential backoff and jitter until
WEBHOOK_MAX_ATTEMPTS, then failed. Rows survive restarts; an attempt cut short by a crash is
sent again once its lease ends (receivers should dedupe on `X-Dubfleet-Delivery`).
"""
from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from . import webhook_secrets
from .callbacks import Outcome, callback_guard, post_delivery
from .database import read_only, writing
from .extensions import db
from .models import ENV_OWNER_ID, Job, WebhookDelivery

logger = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
EVENTS = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}
CLAIM_LEASE_SLACK = 30.0  # an attempt's lease beyond its timeout (a crash mid-send: sent again)
UNSIGNED_NOTE = "unsigned: the job's key has no webhook secret (coordinator rotate-webhook-secret)"


@dataclass(frozen=True)
class WebhookSettings:
    """Delivery limits (README "Webhooks")."""

    timeout: float
    max_attempts: int
    backoff: float
    backoff_cap: float
    concurrency: int
    poll: float
    allow_private: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "WebhookSettings":
        """Read the settings from the app config."""
        return cls(timeout=float(config["CALLBACK_TIMEOUT"]),
                   max_attempts=int(config["WEBHOOK_MAX_ATTEMPTS"]),
                   backoff=float(config["WEBHOOK_BACKOFF_SECONDS"]),
                   backoff_cap=float(config["WEBHOOK_BACKOFF_CAP_SECONDS"]),
                   concurrency=int(config["WEBHOOK_CONCURRENCY"]),
                   poll=float(config["WEBHOOK_POLL_SECONDS"]),
                   allow_private=bool(config["ALLOW_PRIVATE_CALLBACKS"]))


def backoff(attempts: int, base: float, cap: float,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after `attempts` failed ones: base * 2^(n-1), capped, with
    jitter in its upper half (never above `cap`)."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay / 2 + rand() * delay / 2


# --- the rows ------------------------------------------------------------------------------

def _insert_ignoring_repeat(session: Session, values: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for this database's dialect."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(WebhookDelivery).values(**values).on_conflict_do_nothing()


def insert_ending(session: Session, job: Job, status: str, url: str, payload: str,
                  now: float | None = None) -> bool:
    """Insert the delivery of `job`'s ending into the open transaction (not committed); False
    when it was already there."""
    now = time.time() if now is None else now
    values = {"id": secrets.token_hex(16), "job_id": job.id, "owner_key_id": job.owner_key_id,
              "event": EVENTS.get(status, f"job.{status}"), "finished_at": job.finished_at or now,
              "url": url, "payload": payload, "status": PENDING, "attempts": 0,
              "next_attempt_at": now, "created_at": now, "updated_at": now}
    return bool(session.execute(_insert_ignoring_repeat(session, values)).rowcount)


@dataclass(frozen=True)
class Claim:
    """One attempt this process took: what to send, and the attempt number it holds."""

    id: str
    owner_key_id: int
    event: str
    url: str
    payload: str
    attempt: int


def claim_due(session: Session, now: float, limit: int, lease: float) -> list[Claim]:
    """Take up to `limit` due pending deliveries: count the attempt, hold them `lease` seconds."""
    stmt = (sa.select(WebhookDelivery)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True))
    try:
        claims = []
        for row in session.scalars(stmt).all():
            row.attempts += 1
            row.next_attempt_at, row.updated_at = now + lease, now
            claims.append(Claim(row.id, row.owner_key_id, row.event, row.url, row.payload,
                                row.attempts))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return claims


def _outcome_values(outcome: Outcome, attempt: int, settings: WebhookSettings,
                    now: float) -> dict[str, Any]:
    """The columns an attempt's outcome sets."""
    values: dict[str, Any] = {"last_http_status": outcome.http_status, "updated_at": now,
                              "last_error": outcome.error}
    if outcome.ok:
        return {**values, "status": DELIVERED, "delivered_at": now, "next_attempt_at": None}
    if outcome.final or attempt >= settings.max_attempts:
        return {**values, "status": FAILED, "next_attempt_at": None}
    delay = backoff(attempt, settings.backoff, settings.backoff_cap)
    return {**values, "next_attempt_at": now + delay}


def record_outcome(session: Session, claim: Claim, outcome: Outcome, signed: bool,
                   settings: WebhookSettings, now: float | None = None) -> None:
    """Store how the claimed attempt went (only while the row still holds that attempt)."""
    now = time.time() if now is None else now
    values = {**_outcome_values(outcome, claim.attempt, settings, now), "signed": signed}
    stmt = (sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == claim.id, WebhookDelivery.attempts == claim.attempt,
                   WebhookDelivery.status == PENDING).values(**values))
    try:
        session.execute(stmt)
        session.commit()
    except BaseException:
        session.rollback()
        raise


def delivery_view(row: WebhookDelivery) -> dict[str, Any]:
    """A delivery as the API shows it (never the body or the secret)."""
    return {"id": row.id, "event": row.event, "url": row.url, "status": row.status,
            "attempts": row.attempts, "signed": row.signed,
            "last_http_status": row.last_http_status, "last_error": row.last_error,
            "next_attempt_at": row.next_attempt_at if row.status == PENDING else None,
            "created_at": row.created_at, "updated_at": row.updated_at,
            "delivered_at": row.delivered_at}


def deliveries_of(session: Session, job_id: str) -> list[dict[str, Any]]:
    """A job's deliveries, oldest first."""
    stmt = (sa.select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id))
    return [delivery_view(row) for row in session.scalars(stmt)]


# --- in the process --------------------------------------------------------------------------

class WebhookDispatcher:
    """The queue's webhook hooks: `stage` records an ending's delivery inside the terminal
    transition; `wake` starts the delivery loop once it is committed."""

    def __init__(self, build_view: Callable[[Session, Job], dict[str, Any]]):
        self.build_view = build_view
        self.wake = threading.Event()

    def stage(self, session: Session, job_id: str, url: str, status: str) -> None:
        """Insert the delivery of the job's ending, its body the job as it ends, in `session`'s
        open transaction (the caller commits it with the ending, or rolls both back)."""
        session.flush()
        job = session.scalar(sa.select(Job).where(Job.id == job_id)
                             .execution_options(populate_existing=True))
        if job is None:
            return
        payload = json.dumps(self.build_view(session, job), separators=(",", ":"))
        if insert_ending(session, job, status, url, payload):
            logger.info("webhook for job %s (%s) queued", job_id, status)

    def shutdown(self, wait: bool = False) -> None:
        """Nothing to flush: deliveries are rows, the loop stops with the background threads."""


class DeliveryLoop(threading.Thread):
    """Sends due deliveries: at once when woken, else every WEBHOOK_POLL_SECONDS."""

    def __init__(self, app: Flask, wake: threading.Event, settings: WebhookSettings):
        super().__init__(name="webhooks", daemon=True)
        self.app, self.wake, self.settings = app, wake, settings
        self.guard = callback_guard(settings.allow_private)
        self._stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="webhook")

    def run(self) -> None:
        """Loop until `stop()`; a failing pass is logged and retried."""
        logger.info("webhook delivery loop started")
        while not self._stop_event.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                logger.exception("webhook pass failed")
                busy = False
            if not busy:
                self.wake.wait(self.settings.poll)
            self.wake.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_once(self, now: float | None = None) -> int:
        """Claim what is due, send it, record the outcomes; returns how many were sent."""
        lease = self.settings.timeout + CLAIM_LEASE_SLACK
        with self.app.app_context():
            try:
                with writing():
                    claims = claim_due(db.session, now or time.time(),
                                       self.settings.concurrency, lease)
                if not claims:
                    return 0
                secret_key = str(self.app.config["SECRET_KEY"])
                with read_only():
                    prepared = [(claim, self._secret(claim, secret_key)) for claim in claims]
                    db.session.rollback()
                outcomes = list(self._pool.map(self._send, prepared))
                with writing():
                    for (claim, secret), outcome in zip(prepared, outcomes):
                        record_outcome(db.session, claim, outcome, bool(secret), self.settings)
                return len(claims)
            finally:
                db.session.remove()

    def _secret(self, claim: Claim, secret_key: str) -> str | None:
        """The owning key's signing secret, or None (logged: the delivery goes unsigned)."""
        try:
            secret = (None if claim.owner_key_id == ENV_OWNER_ID else
                      webhook_secrets.secret_of(db.session, claim.owner_key_id, secret_key))
        except webhook_secrets.SecretUnreadable as exc:
            logger.warning("webhook %s: %s; sent unsigned", claim.id, exc)
            return None
        if secret is None:
            logger.warning("webhook %s: %s", claim.id, UNSIGNED_NOTE)
        return secret

    def _send(self, item: tuple[Claim, str | None]) -> Outcome:
        """One attempt of one delivery."""
        claim, secret = item
        outcome = post_delivery(self.guard, claim.url, claim.id, claim.event,
                                claim.payload.encode(), secret, self.settings.timeout)
        logger.info("webhook %s (%s) -> %s attempt %d: %s", claim.id, claim.event, claim.url,
                    claim.attempt, "delivered" if outcome.ok else outcome.error)
        return outcome

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stop_event.set()
        self.wake.set()


def start_webhooks(app: Flask) -> DeliveryLoop | None:
    """Start the delivery loop of a serving process (None when CALLBACKS_ENABLED is off)."""
    from .state import get_state
    dispatcher = get_state(app).callbacks
    if dispatcher is None:
        return None
    loop = DeliveryLoop(app, dispatcher.wake, WebhookSettings.from_config(app.config))
    loop.start()
    return loop
