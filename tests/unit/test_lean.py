"""coordinator.lean: prebuilt statements on a pooled DBAPI connection, on SQLite and PostgreSQL,
give what the ORM session gives (processed values, IN lists, commits and rollbacks)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from coordinator import jobs, lean, queries, statements
from coordinator.models import Job
from shared.protocol import Heartbeat

from tests.unit.test_coordinator_queue import ECHO_WORKER, POLICY, T0, add, qapp, session, status  # noqa: F401

_T = Job.__table__.c
_BY_STATUS = sa.select(_T.id, _T.options, _T.cancel_requested).where(
    _T.status.in_(sa.bindparam("p_statuses", expanding=True))).order_by(_T.created_at)
_SET_MESSAGE = sa.update(Job.__table__).where(_T.id == sa.bindparam("p_id")).values(message=sa.bindparam("p_msg"))
_SET_KIND = sa.update(Job.__table__).where(_T.id == sa.bindparam("p_id")).values(kind=sa.bindparam("p_kind"))


def test_rows_have_processed_values_and_attribute_access(session):
    first, second = add(session, options={"voice": "a"}), add(session, T0 + 1)
    jobs.cancel(session, second, now=T0 + 2)
    with lean.of(session).reading() as cursor:
        rows = cursor.all(_BY_STATUS, {"p_statuses": ["queued", "cancelled"]})
        assert cursor.first(_BY_STATUS, {"p_statuses": ["running"]}) is None
        assert cursor.scalar(_BY_STATUS, {"p_statuses": ["queued"]}) == first
        assert cursor.all(_BY_STATUS, {"p_statuses": []}) == []  # each IN-list length has its own SQL
        assert [r.id for r in cursor.all(_BY_STATUS, {"p_statuses": ["cancelled", "queued"]})] == [first, second]
    assert [row.id for row in rows] == [first, second]
    assert rows[0].options == {"voice": "a"} and rows[0]["options"] == {"voice": "a"}  # JSON, parsed
    assert rows[0].cancel_requested is False  # a Boolean, not SQLite's 0
    with pytest.raises(AttributeError):
        rows[0].missing  # noqa: B018


def test_a_failing_write_changes_nothing_and_a_good_one_commits(session):
    job_id = add(session)
    with pytest.raises(sa.exc.IntegrityError):  # jobs.kind is NOT NULL; SQLAlchemy's error, like the ORM's
        lean.of(session).write_one(session, _SET_KIND, {"p_id": job_id, "p_kind": None})
    assert status(session, job_id).kind == "echo"
    returned = lean.of(session).write_one(session, _SET_MESSAGE, {"p_id": job_id, "p_msg": "kept"})
    assert returned == [] and status(session, job_id).message == "kept"


def test_a_write_commits_the_sessions_open_transaction_first(session):
    """On SQLite an open ORM transaction holds the write lock: the write would wait for it."""
    job_id = add(session)
    session.execute(sa.update(Job).where(Job.id == job_id).values(message="from the session"))
    lean.of(session).write_one(session, _SET_MESSAGE, {"p_id": job_id, "p_msg": "from the write"})
    assert status(session, job_id).message == "from the write"


def test_joined_statements_commit_and_roll_back_with_the_session(session):
    job_id = add(session)
    lean.joined(session).execute(_SET_MESSAGE, {"p_id": job_id, "p_msg": "rolled back"})
    session.rollback()
    assert status(session, job_id).message is None
    lean.joined(session).execute(_SET_MESSAGE, {"p_id": job_id, "p_msg": "committed"})
    session.commit()
    assert status(session, job_id).message == "committed"


def test_heartbeat_fencing_is_kept(session):
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1)
    reply = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(progress=40.0), POLICY, now=T0 + 2)
    assert reply.cancel_requested is False and status(session, job_id).progress == 40.0
    with pytest.raises(jobs.LeaseLost):
        jobs.heartbeat(session, job_id, "not-the-token", Heartbeat(progress=90.0), POLICY, now=T0 + 3)
    assert status(session, job_id).progress == 40.0


def test_job_row_carries_its_queue_position(session):
    low, high, later = add(session), add(session, T0 + 1, priority=5), add(session, T0 + 2)
    places = {job_id: queries.job_row(session, job_id).get("queued_ahead") for job_id in (low, high, later)}
    assert places == {high: 0, low: 1, later: 2}
    assert all(queries.queue_position(session, queries.job_row(session, j)) == places[j] + 1 for j in places)
    jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 3)  # takes `high`
    assert queries.job_row(session, high).get("queued_ahead") is None
    assert queries.job_row(session, later).queued_ahead == 1
    assert queries.job_row(session, "0" * 32) is None


def test_statements_are_compiled_once_per_engine(session):
    engine_lean = lean.of(session)
    assert lean.of(session) is engine_lean
    assert engine_lean.prepare(statements.heartbeat()) is engine_lean.prepare(statements.heartbeat())
    literal = sa.select(_T.id).where(_T.kind == sa.bindparam("p_kind", literal_execute=True))
    with pytest.raises(ValueError, match="literal_execute"):  # its SQL would change with each value
        engine_lean.prepare(literal)


def test_driver_errors_are_raised_as_sqlalchemys(session):
    """So the JSON handlers map them as they map the ORM's (a busy database is 503, not 500),
    and callers that catch SQLAlchemyError (claim-on-complete) still catch them."""
    engine_lean = lean.of(session)
    driver_error = engine_lean.dbapi_error
    with pytest.raises(sa.exc.DBAPIError) as raised:
        with engine_lean.translated("SELECT 1", None):
            raise driver_error("database is locked")
    assert isinstance(raised.value, sa.exc.SQLAlchemyError) and raised.value.orig.args == ("database is locked",)
    with pytest.raises(sa.exc.DBAPIError):  # SQLite: OperationalError, PostgreSQL: ProgrammingError
        with engine_lean.reading() as cursor:
            cursor.execute(sa.text("SELECT * FROM no_such_table"), {})
