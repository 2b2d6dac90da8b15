"""Re-dubs and browser sign-in links: jobs.parent_job_id, the sign_in_tokens table.

The web app release (a29d3c5) made both with `create_all` and an `ALTER TABLE ... ADD COLUMN`
before migrations existed, so a database it ran on may already have them: each step is skipped
when its column or table is already there.

Revision ID: 0002_redub_sign_in
Revises: 0001_baseline
Created: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_redub_sign_in"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the re-dub parent column and the sign-in token table where missing."""
    inspector = sa.inspect(op.get_bind())
    if "parent_job_id" not in {column["name"] for column in inspector.get_columns("jobs")}:
        with op.batch_alter_table("jobs") as batch:
            batch.add_column(sa.Column("parent_job_id", sa.String(32), nullable=True))
    if not inspector.has_table("sign_in_tokens"):
        op.create_table(
            "sign_in_tokens",
            sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("key_id", sa.Integer, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.Column("used_at", sa.Float),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_hash"),
        )
        op.create_index("ix_sign_in_tokens_expires_at", "sign_in_tokens", ["expires_at"])


def downgrade() -> None:
    """Drop the sign-in tokens and the re-dub parent column."""
    op.drop_table("sign_in_tokens")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parent_job_id")
