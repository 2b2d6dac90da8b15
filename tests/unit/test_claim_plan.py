"""The claim reads the jobs index in its own order (priority DESC, created_at, id): the database
takes the first entry instead of sorting every queued job of the top priority, which it would do
inside the claim's write transaction on each claim (revision 0005)."""
from __future__ import annotations

import sqlalchemy as sa

from coordinator import claims, jobs, lean, statements
from coordinator.models import Job

from tests.unit.test_coordinator_queue import ECHO_WORKER, POLICY, T0, add, qapp, session  # noqa: F401


def _plan(session, stmt: sa.Executable, params: dict) -> str:
    """The database's plan for `stmt` with `params` (nothing is executed)."""
    conn = session.connection()
    sql = str(stmt.params(**params).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: the planner would scan it
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))


def test_the_claim_uses_the_index_in_its_order_and_sorts_nothing(session):
    for n in range(20):
        add(session, T0 + n, priority=n % 3)
    params = {"p_now": T0 + 60, **claims._capability_params(ECHO_WORKER)}
    postgres = not lean.of(session).sqlite
    plan = _plan(session, statements._pick(lock=postgres), params)  # the claim's subquery
    session.rollback()
    assert "ix_jobs_pick" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def test_the_index_serves_the_claim_order(session):
    """The order the index encodes is the order claims take jobs in: priority first, then age."""
    made = {n: add(session, T0 + n, priority=n % 3) for n in range(9)}
    taken = []
    while (claimed := jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 60)) is not None:
        taken.append(claimed.job["id"])
    expected = [made[n] for n in sorted(made, key=lambda n: (-(n % 3), n))]
    assert taken == expected
    assert {index.name for index in Job.__table__.indexes} >= {"ix_jobs_pick"}
