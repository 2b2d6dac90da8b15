"""Schema migrations: a database made by the previous release keeps its jobs, keys and artifacts.

The old database is built from the DDL that release's `create_all` emitted
(fixtures/release_d9681e3.*.sql), filled with rows, then upgraded through `coordinator db upgrade`
and through a real `coordinator serve` start, on SQLite and on the local PostgreSQL.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from coordinator import create_app, migrate
from coordinator.cli import main
from coordinator.extensions import db
from tests.conftest import POSTGRES_TEST_URL, _postgres, coordinator_test_config
from tests.integration.procs import Api, Coordinator

FIXTURES = Path(__file__).with_name("fixtures")
ROOT = Path(__file__).resolve().parents[2]
OLD_KEY = "dfc_old_release_client_key_0123456789"
REVOKED_KEY = "dfc_old_release_revoked_key_012345678"
JOB_DONE, JOB_FAILED = "a" * 32, "b" * 32
ARTIFACT = b"result bytes written by the previous release"
# The newest revision in coordinator/migrations/versions (read from the scripts, not the code).
HEAD = ScriptDirectory(str(migrate.MIGRATIONS_DIR)).get_current_head()


class OldDatabase:
    """A database with the previous release's schema and rows, on SQLite or PostgreSQL."""

    def __init__(self, data_dir: Path, url: str, dialect: str):
        self.data_dir, self.url, self.dialect = data_dir, url, dialect

    def env(self) -> dict[str, str]:
        """Environment for CLI runs and servers on this database (nothing from the caller's)."""
        url = "" if self.dialect == "sqlite" else self.url
        return {"DATABASE_URL": url, "STORAGE_URL": "", "DUBFLEET_DATA_DIR": str(self.data_dir),
                "AUTO_MIGRATE": ""}

    def engine(self) -> sa.Engine:
        """A plain engine on the database (no coordinator hooks)."""
        return sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def build(self, drop_columns: tuple[str, ...] = (), drop_tables: tuple[str, ...] = ()) -> None:
        """Create the old schema (optionally made older still) and insert the old rows."""
        ddl = (FIXTURES / f"release_d9681e3.{self.dialect}.sql").read_text()
        statements = [s for s in ddl.split(";\n") if s.strip().strip("-").strip() and "CREATE" in s]
        engine = self.engine()
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement[statement.index("CREATE"):])
            _insert_old_rows(conn, self.data_dir)
            for table_column in drop_columns:
                table, column = table_column.split(".")
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
            for table in drop_tables:
                conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()

    def scalar(self, sql: str):
        """One value from the database."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql(sql).scalar()
        finally:
            engine.dispose()

    def columns(self, table: str) -> set[str]:
        """The column names of `table`."""
        engine = self.engine()
        try:
            return {c["name"] for c in sa.inspect(engine).get_columns(table)}
        finally:
            engine.dispose()


def _insert_old_rows(conn: sa.Connection, data_dir: Path) -> None:
    """Two keys (one revoked), a completed job with its artifact file, a failed job, a worker."""
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    for name, key, revoked in (("old-client", OLD_KEY, None), ("gone", REVOKED_KEY, 5.0)):
        conn.execute(sa.text("INSERT INTO api_keys (name, kind, key_hash, prefix, created_at, "
                             "revoked_at) VALUES (:n, 'client', :h, :p, 1.0, :r)"),
                     {"n": name, "h": sha(key.encode()), "p": key[:8], "r": revoked})
    owner = conn.exec_driver_sql("SELECT id FROM api_keys WHERE name = 'old-client'").scalar()
    job_columns = {"owner": owner, "options": '{"note": "kept"}'}
    for job_id, status, output in ((JOB_DONE, "completed", "output.bin"), (JOB_FAILED, "failed", None)):
        conn.execute(sa.text(
            "INSERT INTO jobs (id, owner_key_id, kind, status, priority, source_language, "
            "target_language, options, input_name, input_size, max_attempts, attempts, run_number, "
            "available_at, cancel_requested, progress, main_artifact, error, created_at, "
            "updated_at, finished_at) VALUES (:id, :owner, 'echo', :status, 0, 'auto', 'en', "
            ":options, 'in.bin', 3, 3, 1, 1, 10.0, :false, 1.0, :main, :error, 10.0, 20.0, 20.0)"),
            {**job_columns, "id": job_id, "status": status, "main": output, "false": False,
             "error": None if output else "boom"})
    relpath = f"artifacts/{JOB_DONE}/a1/output.bin"
    (data_dir / relpath).parent.mkdir(parents=True, exist_ok=True)
    (data_dir / relpath).write_bytes(ARTIFACT)
    conn.execute(sa.text("INSERT INTO artifacts (job_id, attempt, name, size, sha256, content_type, "
                         "path, created_at) VALUES (:j, 1, 'output.bin', :size, :sha, "
                         "'application/octet-stream', :path, 20.0)"),
                 {"j": JOB_DONE, "size": len(ARTIFACT), "sha": sha(ARTIFACT), "path": relpath})
    conn.execute(sa.text("INSERT INTO workers (session_id, worker_id, hostname, device, "
                         "capabilities, first_seen, last_seen) VALUES ('s1', 'w1', 'box', 'cpu', "
                         "'{}', 1.0, 2.0)"))
    conn.execute(sa.text("INSERT INTO audit_events (at, key_name, action, detail, remote) "
                         "VALUES (1.0, 'cli', 'key_created', '#1', '')"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_db(request, tmp_path) -> Iterator[OldDatabase]:
    """An empty database of each kind (a fresh PostgreSQL database, dropped afterwards)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if request.param == "sqlite":
        yield OldDatabase(data_dir, f"sqlite:///{data_dir / 'coordinator.db'}", "sqlite")
        return
    name = f"dubfleet_migrations_{uuid.uuid4().hex[:12]}"
    _postgres(f"CREATE DATABASE {name}")
    try:
        yield OldDatabase(data_dir, POSTGRES_TEST_URL.rsplit("/", 1)[0] + f"/{name}", "postgresql")
    finally:
        _postgres(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _cli(old: OldDatabase, *args: str):
    """`coordinator db ...` in-process, on `old`'s database."""
    return CliRunner().invoke(main, ["db", *args, "--data-dir", str(old.data_dir)], env=old.env(),
                              catch_exceptions=False)


def _assert_upgraded(old: OldDatabase) -> None:
    """The old rows are all there, with the new column and table beside them."""
    assert old.scalar("SELECT version_num FROM alembic_version") == HEAD
    assert old.scalar("SELECT count(*) FROM jobs") == 2
    assert old.scalar("SELECT count(*) FROM api_keys") == 2
    assert old.scalar("SELECT count(*) FROM artifacts") == 1
    assert old.scalar("SELECT count(*) FROM workers") == 1
    assert old.scalar(f"SELECT options FROM jobs WHERE id = '{JOB_DONE}'") in (
        '{"note": "kept"}', {"note": "kept"})
    assert old.scalar("SELECT count(*) FROM jobs WHERE parent_job_id IS NULL") == 2
    assert old.scalar("SELECT count(*) FROM sign_in_tokens") == 0


def test_cli_upgrade_keeps_jobs_keys_and_artifacts(old_db):
    old_db.build()
    current = _cli(old_db, "current")
    assert current.exit_code == 1 and "not under migrations" in current.output
    result = _cli(old_db, "upgrade")
    assert result.exit_code == 0, result.output
    assert f"upgraded from nothing to {HEAD}" in result.output
    _assert_upgraded(old_db)
    again = _cli(old_db, "upgrade")
    assert again.exit_code == 0 and f"already at {HEAD}" in again.output
    current = _cli(old_db, "current")
    assert current.exit_code == 0 and current.output.strip() == f"{HEAD} (head)"
    check = _cli(old_db, "check")
    assert check.exit_code == 0, check.output


def test_server_start_upgrades_and_serves_the_old_rows(old_db):
    old_db.build()
    coord = Coordinator(old_db.data_dir, env=old_db.env()).start()
    try:
        _assert_upgraded(old_db)
        api = Api(coord.url, OLD_KEY)
        view = api.get(f"/jobs/{JOB_DONE}").json()
        assert view["status"] == "completed" and view["options"] == {"note": "kept"}
        assert view["parent_job_id"] is None
        assert [a["name"] for a in view["artifacts"]] == ["output.bin"]
        assert api.get(f"/jobs/{JOB_DONE}/download").content == ARTIFACT
        assert api.get(f"/jobs/{JOB_FAILED}").json()["error"] == "boom"
        assert Api(coord.url, REVOKED_KEY).get(f"/jobs/{JOB_DONE}").status_code == 401
        new_job = api.submit_bytes(b"new", kind="echo")  # inserts work after the upgrade
        assert api.get(f"/jobs/{new_job['job_id']}").status_code == 200
        assert coord.create_key("client", "after-upgrade").startswith("dfc_")
    finally:
        coord.stop()


@contextlib.contextmanager
def _upgrade_lock_held(old: OldDatabase, waiters: int) -> Iterator[None]:
    """On PostgreSQL, hold the upgrade lock until `waiters` other sessions queue for it."""
    if old.dialect != "postgresql":
        yield
        return
    engine = old.engine()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrate.UPGRADE_LOCK_KEY})
        yield
        waiting = sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT "
                          "granted AND database = (SELECT oid FROM pg_database WHERE datname = "
                          "current_database())")
        deadline = time.monotonic() + 90
        while conn.execute(waiting).scalar() < waiters and time.monotonic() < deadline:
            time.sleep(0.2)
        assert conn.execute(waiting).scalar() == waiters  # all three queued behind the lock
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.UPGRADE_LOCK_KEY})
    engine.dispose()


