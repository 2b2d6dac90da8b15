"""The schema of the last release before migrations (d9681e3): jobs, artifacts, api_keys, workers,
audit_events, as `create_all` made them.

A database made by that release (or an older one) has these tables and no `alembic_version`:
`coordinator.migrate` brings it up to `metadata()` (older releases lack some nullable columns and
`audit_events`), stamps it at this revision and upgrades it from here.

Revision ID: 0001_baseline
Revises:
Created: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# (table, [columns and constraints], [(index, columns)]), in creation order (jobs before artifacts).
Definition = tuple[str, list[sa.schema.SchemaItem], list[tuple[str, list[str]]]]


def _jobs() -> Definition:
    """The queue's jobs, their leases and progress."""
    text, required = sa.String, {"nullable": False}
    columns = [
        sa.Column("id", text(32), **required), sa.Column("owner_key_id", sa.Integer, **required),
        sa.Column("idempotency_key", text(255)), sa.Column("kind", text(16), **required),
        sa.Column("status", text(16), **required), sa.Column("priority", sa.Integer, **required),
        sa.Column("source_language", text(8), **required),
        sa.Column("target_language", text(8), **required),
        sa.Column("detected_language", text(8)), sa.Column("asr_model", text(128)),
        sa.Column("options", sa.JSON, **required), sa.Column("callback_url", sa.Text),
        sa.Column("source_url", sa.Text), sa.Column("input_name", text(255), **required),
        sa.Column("input_size", sa.BigInteger), sa.Column("input_sha256", text(64)),
        sa.Column("subtitles_size", sa.BigInteger), sa.Column("subtitles_sha256", text(64)),
        sa.Column("max_attempts", sa.Integer, **required),
        sa.Column("attempts", sa.Integer, **required),
        sa.Column("run_number", sa.Integer, **required),
        sa.Column("available_at", sa.Float, **required), sa.Column("lease_token", text(64)),
        sa.Column("lease_expires_at", sa.Float), sa.Column("worker_id", text(128)),
        sa.Column("worker_session", text(128)), sa.Column("confirmed_at", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, **required), sa.Column("stage", text(32)),
        sa.Column("progress", sa.Float, **required), sa.Column("message", sa.Text),
        sa.Column("eta_seconds", sa.Float), sa.Column("error", sa.Text),
        sa.Column("main_artifact", text(128)), sa.Column("created_at", sa.Float, **required),
        sa.Column("updated_at", sa.Float, **required), sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_key_id", "idempotency_key", name="uq_jobs_idempotency"),
    ]
    indexes = [("ix_jobs_claim", ["status", "priority", "created_at"]),
               ("ix_jobs_lease", ["status", "lease_expires_at"]),
               ("ix_jobs_finished", ["status", "finished_at"]),
               ("ix_jobs_owner", ["owner_key_id", "created_at"])]
    return "jobs", columns, indexes


def _artifacts() -> Definition:
    """Result files, one row per file of one run."""
    required = {"nullable": False}
    columns = [
        sa.Column("id", sa.Integer, autoincrement=True, **required),
        sa.Column("job_id", sa.String(32), **required),
        sa.Column("attempt", sa.Integer, **required), sa.Column("name", sa.String(128), **required),
        sa.Column("size", sa.BigInteger, **required), sa.Column("sha256", sa.String(64), **required),
        sa.Column("content_type", sa.String(128), **required),
        sa.Column("path", sa.Text, **required), sa.Column("created_at", sa.Float, **required),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attempt", "name", name="uq_artifacts_name"),
    ]
    return "artifacts", columns, [("ix_artifacts_job_id", ["job_id"])]


def _api_keys() -> Definition:
    """Credentials: only the SHA-256 of a key is stored."""
    required = {"nullable": False}
    columns = [
        sa.Column("id", sa.Integer, autoincrement=True, **required),
        sa.Column("name", sa.String(128), **required), sa.Column("kind", sa.String(16), **required),
        sa.Column("key_hash", sa.String(64), **required),
        sa.Column("prefix", sa.String(16), **required),
        sa.Column("created_at", sa.Float, **required), sa.Column("revoked_at", sa.Float),
        sa.PrimaryKeyConstraint("id"), sa.UniqueConstraint("key_hash"),
    ]
    return "api_keys", columns, []


def _workers() -> Definition:
    """Worker sessions as last seen."""
    required = {"nullable": False}
    columns = [
        sa.Column("session_id", sa.String(128), **required),
        sa.Column("worker_id", sa.String(128), **required),
        sa.Column("hostname", sa.String(255), **required),
        sa.Column("device", sa.String(64), **required),
        sa.Column("capabilities", sa.JSON, **required),
        sa.Column("first_seen", sa.Float, **required), sa.Column("last_seen", sa.Float, **required),
        sa.PrimaryKeyConstraint("session_id"),
    ]
    return "workers", columns, [("ix_workers_last_seen", ["last_seen"])]


def _audit_events() -> Definition:
    """The audit log."""
    required = {"nullable": False}
    columns = [
        sa.Column("id", sa.Integer, autoincrement=True, **required),
        sa.Column("at", sa.Float, **required), sa.Column("key_id", sa.Integer),
        sa.Column("key_name", sa.String(128), **required),
        sa.Column("action", sa.String(32), **required), sa.Column("job_id", sa.String(32)),
        sa.Column("detail", sa.Text, **required), sa.Column("remote", sa.String(255), **required),
        sa.PrimaryKeyConstraint("id"),
    ]
    return "audit_events", columns, [("ix_audit_at", ["at"]), ("ix_audit_key", ["key_id", "at"])]


def definitions() -> list[Definition]:
    """Fresh definitions of this revision's tables (new Column objects on every call)."""
    return [_jobs(), _artifacts(), _api_keys(), _workers(), _audit_events()]


def metadata() -> sa.MetaData:
    """This revision's tables as a MetaData (for bringing pre-Alembic databases up to it)."""
    tables = sa.MetaData()
    for name, items, indexes in definitions():
        table = sa.Table(name, tables, *items)
        for index, columns in indexes:
            sa.Index(index, *(table.c[column] for column in columns))
    return tables


def upgrade() -> None:
    """Create the release's tables and indexes."""
    for name, items, indexes in definitions():
        op.create_table(name, *items)
        for index, columns in indexes:
            op.create_index(index, name, columns)


def downgrade() -> None:
    """Drop them (and everything in them)."""
    for name, _, _ in reversed(definitions()):
        op.drop_table(name)
