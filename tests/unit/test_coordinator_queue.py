"""Queue functions with explicit time, on SQLite and (when reachable) PostgreSQL."""
from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from coordinator import jobs
from coordinator.beatcache import RecentBeats
from coordinator.errors import Conflict, LeaseLost, NotFound
from coordinator.extensions import db
from coordinator.models import Job
from coordinator.policy import QueuePolicy
from coordinator.queries import list_jobs, prune, queue_info, queue_position
from coordinator.validation import NewJob
from shared.protocol import ArtifactInfo, Heartbeat, WorkerInfo

T0 = 1_700_000_000.0
POLICY = QueuePolicy(lease_seconds=60, max_attempts=3, backoff_base=10, backoff_cap=600)
ECHO_WORKER = WorkerInfo(worker_id="w1", session_id="s1", kinds=("echo",))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def qapp(request, app_factory, pg_app_factory):
    """An app on SQLite, then on PostgreSQL in a private schema."""
    return app_factory() if request.param == "sqlite" else pg_app_factory()


@pytest.fixture
def session(qapp):
    """The app's database session inside an app context."""
    with qapp.app_context():
        yield db.session
        db.session.remove()


def add(session, now: float = T0, owner: int = 1, **fields) -> str:
    """Submit a job at `now` and return its id."""
    job, created = jobs.submit(session, NewJob(**{"kind": "echo", **fields}), owner_key_id=owner,
                               input_size=3, input_sha256="0" * 64, now=now)
    assert created
    return job.id


def status(session, job_id: str) -> Job:
    """A fresh read of a job."""
    session.expire_all()
    job = session.get(Job, job_id)
    session.rollback()
    return job


def test_claim_is_ordered_and_counts_attempts(session):
    a = add(session, T0)
    b = add(session, T0 + 1, priority=5)
    c = add(session, T0 + 2)
    got = [jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 10) for _ in range(4)]
    assert [g.job["id"] for g in got[:3]] == [b, a, c] and got[3] is None
    first = got[0]
    assert first.job["attempts"] == 1 and first.job["status"] == "running"
    assert first.lease_expires_at == T0 + 10 + POLICY.claim_lease_seconds
    assert len({g.lease_token for g in got[:3]}) == 3


def test_claim_respects_available_at(session):
    job_id = add(session, T0)
    token = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0).lease_token
    jobs.fail(session, job_id, token, "flaky", True, POLICY, now=T0 + 1, rand=1.0)
    assert status(session, job_id).available_at == T0 + 1 + 10
    assert jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 5) is None
    with pytest.raises(Conflict):
        jobs.claim_specific(session, job_id, ECHO_WORKER, POLICY, now=T0 + 5)
    again = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 12)
    assert again.job["id"] == job_id and again.job["attempts"] == 2


def test_claim_specific_conflict_and_not_found(session):
    job_id = add(session)
    jobs.claim_specific(session, job_id, ECHO_WORKER, POLICY, now=T0)
    with pytest.raises(Conflict):
        jobs.claim_specific(session, job_id, ECHO_WORKER, POLICY, now=T0)
    with pytest.raises(NotFound):
        jobs.claim_specific(session, uuid.uuid4().hex, ECHO_WORKER, POLICY, now=T0)


def test_capability_filter(session):
    dub = add(session, kind="dub", target_language="de")
    model = add(session, T0 + 1, kind="transcribe", asr_model="medium")
    plain = add(session, T0 + 2, kind="transcribe")
    worker = WorkerInfo(worker_id="w", session_id="s", kinds=("dub", "transcribe"), asr_models=("small",),
                        target_languages=("es",))
    assert jobs.peek_next(session, worker, now=T0 + 5).id == plain
    assert jobs.claim_next(session, worker, POLICY, now=T0 + 5).job["id"] == plain
    assert jobs.claim_next(session, worker, POLICY, now=T0 + 5) is None
    wider = WorkerInfo(worker_id="w", session_id="s", kinds=("dub", "transcribe"), asr_models=("medium",),
                       target_languages=("de",))
    assert {jobs.claim_next(session, wider, POLICY, now=T0 + 6).job["id"] for _ in range(2)} == {dub, model}