def test_concurrent_starts_upgrade_once(old_db):
    old_db.build()
    env = {**os.environ, **old_db.env(), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "coordinator", "db", "upgrade", "--data-dir", str(old_db.data_dir)]
    with _upgrade_lock_held(old_db, waiters=3):
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(3)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert sum("upgraded from nothing" in out for out in outputs) == 1, outputs
    assert sum(f"already at {HEAD}" in out for out in outputs) == 2, outputs
    _assert_upgraded(old_db)


def test_release_older_than_the_baseline_gains_its_columns(tmp_path):
    old = OldDatabase(tmp_path, f"sqlite:///{tmp_path / 'coordinator.db'}", "sqlite")
    old.build(drop_columns=("jobs.subtitles_size", "jobs.subtitles_sha256", "jobs.confirmed_at"),
              drop_tables=("audit_events",))
    result = _cli(old, "upgrade")
    assert result.exit_code == 0, result.output
    assert "jobs.subtitles_size, jobs.subtitles_sha256, jobs.confirmed_at" in result.output
    _assert_upgraded(old)
    assert {"confirmed_at", "subtitles_size", "parent_job_id"} <= old.columns("jobs")
    assert old.scalar("SELECT count(*) FROM audit_events") == 0
    assert _cli(old, "check").exit_code == 0


