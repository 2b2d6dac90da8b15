"""The worker's batching (`--batch`) against an in-memory fake of the coordinator client: short
jobs' results held and delivered with the next claims, a long job giving work back, refusals."""
from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest

from shared.protocol import ClaimedJob, HeldResult, WorkerInfo
from tests.unit.test_worker_loop import FakeCoordinator, Slow
from worker.batching import Batcher
from worker.echo import EchoPipeline
from worker.errors import CoordinatorError, CoordinatorUnavailable
from worker.loop import Worker
from worker.pipelines import PipelineRegistry


class BatchingFake(FakeCoordinator):
    """The fake plus POST /jobs/batch: completes held results, releases, claims from the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict] = []
        self.batch_errors: list[Exception] = []
        self.refuse: set[str] = set()  # job ids whose result the coordinator refuses (409)

    def upload_result(self, job, path, name, *, data=None, **kw):
        if str(path) == os.devnull:  # a held result delivered alone: its bytes come as `data`
            self._record("upload_result", job.job_id, name, kw.get("final"), kw.get("detected_language"))
            self.uploads[(job.job_id, name)] = data
            return None
        return super().upload_result(job, path, name, data=data, **kw)

    def batch(self, results: list[HeldResult], release: list[ClaimedJob], claim: int,
              worker: WorkerInfo | None = None) -> dict:
        self.batches.append({"results": [r.job_id for r in results], "release": [j.job_id for j in release],
                             "claim": claim})
        if self.batch_errors:
            raise self.batch_errors.pop(0)
        entries = []
        for held in results:
            data = base64.b64decode(held.data)
            assert hashlib.sha256(data).hexdigest() == held.sha256
            if held.job_id in self.refuse:
                entries.append({"job_id": held.job_id, "status_code": 409, "error": "lease_lost",
                                "message": "the lease ended", "job_status": "queued"})
                continue
            self.uploads[(held.job_id, held.name)] = data
            entries.append({"job_id": held.job_id, "status": "completed", "repeated": False})
        self.queue[:0] = list(release)  # back to the front of the queue
        claimed, self.queue = self.queue[:claim], self.queue[claim:]
        return {"results": entries, "released": [{"job_id": j.job_id, "status": "queued"} for j in release],
                "jobs": [j.to_dict() for j in claimed]}


@pytest.fixture
def bfake() -> BatchingFake:
    return BatchingFake()


def _worker(fake, tmp_path, batch: int = 4, **pipelines) -> Worker:
    factories = {"echo": EchoPipeline, **{k: (lambda p=p: p) for k, p in pipelines.items()}}
    info = WorkerInfo(worker_id="w1", session_id="s1", kinds=tuple(factories))
    return Worker(fake, info, PipelineRegistry(factories), tmp_path / "work", poll_interval=0.01,
                  claim_wait=0, heartbeat_min_gap=0.0, sleep=lambda s: None, batch=batch)


def _short(fake, job_id: str, data: bytes, **kw) -> ClaimedJob:
    return fake.add(job_id, data, heartbeat_interval=30.0, **kw)  # launch delay 0.1 s


def test_short_jobs_are_delivered_in_batch_calls_that_claim_the_next(bfake, tmp_path):
    for n in range(10):
        _short(bfake, f"j{n}", f"in {n}".encode())
    worker = _worker(bfake, tmp_path, batch=4)
    assert worker.work(burst=True, install_signals=False) == 10
    assert {k: v for k, v in bfake.uploads.items()} == {(f"j{n}", "result"): f"in {n}".encode() for n in range(10)}
    assert sorted(worker.outcomes) == sorted((f"j{n}", "completed") for n in range(10))
    assert [c[0] for c in bfake.calls].count("claim") == 2  # the first job, and the empty queue at the end
    assert [b["results"] for b in bfake.batches] == [["j0"], ["j1", "j2", "j3", "j4"], ["j5", "j6", "j7", "j8"],
                                                     ["j9"]]
    assert [b["claim"] for b in bfake.batches] == [4, 4, 4, 4]
    assert not any(c[0] == "upload_result" for c in bfake.calls)


def test_max_jobs_caps_what_a_batch_call_claims(bfake, tmp_path):
    for n in range(10):
        _short(bfake, f"j{n}", b"x")
    worker = _worker(bfake, tmp_path, batch=8)
    assert worker.work(burst=True, max_jobs=3, install_signals=False) == 3
    assert [b["claim"] for b in bfake.batches] == [2, 0]  # after j0: two more; the last call claims none
    assert len(bfake.uploads) == 3 and len(bfake.queue) == 7


def test_a_long_job_gives_back_the_jobs_claimed_ahead_and_delivers_what_is_held(bfake, tmp_path):
    _short(bfake, "first", b"a")  # claimed alone, then delivered by the call that claims the rest
    _short(bfake, "mid", b"m")
    _short(bfake, "slow", b"b", kind="slow")
    for n in range(3):
        _short(bfake, f"after{n}", b"c")
    worker = _worker(bfake, tmp_path, batch=8, slow=Slow(0.6))
    assert worker.work(burst=True, install_signals=False) == 6
    give_back = next(b for b in bfake.batches if b["release"])
    assert give_back == {"results": ["mid"], "release": ["after0", "after1", "after2"], "claim": 0}
    assert ("upload_result", "slow", "result", True, None) in bfake.calls  # a plain completing upload
    assert len(bfake.uploads) == 6 and dict(worker.outcomes)["after2"] == "completed"


def test_a_refused_result_is_reported_and_the_rest_complete(bfake, tmp_path):
    for n in range(3):
        _short(bfake, f"j{n}", b"x")
    bfake.refuse.add("j1")
    worker = _worker(bfake, tmp_path)
    worker.work(burst=True, install_signals=False)
    assert dict(worker.outcomes) == {"j0": "completed", "j1": "lease_lost", "j2": "completed"}


def test_an_unreachable_coordinator_keeps_the_results_held(bfake, tmp_path):
    _short(bfake, "j0", b"x")
    bfake.batch_errors.append(CoordinatorUnavailable("down", 503, "unavailable"))
    worker = _worker(bfake, tmp_path)
    worker.work(burst=True, install_signals=False)
    assert [b["results"] for b in bfake.batches] == [["j0"], ["j0"]]  # tried again at the exit
    assert bfake.uploads[("j0", "result")] == b"x" and worker.outcomes == [("j0", "completed")]


def test_a_coordinator_without_the_route_gets_plain_uploads(bfake, tmp_path):
    for n in range(3):
        _short(bfake, f"j{n}", b"x")
    bfake.batch_errors.append(CoordinatorError("404", 404, "not_found"))
    worker = _worker(bfake, tmp_path)
    worker.work(burst=True, install_signals=False)
    assert len(bfake.batches) == 1 and not worker.batch.enabled
    assert [c[1] for c in bfake.calls if c[0] == "upload_result"] == ["j0", "j1", "j2"]
    assert dict(worker.outcomes) == {f"j{n}": "completed" for n in range(3)}


def test_a_big_or_many_output_result_is_never_held(bfake, tmp_path):
    job = _short(bfake, "big", b"y" * (16 * 1024 + 1))
    batcher = Batcher(bfake, 4, lambda *a: None)
    path = tmp_path / "out"
    path.write_bytes(b"y" * (16 * 1024 + 1))
    output = type("Out", (), {"path": path})()
    assert not batcher.can_hold(job, (output,), short=True)
    path.write_bytes(b"small")
    assert batcher.can_hold(job, (output,), short=True)
    assert not batcher.can_hold(job, (output, output), short=True)
    assert not batcher.can_hold(job, (output,), short=False)
    assert not Batcher(bfake, 1, lambda *a: None).can_hold(job, (output,), short=True)


def test_a_stop_delivers_what_is_held_and_gives_back_what_is_ahead(bfake, tmp_path):
    for n in range(6):
        _short(bfake, f"j{n}", b"x")
    worker = _worker(bfake, tmp_path, batch=4)
    original = worker.perform

    def perform_then_stop(job):
        outcome = original(job)
        if job.job_id == "j2":
            worker.request_stop()
        return outcome
    worker.perform = perform_then_stop
    worker.work(install_signals=False)
    last = bfake.batches[-1]
    assert last["results"] == ["j1", "j2"] and last["release"] == ["j3", "j4"] and last["claim"] == 0
    assert [j.job_id for j in bfake.queue] == ["j3", "j4", "j5"]
    time.sleep(0)  # nothing left running
