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


@pytest.fixture
def orm_begins(session):
    """A list that counts the transactions SQLAlchemy Connections (the ORM session's) begin."""
    begins: list[int] = []

    def begun(conn) -> None:
        begins.append(1)
    sa.event.listen(session.get_bind(), "begin", begun)
    yield begins
    sa.event.remove(session.get_bind(), "begin", begun)


def test_a_common_upload_runs_below_the_orm_session(session, orm_begins):
    """A running job's upload, completion and claim-on-complete run in one transaction on a
    pooled connection: the ORM session never begins one (its begin and commit cost more than
    the statements); the artifact, the completion and the next claim all commit."""
    from shared.protocol import ArtifactInfo
    first, second = add(session), add(session, T0 + 1)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 2)
    session.commit()
    orm_begins.clear()
    info = ArtifactInfo(name="result", size=3, sha256="1" * 64, content_type="text/plain", attempt=1)
    upload = jobs.add_artifact(session, first, claimed.lease_token, info, lambda: f"artifacts/{first}/a1/r~x",
                               final=True, now=T0 + 3, then=jobs.NextClaim(ECHO_WORKER, POLICY))
    assert orm_begins == [] and not session().in_transaction()
    assert upload.status == "completed" and upload.next.job["id"] == second
    assert status(session, first).main_artifact == "result" and status(session, second).status == "running"


def test_an_upload_the_lean_path_leaves_takes_the_session_and_changes_nothing_first(session, orm_begins):
    """A refused lease and a cancel requested go the ORM session's way (409 saying why,
    `cancelled` instead of `completed`), and nothing the lean transaction began is kept."""
    from coordinator.errors import JobWasCancelled, LeaseLost
    from shared.protocol import ArtifactInfo
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    info = ArtifactInfo(name="result", size=3, sha256="1" * 64, content_type="text/plain", attempt=1)
    published: list[str] = []

    def publish() -> str:
        published.append("x")
        return f"artifacts/{job_id}/a1/r~x"
    with pytest.raises(LeaseLost):
        jobs.add_artifact(session, job_id, "stale", info, publish, final=True, now=T0 + 1)
    jobs.cancel(session, job_id, now=T0 + 2)
    orm_begins.clear()
    with pytest.raises(JobWasCancelled):
        jobs.add_artifact(session, job_id, claimed.lease_token, info, publish, final=True, now=T0 + 3)
    assert orm_begins and published == [] and status(session, job_id).status == "cancelled"


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
    translated = engine_lean.error("SELECT 1", None, driver_error("database is locked"))
    assert isinstance(translated, sa.exc.DBAPIError) and translated.orig.args == ("database is locked",)
    with pytest.raises(sa.exc.DBAPIError):  # SQLite: OperationalError, PostgreSQL: ProgrammingError
        with engine_lean.reading() as cursor:
            cursor.execute(sa.text("SELECT * FROM no_such_table"), {})