def test_web_release_database_made_by_create_all_is_adopted(tmp_path):
    """The release before this one made sign_in_tokens and parent_job_id without Alembic."""
    old = OldDatabase(tmp_path, f"sqlite:///{tmp_path / 'coordinator.db'}", "sqlite")
    engine = old.engine()
    db.metadata.create_all(engine)
    with engine.begin() as conn:
        _insert_old_rows(conn, tmp_path)
    engine.dispose()
    app = create_app(coordinator_test_config(tmp_path))
    _assert_upgraded(old)
    with app.app_context():
        assert migrate.differences(app) == []
        db.engine.dispose()


def test_fresh_database_is_made_by_the_migrations_and_matches_the_models(tmp_path):
    app = create_app(coordinator_test_config(tmp_path))
    with app.app_context():
        with db.engine.connect() as conn:
            assert migrate.current_revision(conn) == HEAD == migrate.head_revision(app)
        assert migrate.differences(app) == []  # a model change without a revision fails here
        db.engine.dispose()


def test_model_drift_is_detected(tmp_path):
    app = create_app(coordinator_test_config(tmp_path))
    with app.app_context():
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN parent_job_id")
        found = migrate.differences(app)
        db.engine.dispose()
    assert [d[0] for d in found] == ["add_column"] and found[0][3].name == "parent_job_id"
    old = OldDatabase(tmp_path, "", "sqlite")
    check = _cli(old, "check")
    assert check.exit_code == 1 and "parent_job_id" in check.output


def test_auto_migrate_off_leaves_the_database_and_serve_refuses(tmp_path):
    old = OldDatabase(tmp_path, f"sqlite:///{tmp_path / 'coordinator.db'}", "sqlite")
    old.build()
    app = create_app(coordinator_test_config(tmp_path, AUTO_MIGRATE=False))
    with app.app_context():
        assert not migrate.is_current(app)
        db.engine.dispose()
    assert "alembic_version" not in sa.inspect(old.engine()).get_table_names()
    refused = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path)],
                                 env={**old.env(), "AUTO_MIGRATE": "0"}, catch_exceptions=False)
    assert refused.exit_code == 1 and "coordinator db upgrade" in refused.output


def test_failed_upgrade_changes_nothing(tmp_path):
    """A database missing a required column cannot be adopted: the upgrade rolls back whole."""
    old = OldDatabase(tmp_path, f"sqlite:///{tmp_path / 'coordinator.db'}", "sqlite")
    old.build(drop_columns=("jobs.confirmed_at", "workers.device"), drop_tables=("audit_events",))
    result = CliRunner().invoke(main, ["db", "upgrade", "--data-dir", str(tmp_path)],
                                env=old.env())
    assert result.exit_code == 1 and "required column workers.device" in result.output
    tables = set(sa.inspect(old.engine()).get_table_names())
    assert "alembic_version" not in tables and "audit_events" not in tables
    assert "confirmed_at" not in old.columns("jobs")
    assert old.scalar("SELECT count(*) FROM jobs") == 2