def test_heartbeat_fenced_and_renews(session):
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    reply = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(stage="muxing", progress=80),
                           POLICY, now=T0 + 30)
    assert reply.lease_expires_at == T0 + 90 and reply.cancel_requested is False
    with pytest.raises(LeaseLost):
        jobs.heartbeat(session, job_id, "wrong", Heartbeat(progress=99), POLICY, now=T0 + 31)
    job = status(session, job_id)
    assert (job.stage, job.progress, job.lease_expires_at) == ("muxing", 80, T0 + 90)


def test_unchanged_beat_soon_after_a_renewal_is_answered_without_a_write(session):
    """POLICY's heartbeat interval is 10 s: within 5 s of the last renewal a beat that repeats
    it leaves the row alone (it never queues for the write lock) and replies with the stored
    lease; a beat with news, or one sent later, writes."""
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    beat = Heartbeat(stage="muxing", progress=80)
    jobs.heartbeat(session, job_id, claimed.lease_token, beat, POLICY, now=T0 + 1)
    for now in (T0 + 2, T0 + 5.9):
        reply = jobs.heartbeat(session, job_id, claimed.lease_token, beat, POLICY, now=now)
        assert (reply.lease_expires_at, reply.cancel_requested) == (T0 + 61, False)
        assert (reply.heartbeat_interval, status(session, job_id).updated_at) == (10, T0 + 1)
    news = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(stage="muxing", progress=81),
                          POLICY, now=T0 + 4)
    assert news.lease_expires_at == T0 + 64 and status(session, job_id).progress == 81
    later = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(progress=81), POLICY, now=T0 + 9.1)
    assert later.lease_expires_at == T0 + 69.1 and status(session, job_id).updated_at == T0 + 9.1


def test_coalesced_beats_keep_fencing_confirmation_and_cancellation(session):
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    first = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(), POLICY, now=T0 + 0.5)
    assert first.lease_expires_at == T0 + 60.5  # the start is confirmed by a write, never skipped
    assert status(session, job_id).confirmed_at == T0 + 0.5
    with pytest.raises(LeaseLost):
        jobs.heartbeat(session, job_id, "wrong", Heartbeat(), POLICY, now=T0 + 1)
    jobs.cancel(session, job_id, now=T0 + 1)
    reply = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(), POLICY, now=T0 + 2)
    assert reply.cancel_requested is True and reply.lease_expires_at == T0 + 60.5


def test_a_repeated_beat_is_written_when_the_row_changed_meanwhile(session):
    """The per-process memory of recent beats is a hint: a row another replica changed since
    is written again."""
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    beat = Heartbeat(stage="muxing", progress=80)
    jobs.heartbeat(session, job_id, claimed.lease_token, beat, POLICY, now=T0 + 1)
    session.execute(sa.update(Job).where(Job.id == job_id).values(progress=5))
    session.commit()
    reply = jobs.heartbeat(session, job_id, claimed.lease_token, beat, POLICY, now=T0 + 2)
    assert reply.lease_expires_at == T0 + 62 and status(session, job_id).progress == 80


def test_recent_beats_remember_the_latest_jobs_only():
    recent = RecentBeats(max_jobs=2)
    beat = Heartbeat(progress=1)
    for n, job_id in enumerate(("a", "b", "c")):
        recent.wrote(job_id, "tok", beat, T0 + n)
    assert not recent.repeats("a", "tok", beat, T0 + 3, 5)  # evicted
    assert recent.repeats("c", "tok", beat, T0 + 3, 5)
    assert not recent.repeats("c", "other", beat, T0 + 3, 5)
    assert not recent.repeats("c", "tok", Heartbeat(progress=2), T0 + 3, 5)
    assert not recent.repeats("c", "tok", beat, T0 + 7, 5)


