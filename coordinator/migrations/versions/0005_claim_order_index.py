"""The claim's index in the claim's order: (status, priority DESC, created_at, id).

The old `ix_jobs_claim` (status, priority, created_at) ran ascending on priority while a claim
orders by priority descending, so SQLite (and PostgreSQL) sorted every queued job of the top
priority on each claim, inside the write transaction: about 0.8 ms per claim with 2,000 jobs
queued on SQLite, growing with the backlog. With the index in the claim's order a claim reads its
first entry. Like 0002, each step is skipped when already done (a database that `create_all`
made from these models before it came under migrations).

Revision ID: 0005_claim_order_index
Revises: 0004_webhooks
Created: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_claim_order_index"
down_revision = "0004_webhooks"
branch_labels = None
depends_on = None


def _indexes() -> set[str]:
    return {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("jobs")}


def upgrade() -> None:
    """Replace ix_jobs_claim with ix_jobs_pick."""
    found = _indexes()
    if "ix_jobs_pick" not in found:
        op.create_index("ix_jobs_pick", "jobs", [sa.column("status"), sa.column("priority").desc(),
                                                 sa.column("created_at"), sa.column("id")])
    if "ix_jobs_claim" in found:
        op.drop_index("ix_jobs_claim", table_name="jobs")


def downgrade() -> None:
    """Back to ix_jobs_claim."""
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "created_at"])
    op.drop_index("ix_jobs_pick", table_name="jobs")
