"""Alembic environment: migrate the app's database (run inside a Flask app context).

`coordinator.migrate` hands over a connection that already holds the upgrade lock (and its open
transaction) in `config.attributes["connection"]`; `flask --app coordinator db ...` (Flask-Migrate)
hands over none, and this opens one on the app's engine.
"""
from __future__ import annotations

import logging

from alembic import context
from flask import current_app

from coordinator.migrate import sqlite_foreign_keys_off

logger = logging.getLogger("coordinator.migrations")
config = context.config


def _skip_empty_revision(migration_context, revision, directives) -> None:
    """`db migrate` with no model change writes no empty revision file."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logger.info("no change in the models: no revision written")


def _run(connection) -> None:
    """Run the migrations on `connection` (batch mode on SQLite, column types compared)."""
    extension = current_app.extensions["migrate"]
    options = dict(extension.configure_args)
    options.setdefault("process_revision_directives", _skip_empty_revision)
    # SQLite runs DDL in transactions too (the engine issues a real BEGIN IMMEDIATE): a failed
    # revision leaves nothing half done on either database.
    options.setdefault("transactional_ddl", True)
    context.configure(connection=connection, target_metadata=extension.db.metadata, **options)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate on the handed-over connection, or on a fresh one from the app's engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with current_app.extensions["migrate"].db.engine.connect() as connection, \
            sqlite_foreign_keys_off(connection):
        _run(connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: revision 0002 inspects the "
                     "database; run `coordinator db upgrade` against it instead")
run_online()
