"""Bring an existing database up to the current tables: add the columns newer versions need.

`create_all` makes missing tables but never alters existing ones, so a database made by an
earlier version lacks columns added since. Every column added after the first release is
nullable, so adding it is one `ALTER TABLE ... ADD COLUMN` on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy import Engine

logger = logging.getLogger(__name__)


def missing_columns(engine: Engine, metadata: sa.MetaData) -> list[sa.Column]:
    """Columns of the models that the existing tables do not have yet."""
    inspector = sa.inspect(engine)
    existing_tables = set(inspector.get_table_names())
    missing: list[sa.Column] = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(column for column in table.columns if column.name not in present)
    return missing


def add_missing_columns(engine: Engine, metadata: sa.MetaData) -> list[str]:
    """Add every missing (nullable) column; returns "table.column" for each one added."""
    added: list[str] = []
    for column in missing_columns(engine, metadata):
        if not column.nullable:
            raise RuntimeError(f"cannot add the required column {column.table.name}.{column.name} "
                               "to an existing database automatically")
        kind = column.type.compile(dialect=engine.dialect)
        name = engine.dialect.identifier_preparer.quote(column.name)
        table = engine.dialect.identifier_preparer.quote(column.table.name)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        except sa.exc.DBAPIError:
            if any(c is column for c in missing_columns(engine, metadata)):
                raise
            continue  # another process added it first
        added.append(f"{column.table.name}.{column.name}")
        logger.info("database upgraded: added column %s.%s", column.table.name, column.name)
    return added
