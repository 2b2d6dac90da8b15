"""Shared fixtures: a coordinator app on a temporary data directory, its client, and API keys."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))


POSTGRES_TEST_URL = os.environ.get("DUBFLEET_TEST_POSTGRES_URL",
                                   "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def coordinator_test_config(data_dir: Path, **overrides) -> dict:
    """Settings for a test coordinator: isolated from the environment, no callbacks."""
    config = {
        "TESTING": True,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": None,  # a SQLite file inside DATA_DIR, whatever the environment says
        "STORAGE_URL": None,  # files inside DATA_DIR, whatever the environment says
        "WORKER_API_KEY": None,
        "ADMIN_API_KEY": None,
        "CALLBACKS_ENABLED": False,
        "MAX_UPLOAD_MB": 2048,
        "LEASE_SECONDS": 120.0,
        "MAX_ATTEMPTS": 3,
        "RETRY_BACKOFF_SECONDS": 10.0,
    }
    config.update(overrides)
    return config


@pytest.fixture
def app_factory(tmp_path: Path):
    """Factory: `app_factory(MAX_UPLOAD_MB=1)` builds a coordinator app on a temp data dir."""
    from coordinator import create_app
    from coordinator.extensions import db

    built = []

    def make(**overrides):
        data_dir = tmp_path / f"data{len(built) or ''}"
        app = create_app(coordinator_test_config(data_dir, **overrides))
        built.append(app)
        return app

    yield make
    for app in built:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(app_factory):
    """A coordinator app on a real SQLite file in a temporary directory."""
    return app_factory()


@pytest.fixture
def client(app):
    """A Flask test client for `app`."""
    return app.test_client()


@pytest.fixture
def make_key(app) -> Callable[..., str]:
    """Factory: `make_key("client")` creates an API key of that kind and returns the plain key."""
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind

    def make(kind: str = "client", name: str | None = None) -> str:
        with app.app_context():
            _, plain = create_key(db.session, KeyKind(kind), name or f"test-{kind}")
            db.session.remove()
        return plain

    return make


def _postgres(sql: str) -> None:
    """Run one statement on the test PostgreSQL server; skip the test when it is unreachable."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(POSTGRES_TEST_URL.replace("+psycopg", ""), connect_timeout=3,
                             autocommit=True) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_TEST_URL}: {exc}")


@pytest.fixture
def pg_app_factory(app_factory):
    """Like `app_factory`, on PostgreSQL in a private schema (skips when the server is unreachable)."""
    from coordinator.extensions import db

    made: list[tuple[str, object]] = []

    def make(**overrides):
        schema = f"dubfleet_test_{uuid.uuid4().hex[:12]}"
        _postgres(f"CREATE SCHEMA {schema}")
        options = {"connect_args": {"options": f"-c search_path={schema}"}}
        app = app_factory(DATABASE_URL=POSTGRES_TEST_URL, SQLALCHEMY_ENGINE_OPTIONS=options, **overrides)
        made.append((schema, app))
        return app

    yield make
    for schema, app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        _postgres(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def keyed_backend(request, app_factory, pg_app_factory):
    """(app, client key, worker key) on each database."""
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    app = app_factory() if request.param == "sqlite" else pg_app_factory()
    with app.app_context():
        keys = [create_key(db.session, KeyKind(kind), f"t-{kind}")[1] for kind in ("client", "worker")]
        db.session.remove()
    return app, *keys