def test_start_lease_is_short_until_first_heartbeat(session):
    """A job claimed by a worker that never starts (killed while long-polling) comes back soon."""
    policy = QueuePolicy(lease_seconds=120, start_lease_seconds=20)
    ghost = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, policy, now=T0)
    assert claimed.lease_expires_at == T0 + 20
    jobs.reap(session, now=T0 + 21)
    assert status(session, ghost).status == "queued"
    claimed = jobs.claim_next(session, ECHO_WORKER, policy, now=T0 + 22)
    reply = jobs.heartbeat(session, ghost, claimed.lease_token, Heartbeat(stage="downloading"),
                           policy, now=T0 + 23)
    assert reply.lease_expires_at == T0 + 143 and reply.heartbeat_interval <= 20 / 3


def test_fail_until_max_attempts_then_failed(session):
    job_id = add(session, max_attempts=2)
    for attempt, now in ((1, T0), (2, T0 + 1000)):
        claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=now)
        assert claimed.job["attempts"] == attempt
        jobs.fail(session, job_id, claimed.lease_token, f"boom {attempt}", True, POLICY, now=now + 1)
    job = status(session, job_id)
    assert job.status == "failed" and job.error == "boom 2" and job.finished_at == T0 + 1001


def test_backoff_grows_with_jitter_and_cap():
    assert POLICY.backoff(1, rand=0.0) == 5 and POLICY.backoff(1, rand=1.0) == 10
    assert POLICY.backoff(3, rand=1.0) == 40
    assert POLICY.backoff(20, rand=1.0) == 600
    assert 5 <= POLICY.backoff(1) <= 10


def test_release_does_not_count_the_attempt(session):
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    jobs.release(session, job_id, claimed.lease_token, now=T0 + 1)
    job = status(session, job_id)
    assert (job.status, job.attempts, job.lease_token) == ("queued", 0, None)
    with pytest.raises(LeaseLost):
        jobs.release(session, job_id, claimed.lease_token, now=T0 + 2)


def test_cancel_running_then_fail_ends_cancelled(session):
    job_id = add(session)
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    jobs.cancel(session, job_id, now=T0 + 1)
    reply = jobs.heartbeat(session, job_id, claimed.lease_token, Heartbeat(), POLICY, now=T0 + 2)
    assert reply.cancel_requested
    jobs.fail(session, job_id, claimed.lease_token, "stopped", True, POLICY, now=T0 + 3)
    assert status(session, job_id).status == "cancelled"
    with pytest.raises(Conflict):
        jobs.cancel(session, job_id, now=T0 + 4)


def test_reaper_requeues_expired_lease_only(session):
    expired, alive = add(session), add(session, T0 + 1)
    old = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1)
    fresh = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1)
    jobs.confirm(session, expired, old.lease_token, now=T0 + 2)  # it started (downloaded its input)
    jobs.heartbeat(session, alive, fresh.lease_token, Heartbeat(), POLICY, now=T0 + 50)
    counts = jobs.reap(session, now=T0 + 62)
    assert counts == {"requeued": 1, "failed": 0, "cancelled": 0, "unstarted": 0}
    assert status(session, expired).status == "queued" and status(session, alive).status == "running"
    with pytest.raises(LeaseLost):
        jobs.heartbeat(session, expired, old.lease_token, Heartbeat(), POLICY, now=T0 + 63)
    again = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 63)
    assert again.job["id"] == expired and again.job["attempts"] == 2


def test_reaper_fails_when_attempts_used_and_cancels_when_asked(session):
    spent, cancelled = add(session, max_attempts=1), add(session, T0 + 1)
    first = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1)
    jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1)
    jobs.heartbeat(session, spent, first.lease_token, Heartbeat(), POLICY, now=T0 + 2)
    jobs.cancel(session, cancelled, now=T0 + 1)
    assert jobs.reap(session, now=T0 + 100) == {"requeued": 0, "failed": 1, "cancelled": 1, "unstarted": 0}
    assert status(session, spent).error == "lease expired"
    assert status(session, cancelled).status == "cancelled"


