"""Database tables: jobs, their artifacts, API keys, worker sessions, sign-in links and webhook
deliveries (times: epoch seconds)."""
from __future__ import annotations

from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db

# Owner id recorded for jobs submitted with the ADMIN_API_KEY environment key (no key row).
ENV_OWNER_ID = 0


class Job(db.Model):
    """One unit of work and its whole lifecycle."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_lease", "status", "lease_expires_at"),
        sa.Index("ix_jobs_finished", "status", "finished_at"),
        sa.Index("ix_jobs_owner", "owner_key_id", "created_at"),
        sa.UniqueConstraint("owner_key_id", "idempotency_key", name="uq_jobs_idempotency"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    owner_key_id: Mapped[int] = mapped_column(sa.Integer)
    idempotency_key: Mapped[Optional[str]] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    priority: Mapped[int] = mapped_column(sa.Integer, default=0)
    source_language: Mapped[str] = mapped_column(sa.String(8))
    target_language: Mapped[str] = mapped_column(sa.String(8))
    detected_language: Mapped[Optional[str]] = mapped_column(sa.String(8))
    asr_model: Mapped[Optional[str]] = mapped_column(sa.String(128))
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    callback_url: Mapped[Optional[str]] = mapped_column(sa.Text)
    source_url: Mapped[Optional[str]] = mapped_column(sa.Text)
    input_name: Mapped[str] = mapped_column(sa.String(255), default="")
    input_size: Mapped[Optional[int]] = mapped_column(sa.BigInteger)
    input_sha256: Mapped[Optional[str]] = mapped_column(sa.String(64))
    # A dub's own subtitles, stored next to the input (inputs/<job>/subtitles); null: none.
    subtitles_size: Mapped[Optional[int]] = mapped_column(sa.BigInteger)
    subtitles_sha256: Mapped[Optional[str]] = mapped_column(sa.String(64))
    # A re-dub's parent (the completed dub it corrects, see coordinator.redub); null: not a re-dub.
    parent_job_id: Mapped[Optional[str]] = mapped_column(sa.String(32))
    max_attempts: Mapped[int] = mapped_column(sa.Integer)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Increments at every claim and is never reset: it scopes artifacts to one run.
    run_number: Mapped[int] = mapped_column(sa.Integer, default=0)
    available_at: Mapped[float] = mapped_column(sa.Float)
    lease_token: Mapped[Optional[str]] = mapped_column(sa.String(64))
    lease_expires_at: Mapped[Optional[float]] = mapped_column(sa.Float)
    worker_id: Mapped[Optional[str]] = mapped_column(sa.String(128))
    worker_session: Mapped[Optional[str]] = mapped_column(sa.String(128))
    # Set by the claiming worker's first call (heartbeat, input download or upload); a lease that
    # expires unconfirmed never started, so it does not count against max_attempts.
    confirmed_at: Mapped[Optional[float]] = mapped_column(sa.Float)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    stage: Mapped[Optional[str]] = mapped_column(sa.String(32))
    progress: Mapped[float] = mapped_column(sa.Float, default=0.0)
    message: Mapped[Optional[str]] = mapped_column(sa.Text)
    eta_seconds: Mapped[Optional[float]] = mapped_column(sa.Float)
    error: Mapped[Optional[str]] = mapped_column(sa.Text)
    main_artifact: Mapped[Optional[str]] = mapped_column(sa.String(128))
    created_at: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float)
    started_at: Mapped[Optional[float]] = mapped_column(sa.Float)
    finished_at: Mapped[Optional[float]] = mapped_column(sa.Float)


# The claim's order (priority DESC, created_at, id): a claim reads one index entry instead of
# sorting every queued job of the top priority (revision 0005).
sa.Index("ix_jobs_pick", Job.status, Job.priority.desc(), Job.created_at, Job.id)


class Artifact(db.Model):
    """A result file of one run of a job."""

    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt", "name", name="uq_artifacts_name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)  # the job's run_number
    name: Mapped[str] = mapped_column(sa.String(128))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    content_type: Mapped[str] = mapped_column(sa.String(128))
    path: Mapped[str] = mapped_column(sa.Text)  # relative to the data directory
    created_at: Mapped[float] = mapped_column(sa.Float)


class ApiKey(db.Model):
    """A credential; only the SHA-256 of the key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    kind: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[float] = mapped_column(sa.Float)
    revoked_at: Mapped[Optional[float]] = mapped_column(sa.Float)
    # The webhook signing secret, sealed with a key derived from SECRET_KEY
    # (coordinator.webhook_secrets); null: deliveries for this key's jobs go unsigned.
    webhook_secret: Mapped[Optional[str]] = mapped_column(sa.Text)


class Worker(db.Model):
    """One worker process (session), as last seen by the coordinator."""

    __tablename__ = "workers"

    session_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    worker_id: Mapped[str] = mapped_column(sa.String(128), default="")
    hostname: Mapped[str] = mapped_column(sa.String(255), default="")
    device: Mapped[str] = mapped_column(sa.String(64), default="")
    capabilities: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    first_seen: Mapped[float] = mapped_column(sa.Float)
    last_seen: Mapped[float] = mapped_column(sa.Float, index=True)


class AuditEvent(db.Model):
    """Who did what, when, from where: key changes, submits, cancels, retries, downloads."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_at", "at"), sa.Index("ix_audit_key", "key_id", "at"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(sa.Float)
    key_id: Mapped[Optional[int]] = mapped_column(sa.Integer)
    key_name: Mapped[str] = mapped_column(sa.String(128), default="")
    action: Mapped[str] = mapped_column(sa.String(32))
    job_id: Mapped[Optional[str]] = mapped_column(sa.String(32))
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    remote: Mapped[str] = mapped_column(sa.String(255), default="")


class SignInToken(db.Model):
    """A one-time browser sign-in link for a key: only the SHA-256 of the token is stored."""

    __tablename__ = "sign_in_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_id: Mapped[int] = mapped_column(sa.Integer)
    created_at: Mapped[float] = mapped_column(sa.Float)
    expires_at: Mapped[float] = mapped_column(sa.Float, index=True)
    used_at: Mapped[Optional[float]] = mapped_column(sa.Float)


class WebhookDelivery(db.Model):
    """One `callback_url` delivery of one terminal state of a job, and how it went.

    Unique per (job, event, finished_at): a terminal state is delivered once, and a retried job
    that ends again is a new occurrence (a new finished_at).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "event", "finished_at", name="uq_webhook_occurrence"),
        sa.Index("ix_webhook_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_job", "job_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(32))
    owner_key_id: Mapped[int] = mapped_column(sa.Integer)
    event: Mapped[str] = mapped_column(sa.String(32))  # job.completed | job.failed | job.cancelled
    finished_at: Mapped[float] = mapped_column(sa.Float)
    url: Mapped[str] = mapped_column(sa.Text)
    payload: Mapped[str] = mapped_column(sa.Text)  # the signed body (the job view, as sent)
    status: Mapped[str] = mapped_column(sa.String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[Optional[float]] = mapped_column(sa.Float)
    signed: Mapped[Optional[bool]] = mapped_column(sa.Boolean)
    last_http_status: Mapped[Optional[int]] = mapped_column(sa.Integer)
    last_error: Mapped[Optional[str]] = mapped_column(sa.Text)
    created_at: Mapped[float] = mapped_column(sa.Float)
    updated_at: Mapped[float] = mapped_column(sa.Float)
    delivered_at: Mapped[Optional[float]] = mapped_column(sa.Float)
