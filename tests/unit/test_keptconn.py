"""coordinator.keptconn: on SQLite each thread keeps one connection for its single statements
(reads, autocommit writes); transactions keep pooled connections. Real SQLite files."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from coordinator import lean, statements
from coordinator.extensions import db
from coordinator.models import Job

from tests.unit.test_coordinator_queue import add, status

_T = Job.__table__.c
_SET_MESSAGE = sa.update(Job.__table__).where(_T.id == sa.bindparam("p_id")).values(message=sa.bindparam("p_msg"))
_COUNT = sa.select(sa.func.count()).select_from(Job.__table__)


@pytest.fixture
def session(app_factory):
    with app_factory().app_context():
        yield db.session
        db.session.remove()


def _read(store: lean.Lean) -> int:
    with store.reading() as cursor:
        return cursor.scalar(_COUNT, {})


def _in_thread(fn) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not errors, errors


def test_a_thread_reads_and_writes_on_one_kept_connection_with_the_pools_pragmas(session):
    store = lean.of(session)
    job_id = add(session)
    used = set()
    for n in range(20):
        with store.reading() as cursor:
            used.add(id(cursor._cursor.connection))
            assert cursor.scalar(_COUNT, {}) == 1
        store.write_one(session, _SET_MESSAGE, {"p_id": job_id, "p_msg": f"beat {n}"})
    assert len(used) == 1 and store.kept.count() == 1
    assert status(session, job_id).message == "beat 19"  # committed: another connection sees it
    kept = store.kept.connection()
    pragmas = {name: kept.execute(f"PRAGMA {name}").fetchone()[0]
               for name in ("busy_timeout", "foreign_keys", "journal_mode")}
    assert pragmas == {"busy_timeout": 30000, "foreign_keys": 1, "journal_mode": "wal"}


def test_each_thread_has_its_own_and_an_ended_threads_is_closed(session):
    store = lean.of(session)
    add(session)
    _read(store)
    seen: list[object] = []

    def read_and_note() -> None:
        assert _read(store) == 1
        seen.append(store.kept.connection())
    _in_thread(read_and_note)
    assert store.kept.count() == 2 and seen[0] is not store.kept.connection()
    _in_thread(read_and_note)  # opening its own closes the ended thread's
    assert store.kept.count() == 2
    with pytest.raises(Exception, match="closed"):
        seen[0].execute("SELECT 1")


def test_a_transaction_uses_a_pooled_connection_and_reads_inside_it_see_committed_rows(session):
    store = lean.of(session)
    job_id = add(session)
    with store.transaction(session) as cursor:
        cursor.execute(_SET_MESSAGE, {"p_id": job_id, "p_msg": "in the transaction"})
        assert cursor._cursor.connection is not store.kept.connection()
        with store.reading() as reader:  # its own snapshot, not the open transaction's
            assert reader.first(statements.job_with_place(), {"p_id": job_id}).message is None
    assert status(session, job_id).message == "in the transaction"


def test_dispose_closes_them_and_a_closed_one_is_replaced(session):
    store = lean.of(session)
    add(session)
    first = store.kept.connection()
    db.engine.dispose()
    assert store.kept.count() == 0
    assert _read(store) == 1 and store.kept.connection() is not first
    store.kept.connection().close()  # closed underneath: that read fails, the next one works
    with pytest.raises(sa.exc.DBAPIError):
        _read(store)
    assert _read(store) == 1 and store.kept.count() == 1
    with pytest.raises(sa.exc.DBAPIError):  # closed inside a block: the statement's error is SQLAlchemy's
        with store.reading() as cursor:
            store.kept.connection().close()
            cursor.scalar(_COUNT, {})
    assert _read(store) == 1 and store.kept.count() == 1


def test_a_failed_statement_leaves_the_connection_usable_and_outside_any_transaction(session):
    store = lean.of(session)
    job_id = add(session)
    kept = store.kept.connection()
    with pytest.raises(sa.exc.IntegrityError):
        store.write_one(session, sa.update(Job.__table__).where(_T.id == job_id).values(kind=None), {})
    assert store.kept.connection() is kept and kept.in_transaction is False
    store.write_one(session, _SET_MESSAGE, {"p_id": job_id, "p_msg": "after"})
    assert status(session, job_id).message == "after"
