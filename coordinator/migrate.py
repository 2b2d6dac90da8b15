"""Database schema migrations: Alembic (through Flask-Migrate) on SQLite and PostgreSQL.

The revisions live in `coordinator/migrations/versions`. `upgrade` brings any database to the
head revision: a new one is created by running them all; one made before migrations existed
(tables but no `alembic_version`) is first brought up to the baseline revision's tables (older
releases lack some nullable columns), stamped there, then upgraded. Replicas starting together
on one PostgreSQL database take turns on an advisory lock; on SQLite the upgrade's transaction
holds the write lock (`BEGIN IMMEDIATE`) from its first statement to its commit.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import Migrate
from sqlalchemy import Connection

from .errors import CoordinatorError
from .extensions import db

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
BASELINE = "0001_baseline"
# pg_advisory_lock key held while one process upgrades (any fixed 64-bit number).
UPGRADE_LOCK_KEY = int.from_bytes(b"dubfleet", "big")


class MigrationError(CoordinatorError):
    """The database could not be brought to this version's schema."""


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade did: the revision before (None: none) and after, columns added on the way."""

    before: str | None
    after: str | None
    legacy_columns: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the database was altered."""
        return self.before != self.after or bool(self.legacy_columns)


def init_migrations(app: Flask) -> None:
    """Register Flask-Migrate on `app` (`flask --app coordinator db ...` uses it too)."""
    Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True,
            include_name=include_name)


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """What autogenerate compares: not the search index's tables (raw SQL, no model; see
    coordinator.search and revision 0003), which it would otherwise want to drop."""
    return not (type_ == "table" and (name or "").startswith("search_"))


def alembic_config(app: Flask) -> Config:
    """The Alembic configuration of `app`'s migrations."""
    return app.extensions["migrate"].migrate.get_config()


def head_revision(app: Flask) -> str | None:
    """The newest revision this version of the code knows."""
    return ScriptDirectory.from_config(alembic_config(app)).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is stamped at (None: not under migrations yet)."""
    return MigrationContext.configure(conn).get_current_revision()


def is_current(app: Flask) -> bool:
    """True when the app's database is at the head revision."""
    with db.engine.connect() as conn:
        return current_revision(conn) == head_revision(app)


def differences(app: Flask) -> list[Any]:
    """What autogenerate would put in a new revision: the models against the migrated database."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                           "include_name": include_name})
        return compare_metadata(context, db.metadata)


def upgrade(app: Flask) -> UpgradeResult:
    """Bring the app's database to the head revision under the upgrade lock (safe concurrently)."""
    config = alembic_config(app)
    with db.engine.connect() as conn, sqlite_foreign_keys_off(conn), _upgrade_lock(conn):
        config.attributes["connection"] = conn
        try:
            result = _upgrade(conn, config)
            _check_foreign_keys(conn)
            conn.commit()
        except MigrationError:
            conn.rollback()
            raise
        except Exception as exc:
            conn.rollback()
            raise MigrationError(f"database upgrade failed: {exc}") from exc
    if result.changed:
        logger.info("database upgraded from %s to %s", result.before or "nothing", result.after)
    return result


def _upgrade(conn: Connection, config: Config) -> UpgradeResult:
    """The upgrade's steps, in the caller's transaction."""
    before = current_revision(conn)
    legacy: list[str] = []
    if before is None and _has_release_tables(conn, config):
        legacy = _adopt_pre_migration_database(conn, config)
    if current_revision(conn) != ScriptDirectory.from_config(config).get_current_head():
        command.upgrade(config, "head")
    return UpgradeResult(before, current_revision(conn), tuple(legacy))


def _has_release_tables(conn: Connection, config: Config) -> bool:
    """True when the database has tables of a release from before migrations."""
    baseline = _baseline_metadata(config)
    return bool(set(sa.inspect(conn).get_table_names()) & set(baseline.tables))


def _baseline_metadata(config: Config) -> sa.MetaData:
    """The baseline revision's tables, as its migration script defines them."""
    return ScriptDirectory.from_config(config).get_revision(BASELINE).module.metadata()


def _adopt_pre_migration_database(conn: Connection, config: Config) -> list[str]:
    """Bring a database made by `create_all` up to the baseline revision and stamp it there."""
    baseline = _baseline_metadata(config)
    baseline.create_all(conn, checkfirst=True)  # tables added by later pre-migration releases
    added = add_missing_columns(conn, baseline)
    command.stamp(config, BASELINE)
    logger.info("database from before migrations: stamped at %s (added columns: %s)", BASELINE,
                ", ".join(added) or "none")
    return added


def missing_columns(conn: Connection, metadata: sa.MetaData) -> list[sa.Column]:
    """Columns of `metadata`'s tables that the existing tables do not have yet."""
    inspector = sa.inspect(conn)
    existing_tables = set(inspector.get_table_names())
    missing: list[sa.Column] = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(column for column in table.columns if column.name not in present)
    return missing


def add_missing_columns(conn: Connection, metadata: sa.MetaData) -> list[str]:
    """Add every missing (nullable) column; returns "table.column" for each one added.

    Every column added between the first release and the baseline revision is nullable, so
    each is one `ALTER TABLE ... ADD COLUMN` on SQLite and PostgreSQL alike.
    """
    quote = conn.dialect.identifier_preparer.quote
    added: list[str] = []
    for column in missing_columns(conn, metadata):
        name = f"{column.table.name}.{column.name}"
        if not column.nullable:
            raise MigrationError(f"cannot add the required column {name} to an existing database")
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(column.table.name)} ADD COLUMN "
                             f"{quote(column.name)} {kind}")
        added.append(name)
    return added


@contextlib.contextmanager
def _upgrade_lock(conn: Connection) -> Iterator[None]:
    """One upgrader at a time: a PostgreSQL advisory lock (SQLite's write lock needs nothing)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
        conn.commit()


@contextlib.contextmanager
def sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """Turn SQLite's foreign keys off around a migration (a batch rebuild drops and renames tables).

    The pragma is a no-op inside a transaction, so it goes to the driver before the first statement.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: Connection) -> None:
    """On SQLite, refuse to commit a migration that left rows pointing at nothing."""
    if conn.dialect.name == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise MigrationError(f"the migration broke {len(broken)} foreign key(s): {broken[:5]}")