def _upload(session, job_id, token, info, path, **kw):
    """add_artifact with a publisher that records it was called and returns `path`."""
    calls = []

    def publish() -> str:
        calls.append(path)
        return path
    upload = jobs.add_artifact(session, job_id, token, info, publish, **kw)
    return upload, calls


def test_artifacts_scoped_to_run_and_final_completes(session):
    job_id = add(session)
    first = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
    run = first.job["run_number"]
    info = ArtifactInfo(name="transcript.json", size=2, sha256="a" * 64, attempt=run)
    assert _upload(session, job_id, first.lease_token, info, "p1", now=T0 + 1)[0].status == "running"
    jobs.release(session, job_id, first.lease_token, now=T0 + 2)
    second = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 3)
    assert second.job["run_number"] == run + 1
    with pytest.raises(LeaseLost):
        _upload(session, job_id, first.lease_token, info, "p1", now=T0 + 4)
    same_name = ArtifactInfo(name="transcript.json", size=3, sha256="b" * 64, attempt=run + 1)
    _upload(session, job_id, second.lease_token, same_name, "p2", now=T0 + 4)
    replaced = ArtifactInfo(name="transcript.json", size=3, sha256="d" * 64, attempt=run + 1)
    upload, _ = _upload(session, job_id, second.lease_token, replaced, "p2b", now=T0 + 4)
    assert upload.replaced == "p2", "the caller deletes the file the new row replaced"
    result = ArtifactInfo(name="result", size=5, sha256="c" * 64, attempt=run + 1)
    upload, calls = _upload(session, job_id, second.lease_token, result, "p3", final=True, now=T0 + 5)
    assert upload.status == "completed" and calls == ["p3"] and not upload.repeated
    job = status(session, job_id)
    assert job.main_artifact == "result" and job.status == "completed"
    # The same call again (a retry after a lost reply) answers the same and publishes nothing.
    again, calls = _upload(session, job_id, second.lease_token, result, "p4", final=True, now=T0 + 6)
    assert again.repeated and again.status == "completed" and calls == [] and again.artifact.sha256 == "c" * 64
    assert jobs.complete(session, job_id, second.lease_token, "result", now=T0 + 6).status == "completed"
    other = ArtifactInfo(name="result", size=5, sha256="e" * 64, attempt=run + 1)
    with pytest.raises(LeaseLost) as lost:
        _upload(session, job_id, second.lease_token, other, "p5", final=True, now=T0 + 6)
    assert lost.value.extra == {"job_status": "completed", "this_lease": True}
    with pytest.raises(LeaseLost) as stale:
        _upload(session, job_id, first.lease_token, result, "p6", final=True, now=T0 + 6)
    assert stale.value.extra == {"job_status": "completed", "this_lease": False}


def test_cancel_requested_ends_cancelled_instead_of_completed(session):
    from coordinator.errors import JobWasCancelled
    for finish in ("upload", "complete"):
        job_id = add(session)
        claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0)
        info = ArtifactInfo(name="result", size=1, sha256="a" * 64, attempt=claimed.job["run_number"])
        if finish == "complete":
            _upload(session, job_id, claimed.lease_token, info, "p", now=T0 + 1)
        jobs.cancel(session, job_id, now=T0 + 2)
        with pytest.raises(JobWasCancelled):
            if finish == "upload":
                _upload(session, job_id, claimed.lease_token, info, "p", final=True, now=T0 + 3)
            else:
                jobs.complete(session, job_id, claimed.lease_token, "result", now=T0 + 3)
        job = status(session, job_id)
        assert job.status == "cancelled" and job.main_artifact is None


