"""What keeps a tiny job cheap for the worker: reused heartbeat threads, one job folder, small
files read once. (The loop's side is in test_worker_loop.py, the session's in
test_worker_client.py.)"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shared.protocol import ClaimedJob, HeartbeatReply
from worker.errors import LeaseLost
from worker.heartbeat import HeartbeatThread, RunnerPool
from worker.jobfiles import make_job_folder
from worker.transfer import read_small


class Beats:
    """A heartbeat client that records which thread sent each beat; `hold` blocks beats."""

    def __init__(self, lost: bool = False):
        self.threads: list[threading.Thread] = []
        self.hold = threading.Event()
        self.hold.set()
        self.lost = lost
        self.closed = 0

    def heartbeat(self, job, beat) -> HeartbeatReply:
        self.threads.append(threading.current_thread())
        self.hold.wait(10)
        if self.lost:
            raise LeaseLost("409 lease_lost")
        return HeartbeatReply(False, time.time() + 60, job.heartbeat_interval)

    def close(self) -> None:
        self.closed += 1


def claimed(job_id: str = "j", interval: float = 0.02) -> ClaimedJob:
    return ClaimedJob(job_id, "echo", "t", time.time() + 60, 1, 1, interval)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_a_long_job_still_beats_at_the_interval_on_a_reused_thread():
    pool, client = RunnerPool(), Beats()
    first = HeartbeatThread(client, claimed("a", 30.0), pool=pool, launch_delay=0)
    first.start()
    first.stop()
    assert not first.is_alive() and client.closed == 1
    second = HeartbeatThread(client, claimed("b"), pool=pool, launch_delay=0)
    second.start()
    assert wait_for(lambda: len(client.threads) >= 3)  # every 0.02 s
    second.stop()
    assert not second.is_alive() and second.beats >= 3
    assert set(client.threads) == {first._thread} == {second._thread}


def test_a_beat_still_in_flight_keeps_its_thread_and_the_next_job_gets_another():
    pool, client = RunnerPool(), Beats()
    client.hold.clear()  # the first beat hangs (a slow coordinator)
    first = HeartbeatThread(client, claimed("a"), pool=pool, launch_delay=0)
    first.start()
    assert wait_for(lambda: len(client.threads) == 1)
    first.stop(timeout=0.05)
    assert first.is_alive()  # left to finish in the background
    second = HeartbeatThread(client, claimed("b"), pool=pool, launch_delay=0)
    second.start()
    client.hold.set()
    assert wait_for(lambda: second.beats >= 2)
    second.stop()
    first.join(5)
    assert not first.is_alive() and second._thread is not first._thread


def test_lease_lost_ends_the_heartbeat_and_its_thread_serves_the_next_job():
    pool = RunnerPool()
    lost = HeartbeatThread(Beats(lost=True), claimed("a"), pool=pool, launch_delay=0)
    lost.start()
    assert lost.lease_lost.wait(5)
    lost.join(5)
    assert not lost.is_alive()
    client = Beats()
    nxt = HeartbeatThread(client, claimed("b"), pool=pool, launch_delay=0)
    nxt.start()
    assert wait_for(lambda: nxt.beats >= 1)
    nxt.stop()
    assert nxt._thread is lost._thread and not nxt.lease_lost.is_set()


def test_pool_keeps_only_a_few_parked_threads():
    pool, client = RunnerPool(keep=1), Beats()
    client.hold.clear()
    beats = [HeartbeatThread(client, claimed(f"j{n}"), pool=pool, launch_delay=0) for n in range(3)]
    for beat in beats:
        beat.start()
    assert wait_for(lambda: len(client.threads) == 3)
    assert len(set(client.threads)) == 3  # all busy at once: one thread each
    client.hold.set()
    for beat in beats:
        beat.stop()
    threads = set(client.threads)
    assert wait_for(lambda: sum(t.is_alive() for t in threads) == 1)  # two exited
    assert len(pool._parked) == 1 and pool._parked[0].is_alive()


def test_a_job_that_ends_before_the_launch_delay_wakes_no_thread():
    """No beat is due in a job's first `launch_delay`: a tiny job's heartbeat is stopped before
    any thread runs it, and stopping it does not wait."""
    pool, client = RunnerPool(), Beats()
    beat = HeartbeatThread(client, claimed("tiny", 30.0), pool=pool)
    assert beat.launch_delay == 0.1
    beat.update(urgent=True, stage="uploading")
    beat.start()
    assert beat.is_alive()
    started = time.monotonic()
    beat.stop()
    assert time.monotonic() - started < 0.05 and not beat.is_alive()
    time.sleep(0.25)  # past its launch time: it is dropped, not run
    assert beat._thread is None and client.threads == [] and client.closed == 0
    assert pool._parked == []


def test_a_job_that_runs_past_the_launch_delay_beats_on_time():
    """Launched late, the first beat still comes one interval after the start."""
    pool, client = RunnerPool(), Beats()
    beat = HeartbeatThread(client, claimed("long", 0.4), pool=pool)
    assert beat.launch_delay == pytest.approx(0.1)
    started = time.monotonic()
    beat.start()
    assert wait_for(lambda: len(client.threads) >= 1)
    first = time.monotonic() - started
    assert 0.3 < first < 0.6
    assert wait_for(lambda: beat.beats >= 2)
    beat.stop()
    assert not beat.is_alive() and client.closed == 1


def test_a_heartbeat_is_started_once():
    beat = HeartbeatThread(Beats(), claimed(), pool=RunnerPool())
    beat.start()
    with pytest.raises(RuntimeError):
        beat.start()
    beat.stop()


def test_job_folder_is_one_mkdir_and_makes_the_worker_folder_first_time(tmp_path: Path):
    folder = tmp_path / "work" / "j1-1"
    make_job_folder(folder)  # the worker's folder does not exist yet
    (folder / "input.bin").write_bytes(b"partial")
    make_job_folder(folder)  # the same attempt again (after a crash): kept, downloads resume
    assert (folder / "input.bin").read_bytes() == b"partial"


def test_read_small_reads_only_files_under_the_limit(tmp_path: Path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    assert read_small(path, limit=6) == b"12345"
    assert read_small(path, limit=5) is None
    path.write_bytes(b"")
    assert read_small(path, limit=5) == b""


def test_a_forked_child_starts_its_own_heartbeat_threads():
    """The parent's parked threads do not exist in a forked child: its heartbeats still run."""
    import os
    from worker.heartbeat import RUNNERS
    warm = HeartbeatThread(Beats(), claimed("warm", 30.0), launch_delay=0)
    warm.start()
    warm.stop()
    assert RUNNERS._parked  # parked in the parent
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if a heartbeat beats
        code = 1
        try:
            beat = HeartbeatThread(Beats(), claimed("child"))
            beat.start()
            code = 0 if wait_for(lambda: beat.beats >= 1, 5) else 1
            beat.stop()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
