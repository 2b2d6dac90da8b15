"""Full-text search over transcripts: the segment index (see coordinator/search.py).

SQLite: a plain `search_segments` table plus two FTS5 tables keyed by its ids, one with the
Porter stemmer (English) and one without (every other language). PostgreSQL: `search_segments`
with a `tsvector` column filled on insert (each row's own text search configuration) and a GIN
index. No model describes these tables: the drift check leaves every `search_*` table out.

Revision ID: 0003_search
Revises: 0002_redub_sign_in
Created: 2026-12-01
"""
from __future__ import annotations

from alembic import op

revision = "0003_search"
down_revision = "0002_redub_sign_in"
branch_labels = None
depends_on = None

_COLUMNS = """
    job_id VARCHAR(32) NOT NULL,
    owner_key_id INTEGER NOT NULL,
    language VARCHAR(16) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    segment_index INTEGER NOT NULL,
    start_sec FLOAT NOT NULL,
    end_sec FLOAT NOT NULL,
    text TEXT NOT NULL"""

_SQLITE = (
    f"CREATE TABLE search_segments (id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS},"
    " stemmed BOOLEAN NOT NULL)",
    "CREATE VIRTUAL TABLE search_fts_stemmed USING fts5(text, "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE search_fts_plain USING fts5(text, tokenize='unicode61 remove_diacritics 2')",
)
_POSTGRES = (
    f"CREATE TABLE search_segments (id BIGSERIAL PRIMARY KEY, {_COLUMNS},"
    " ts_config VARCHAR(32) NOT NULL, tsv TSVECTOR NOT NULL)",
    "CREATE INDEX ix_search_segments_tsv ON search_segments USING gin (tsv)",
)
_INDEXES = (
    "CREATE INDEX ix_search_segments_job ON search_segments (job_id, segment_index)",
    "CREATE INDEX ix_search_segments_owner ON search_segments (owner_key_id)",
)


def upgrade() -> None:
    """Create the segment table and its full-text index."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in (*(_SQLITE if sqlite else _POSTGRES), *_INDEXES):
        op.execute(statement)


def downgrade() -> None:
    """Drop the index (it can be rebuilt with `coordinator reindex`)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE search_fts_stemmed")
        op.execute("DROP TABLE search_fts_plain")
    op.execute("DROP TABLE search_segments")
