"""Signed webhooks: per-key signing secrets and the delivery log (coordinator.webhooks).

Keys created before this revision get no secret: their jobs' deliveries go unsigned until
`coordinator rotate-webhook-secret --id N` gives them one (README "Webhooks"). Like 0002, each
step is skipped when its column or table is already there (a database that `create_all` made
from these models before it came under migrations).

Revision ID: 0004_webhooks
Revises: 0003_search
Created: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_webhooks"
down_revision = "0003_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the sealed secret column to api_keys and the webhook_deliveries table where missing."""
    inspector = sa.inspect(op.get_bind())
    if "webhook_secret" not in {column["name"] for column in inspector.get_columns("api_keys")}:
        with op.batch_alter_table("api_keys") as batch:
            batch.add_column(sa.Column("webhook_secret", sa.Text, nullable=True))
    if not inspector.has_table("webhook_deliveries"):
        _create_deliveries()


def _create_deliveries() -> None:
    """The delivery log and its indexes."""
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("owner_key_id", sa.Integer, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float),
        sa.Column("signed", sa.Boolean),
        sa.Column("last_http_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "event", "finished_at", name="uq_webhook_occurrence"),
    )
    op.create_index("ix_webhook_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_job", "webhook_deliveries", ["job_id", "created_at"])


def downgrade() -> None:
    """Drop the delivery log and the secret column."""
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("webhook_secret")