def test_unstarted_claim_does_not_use_an_attempt(session):
    job_id = add(session, max_attempts=2)
    for n in range(5):  # every claim reply lost: the worker never calls back
        claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 100 * n)
        assert claimed.job["id"] == job_id and claimed.job["attempts"] == 1
        counts = jobs.reap(session, now=T0 + 100 * n + 99)
        assert counts["unstarted"] == 1 and counts["failed"] == 0
        job = status(session, job_id)
        assert job.status == "queued" and job.attempts == 0
    started = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 1000)
    jobs.confirm(session, job_id, started.lease_token, now=T0 + 1001)
    assert jobs.reap(session, now=T0 + 1099)["requeued"] == 1
    assert status(session, job_id).attempts == 1


def test_idempotent_submit_returns_existing(session):
    new = NewJob(kind="echo")
    first, created = jobs.submit(session, new, owner_key_id=7, idempotency_key="k", now=T0)
    again, created_again = jobs.submit(session, new, owner_key_id=7, idempotency_key="k", now=T0 + 1)
    assert created and not created_again and again.id == first.id


def test_positions_listing_info_and_prune(session):
    a, b = add(session, T0), add(session, T0 + 1, owner=2)
    assert queue_position(session, status(session, b)) == 2
    claimed = jobs.claim_next(session, ECHO_WORKER, POLICY, now=T0 + 2)
    jobs.fail(session, a, claimed.lease_token, "bad", False, POLICY, now=T0 + 3)
    page, total = list_jobs(session, 2, None, 10, 0)
    assert total == 1 and page[0].id == b
    info = queue_info(session, now=T0 + 4)
    assert (info["queued"], info["running"], info["failed_last_hour"]) == (1, 0, 1)
    assert prune(session, 86400, now=T0 + 10) == []
    assert prune(session, 86400, now=T0 + 2 * 86400) == [a]
    assert status(session, a) is None and status(session, b) is not None


def test_concurrent_claims_never_hand_out_a_job_twice(qapp, session):
    ids = {add(session, T0 + i) for i in range(40)}
    won: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with qapp.app_context():
            while (claimed := jobs.claim_next(db.session, ECHO_WORKER, POLICY, now=T0 + 100)) is not None:
                with lock:
                    won.append(claimed.job["id"])
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == sorted(ids)




def test_a_completion_hands_its_next_job_over_again_to_its_lease_while_that_lease_holds(session):
    """A completing upload claimed the worker's next job but its reply was lost: the completing
    lease (and only it) gets that same job and lease back until that lease ends. Two workers
    completing at the same moment each get back their own next job."""
    other = WorkerInfo(worker_id="w2", session_id="s2", kinds=("echo",))
    ids = [add(session, T0 + n) for n in range(5)]
    held = {w.session_id: jobs.claim_next(session, w, POLICY, now=T0 + 10) for w in (ECHO_WORKER, other)}
    done = {}
    for worker in (ECHO_WORKER, other):
        claimed = held[worker.session_id]
        result = ArtifactInfo(name="result", size=3, sha256="c" * 64, attempt=claimed.job["run_number"])
        done[worker.session_id], _ = _upload(session, claimed.job["id"], claimed.lease_token, result, "r",
                                             final=True, now=T0 + 11, then=jobs.NextClaim(worker, POLICY))
    assert {s: d.next.job["id"] for s, d in done.items()} == {"s1": ids[2], "s2": ids[3]}
    for session_id, first in held.items():
        again = jobs.handed_over(session, first.job["id"], first.lease_token, now=T0 + 12)
        assert again.job["id"] == done[session_id].next.job["id"]
        assert (again.lease_token, again.lease_expires_at) == \
            (done[session_id].next.lease_token, done[session_id].next.lease_expires_at)
    assert jobs.handed_over(session, held["s1"].job["id"], "not-the-lease", now=T0 + 12) is None
    assert jobs.handed_over(session, held["s1"].job["id"], None, now=T0 + 12) is None
    assert [status(session, j).attempts for j in ids[2:4]] == [1, 1] and status(session, ids[4]).status == "queued"
    late = done["s1"].next.lease_expires_at + 1
    assert jobs.handed_over(session, held["s1"].job["id"], held["s1"].lease_token, now=late) is None
