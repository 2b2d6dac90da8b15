"""The worker loop against an in-memory fake of the coordinator client."""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from shared.protocol import ClaimedJob, Heartbeat, HeartbeatReply, Stage, WorkerInfo
from worker.context import JobResult, OutputFile
from worker.echo import EchoPipeline
from worker.errors import (Backoff, CoordinatorError, CoordinatorUnavailable, JobFailed,
                           LeaseLost, PermanentJobError)
from worker.heartbeat import HeartbeatThread
from worker.jobfiles import input_filename
from worker.loop import Worker
from worker.pipelines import PipelineRegistry


class FakeCoordinator:
    """In-memory stand-in for CoordinatorClient (same method names), recording every call."""

    def __init__(self) -> None:
        self.queue: list[ClaimedJob] = []
        self.inputs: dict[str, bytes] = {}
        self.calls: list[tuple] = []
        self.beats: list[tuple[str, Heartbeat]] = []
        self.uploads: dict[tuple[str, str], bytes] = {}
        self.cancel: set[str] = set()
        self.lost: set[str] = set()
        self.claim_errors: list[Exception] = []
        self.upload_errors: list[Exception] = []
        self.claim_waits: list[float] = []
        self.last_retry_after: float | None = None
        self.asked_next: list[str] = []
        self.from_memory: list[bool] = []  # per upload: its bytes came read already (small file)
        self.hand_over = False  # act as a coordinator that serves claim-on-complete
        self.handover: ClaimedJob | None = None
        self._lock = threading.Lock()

    def add(self, job_id: str, data: bytes = b"payload", kind: str = "echo",
            **kw) -> ClaimedJob:
        """Queue a job with input `data`."""
        job = ClaimedJob(job_id=job_id, kind=kind, lease_token=f"tok-{job_id}",
                         lease_expires_at=time.time() + 60, attempt=1, max_attempts=3,
                         heartbeat_interval=kw.pop("heartbeat_interval", 0.05),
                         input_name="in.bin", input_size=len(data),
                         input_sha256=hashlib.sha256(data).hexdigest(), **kw)
        self.queue.append(job)
        self.inputs[job_id] = data
        return job

    def _record(self, *call) -> None:
        with self._lock:
            self.calls.append(call)

    def names(self, job_id: str) -> list[str]:
        """The methods called about one job, in order (heartbeats left out)."""
        return [c[0] for c in self.calls if len(c) > 1 and c[1] == job_id]

    def claim(self, worker: WorkerInfo, wait: float = 0.0) -> ClaimedJob | None:
        self.claim_waits.append(wait)
        self._record("claim")
        if self.claim_errors:
            raise self.claim_errors.pop(0)
        return self.queue.pop(0) if self.queue else None

    def heartbeat(self, job: ClaimedJob, beat: Heartbeat) -> HeartbeatReply:
        with self._lock:
            self.beats.append((job.job_id, beat))
        if job.job_id in self.lost:
            raise LeaseLost("409 lease_lost")
        return HeartbeatReply(cancel_requested=job.job_id in self.cancel,
                              lease_expires_at=time.time() + 60,
                              heartbeat_interval=job.heartbeat_interval)

    def download_input(self, job: ClaimedJob, dest: Path, check=None, on_progress=None) -> Path:
        self._record("download_input", job.job_id)
        dest.write_bytes(self.inputs[job.job_id])
        return dest

    def upload_result(self, job: ClaimedJob, path: Path, name: str, *, final: bool = False,
                      content_type: str = "application/octet-stream", check=None,
                      on_progress=None, sha256=None, detected_language=None, claim_next=False,
                      data=None):
        self._record("upload_result", job.job_id, name, final, detected_language)
        self.from_memory.append(data is not None)
        assert data is None or data == path.read_bytes()
        if claim_next:
            self.asked_next.append(job.job_id)
            if self.hand_over and final and self.queue:
                self.handover = self.queue.pop(0)
        if job.job_id in self.lost:
            raise LeaseLost("409 lease_lost")
        if self.upload_errors:
            raise self.upload_errors.pop(0)
        self.uploads[(job.job_id, name)] = path.read_bytes()

    def take_handover(self) -> ClaimedJob | None:
        job, self.handover = self.handover, None
        return job

    def complete(self, job: ClaimedJob, main_artifact: str, detected_language=None) -> dict:
        self._record("complete", job.job_id, main_artifact, detected_language)
        if job.job_id in self.lost:
            raise LeaseLost("409 lease_lost")
        return {}

    def fail(self, job: ClaimedJob, reason: str, retryable: bool = True) -> dict:
        self._record("fail", job.job_id, reason, retryable)
        return {}

    def release(self, job: ClaimedJob) -> dict:
        self._record("release", job.job_id)
        return {}

    def close(self) -> None:
        pass

    def call(self, name: str, job_id: str) -> tuple:
        """The one call `name` about `job_id`."""
        found = [c for c in self.calls if c[0] == name and c[1] == job_id]
        assert len(found) == 1, self.calls
        return found[0]


class Slow:
    """A pipeline that checks in a loop, so cancellation and lease loss can reach it."""

    def __init__(self, seconds: float = 5.0, hook=None):
        self.seconds, self.hook = seconds, hook

    def run(self, ctx, input_path: Path) -> JobResult:
        end = time.monotonic() + self.seconds
        step = 0
        while time.monotonic() < end:
            ctx.check()
            ctx.progress(min(99, step), "working")
            if self.hook:
                self.hook(step)
            step += 1
            time.sleep(0.01)
        out = ctx.work_dir / "out.txt"
        out.write_bytes(input_path.read_bytes())
        return JobResult(outputs=(OutputFile("result", out),), main="result")


class Raises:
    """A pipeline that raises `exc`."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def run(self, ctx, input_path: Path) -> JobResult:
        raise self.exc


@pytest.fixture
def fake() -> FakeCoordinator:
    return FakeCoordinator()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_worker(fake, sleeps, tmp_path):
    """Factory: a Worker on the fake with extra pipelines by kind."""
    def make(**pipelines) -> Worker:
        factories = {"echo": EchoPipeline, **{k: (lambda p=p: p) for k, p in pipelines.items()}}
        info = WorkerInfo(worker_id="w1", session_id="s1", kinds=tuple(factories))
        return Worker(fake, info, PipelineRegistry(factories), tmp_path / "work",
                      poll_interval=0.01, claim_wait=0, heartbeat_min_gap=0.0,
                      sleep=sleeps.append)
    return make


def test_echo_job_completes_with_the_input_bytes(fake, make_worker, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    fake.add("j1", data)
    worker = make_worker()
    assert worker.work(burst=True, install_signals=False) == 1
    assert fake.uploads[("j1", "result")] == data
    assert fake.names("j1") == ["download_input", "upload_result"]
    assert fake.call("upload_result", "j1")[3] is True  # final=1 completes in the same call
    assert worker.outcomes == [("j1", "completed")]
    assert list((tmp_path / "work").iterdir()) == []  # the job's folder is gone


def test_echo_pipeline_reports_sha256_in_info(tmp_path):
    data = os.urandom(2500)
    src = tmp_path / "input.bin"
    src.write_bytes(data)

    class Ctx:
        job = ClaimedJob("j", "echo", "t", 0.0, 1, 1, 1.0)
        work_dir = tmp_path
        seen: list[float] = []

        def check(self):
            pass

        def progress(self, percent, message=None, eta_seconds=None):
            self.seen.append(percent)

    ctx = Ctx()
    result = EchoPipeline(chunk_size=1000).run(ctx, src)
    assert result.info["sha256"] == hashlib.sha256(data).hexdigest()
    assert result.outputs[0].path.read_bytes() == data and result.main == "result"
    assert ctx.seen == sorted(ctx.seen) and ctx.seen[-1] == 100.0


def test_permanent_error_fails_without_retry(fake, make_worker):
    fake.add("j1", kind="bad")
    make_worker(bad=Raises(PermanentJobError("unsupported language pair"))).work(
        burst=True, install_signals=False)
    assert fake.call("fail", "j1")[2:] == ("unsupported language pair", False)
    assert "upload_result" not in fake.names("j1") and "complete" not in fake.names("j1")


def test_job_failed_is_retryable_with_its_message(fake, make_worker):
    fake.add("j1", kind="flaky")
    make_worker(flaky=Raises(JobFailed("GPU out of memory"))).work(burst=True,
                                                                   install_signals=False)
    assert fake.call("fail", "j1")[2:] == ("GPU out of memory", True)


def test_unexpected_error_fails_retryable_and_the_loop_goes_on(fake, make_worker):
    fake.add("j1", kind="boom")
    fake.add("j2", b"second")
    worker = make_worker(boom=Raises(RuntimeError("kaboom")))
    assert worker.work(burst=True, install_signals=False) == 2
    assert fake.call("fail", "j1")[2:] == ("RuntimeError: kaboom", True)
    assert fake.uploads[("j2", "result")] == b"second"
    assert worker.outcomes == [("j1", "failed"), ("j2", "completed")]


def test_cancel_from_heartbeat_stops_the_job(fake, make_worker):
    fake.add("j1", kind="slow")
    fake.cancel.add("j1")
    started = time.monotonic()
    worker = make_worker(slow=Slow(10))
    worker.work(burst=True, install_signals=False)
    assert time.monotonic() - started < 5
    reason, retryable = fake.call("fail", "j1")[2:]
    assert "cancel" in reason and retryable is False
    assert "upload_result" not in fake.names("j1")
    assert worker.outcomes == [("j1", "cancelled")]


def test_lost_lease_discards_the_output_silently(fake, make_worker):
    fake.add("j1", kind="slow")
    fake.lost.add("j1")
    worker = make_worker(slow=Slow(10))
    worker.work(burst=True, install_signals=False)
    assert fake.names("j1") == ["download_input"]
    assert worker.outcomes == [("j1", "lease_lost")]


def test_lease_lost_at_upload_makes_no_further_calls(fake, make_worker):
    def lose(step):
        if step == 0:
            fake.lost.add("j1")

    fake.add("j1", kind="quick", heartbeat_interval=30)
    make_worker(quick=Slow(0.05, hook=lose)).work(burst=True, install_signals=False)
    assert fake.names("j1") == ["download_input", "upload_result"]


def test_outputs_uploaded_main_last_and_published_once(fake, make_worker):
    class TwoOutputs:
        def run(self, ctx, input_path):
            ctx.stage(Stage.TRANSCRIBING)
            transcript = ctx.work_dir / "t.json"
            transcript.write_text("{}")
            ctx.publish(OutputFile("transcript", transcript, "application/json"))
            main = ctx.work_dir / "dub.mp4"
            main.write_bytes(b"video")
            return JobResult((OutputFile("dubbed", main), OutputFile("transcript", transcript)),
                             main="dubbed", detected_language="en")

    fake.add("j1", kind="two")
    make_worker(two=TwoOutputs()).work(burst=True, install_signals=False)
    uploads = [c[2:] for c in fake.calls if c[0] == "upload_result"]
    assert uploads == [("transcript", False, None), ("dubbed", True, "en")]
    assert "complete" not in fake.names("j1")


def test_main_output_published_early_is_completed_by_name(fake, make_worker):
    class SubtitlesFirst:
        def run(self, ctx, input_path):
            subs = ctx.work_dir / "subs.srt"
            subs.write_text("1\n00:00:00,000 --> 00:00:01,000\nhola\n")
            ctx.publish(OutputFile("subs.srt", subs))
            return JobResult((OutputFile("subs.srt", subs),), main="subs.srt",
                             detected_language="en")

    fake.add("j1", kind="subs")
    make_worker(subs=SubtitlesFirst()).work(burst=True, install_signals=False)
    assert [c[2:] for c in fake.calls if c[0] == "upload_result"] == [("subs.srt", False, None)]
    assert fake.call("complete", "j1")[2:] == ("subs.srt", "en")


def test_upload_outage_is_retried_with_results_kept(fake, make_worker):
    fake.add("j1", b"keep me")
    fake.upload_errors.append(CoordinatorUnavailable("connection refused"))
    make_worker().work(burst=True, install_signals=False)
    assert fake.uploads[("j1", "result")] == b"keep me"
    last = [c for c in fake.calls if c[0] != "claim"][-1]
    assert last[0] == "upload_result" and last[3] is True


def test_max_jobs_once_and_burst_exit(fake, make_worker):
    for n in range(3):
        fake.add(f"j{n}")
    assert make_worker().work(max_jobs=2, install_signals=False) == 2
    assert len(fake.queue) == 1
    assert make_worker().work(burst=True, max_jobs=1, install_signals=False) == 1  # --once
    assert make_worker().work(burst=True, max_jobs=1, install_signals=False) == 0  # empty
    assert set(fake.claim_waits) == {0.0}


def test_claims_again_at_once_after_a_job(fake, make_worker, sleeps):
    fake.add("j1")
    fake.add("j2")
    make_worker().work(burst=True, install_signals=False)
    assert sleeps == []


def test_long_poll_wait_is_capped_and_empty_replies_pause(fake, sleeps, tmp_path):
    fake.last_retry_after = 3.0
    info = WorkerInfo(worker_id="w", session_id="s")
    worker = Worker(fake, info, PipelineRegistry({"echo": EchoPipeline}), tmp_path,
                    poll_interval=2.0, claim_wait=99, sleep=sleeps.append)

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            worker.request_stop()

    worker._idle_sleep = sleep
    worker.work(install_signals=False)
    assert fake.claim_waits == [20.0, 20.0]  # MAX_CLAIM_WAIT_SECONDS
    assert all(3.0 <= s <= 5.0 for s in sleeps)  # Retry-After plus up to poll_interval


def test_backoff_honours_retry_after(fake, make_worker, sleeps):
    fake.claim_errors = [Backoff("429 slow down", 429, "rate_limited", retry_after=7.0),
                         CoordinatorUnavailable("refused"), CoordinatorUnavailable("refused")]
    fake.add("j1")
    worker = make_worker()
    worker.backoff_min, worker.backoff_max = 2.0, 60.0
    assert worker.work(burst=True, install_signals=False) == 1
    assert 7.0 <= sleeps[0] <= 7.7
    # then min·2^n·(0.5+0.5·rand) for the 2nd and 3rd error in a row
    assert 2.0 <= sleeps[1] <= 4.0 and 4.0 <= sleeps[2] <= 8.0


def test_bad_key_on_claim_is_fatal(fake, make_worker):
    fake.claim_errors = [CoordinatorError("401 unknown key", 401, "unauthorized")]
    with pytest.raises(CoordinatorError):
        make_worker().work(burst=True, install_signals=False)


def test_first_stop_finishes_the_job_then_exits(fake, make_worker):
    worker = None

    def stop_once(step):
        if step == 0:
            worker.request_stop()

    fake.add("j1", kind="slow")
    fake.add("j2")
    worker = make_worker(slow=Slow(0.2, hook=stop_once))
    assert worker.work(install_signals=False) == 1
    assert worker.outcomes == [("j1", "completed")]
    assert len(fake.queue) == 1  # j2 was never claimed


def test_second_stop_releases_the_job(fake, make_worker):
    worker = None

    def stop_twice(step):
        if step in (0, 1):
            worker.request_stop()

    fake.add("j1", kind="slow")
    worker = make_worker(slow=Slow(10, hook=stop_twice))
    worker.work(install_signals=False)
    assert fake.names("j1") == ["download_input", "release"]
    assert worker.outcomes == [("j1", "released")]


def test_real_sigterm_is_a_warm_shutdown(fake, make_worker):
    def sigterm(step):
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    fake.add("j1", kind="slow")
    fake.add("j2")
    worker = make_worker(slow=Slow(0.2, hook=sigterm))
    assert worker.work() == 1
    assert worker.outcomes == [("j1", "completed")]
    assert signal.getsignal(signal.SIGTERM) is before


def test_heartbeat_carries_stage_and_progress(fake, make_worker):
    fake.add("j1", kind="slow")
    make_worker(slow=Slow(0.4)).work(burst=True, install_signals=False)
    beats = [b for job_id, b in fake.beats if job_id == "j1"]
    assert beats and beats[-1].stage == "downloading" and beats[-1].progress > 0


def test_heartbeat_gives_up_when_unreachable_past_the_lease():
    class Down:
        def heartbeat(self, job, beat):
            raise CoordinatorUnavailable("connection refused")

        def close(self):
            pass

    job = ClaimedJob("j", "echo", "t", time.time() + 0.3, 1, 1, 0.05)
    beat = HeartbeatThread(Down(), job)
    beat.start()
    assert beat.lease_lost.wait(5)
    beat.join(2)
    assert not beat.is_alive()


def test_heartbeat_urgent_update_is_sent_soon():
    class Recorder:
        def __init__(self):
            self.beats = []

        def heartbeat(self, job, beat):
            self.beats.append(beat)
            return HeartbeatReply(False, time.time() + 60, 30.0)

        def close(self):
            pass

    client = Recorder()
    job = ClaimedJob("j", "echo", "t", time.time() + 120, 1, 1, 30.0)
    beat = HeartbeatThread(client, job, urgent_delay=0.01)
    beat.start()
    beat.update(stage="uploading", urgent=True)
    deadline = time.monotonic() + 5
    while not client.beats and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert client.beats[0].stage == "uploading"


def test_input_filename_never_uses_the_client_name():
    job = ClaimedJob("j", "dub", "t", 0.0, 1, 1, 1.0, input_name="../../etc/passwd.MP4")
    assert input_filename(job) == "input.mp4"
    evil = ClaimedJob("j", "dub", "t", 0.0, 1, 1, 1.0, input_name="x.$(rm -rf)")
    assert input_filename(evil) == "input"


def test_signal_during_the_long_poll_waits_for_it_and_releases_a_job(fake, make_worker):
    fake.add("j1")
    worker = make_worker()
    real_claim = fake.claim

    def claim_with_signal(info, wait=0.0):
        worker._on_signal(signal.SIGTERM, None)  # arrives while the claim is pending
        return real_claim(info, wait)

    fake.claim = claim_with_signal
    assert worker.work(install_signals=False) == 0
    assert fake.names("j1") == ["release"]


def test_second_signal_cuts_the_long_poll_short(fake, make_worker):
    worker = make_worker()

    def claim_forever(info, wait=0.0):
        worker._on_signal(signal.SIGINT, None)
        worker._on_signal(signal.SIGINT, None)  # raises out of the pending claim
        raise AssertionError("not reached")

    fake.claim = claim_forever
    assert worker.work(install_signals=False) == 0


def test_a_completing_upload_hands_over_the_next_job(fake, make_worker):
    """Claim-on-complete: the final upload asks for the next job and the loop runs the one it
    brings back without a claim call of its own; the last upload before max-jobs does not ask."""
    client = fake
    client.hand_over = True
    for n in range(4):
        client.add(f"j{n}", f"data {n}".encode())
    worker = make_worker()
    assert worker.work(burst=True, max_jobs=3, install_signals=False) == 3
    assert [c[0] for c in client.calls].count("claim") == 1  # the first job only
    assert client.asked_next == ["j0", "j1"]  # j2 was the last one max-jobs allows
    assert {k[0] for k in client.uploads} == {"j0", "j1", "j2"} and len(client.queue) == 1


def test_a_job_handed_over_while_stopping_goes_back(fake, make_worker):
    client = fake
    client.hand_over = True
    client.add("j0")
    client.add("j1")
    worker = make_worker()
    original = client.upload_result

    def upload_then_stop(*args, **kw):
        result = original(*args, **kw)
        worker.request_stop()  # the signal arrives after the reply brought j1
        return result

    client.upload_result = upload_then_stop
    worker.work(install_signals=False)
    assert client.call("release", "j1") and ("j1", "result") not in client.uploads


# --- per-job overhead: one folder, two log lines, small outputs read once ---------------------

def _job_lines(caplog, job_id: str, level: int = logging.INFO) -> list[str]:
    """The messages about `job_id` logged at `level` or above."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= level and r.getMessage().startswith(f"job {job_id}:")]


def test_a_tiny_job_logs_one_line_when_claimed_and_one_when_it_ends(fake, make_worker, caplog):
    """Outcome, duration and main artifact share the last line; stages with nothing to fetch
    or send (an input sent inline, a small result) are DEBUG."""
    data = b"tiny"
    fake.add("j1", data, input_inline=base64.b64encode(data).decode())
    fake.download_input = lambda job, dest, check=None, on_progress=None: (
        dest.write_bytes(base64.b64decode(job.input_inline)), dest)[1]
    caplog.set_level(logging.DEBUG)
    make_worker().work(burst=True, install_signals=False)
    assert _job_lines(caplog, "j1") == ["job j1: claimed echo (attempt 1/3)",
                                        "job j1: completed in 0.0s (main artifact result)"]
    debug = _job_lines(caplog, "j1", logging.DEBUG)
    assert "job j1: stage downloading" in debug and "job j1: stage uploading" in debug


def test_real_transfers_and_failures_keep_their_lines(fake, make_worker, caplog):
    caplog.set_level(logging.INFO)
    fake.add("j1", os.urandom(2 * 1024 * 1024))  # fetched, and a result over 1 MiB
    fake.add("j2", kind="boom")
    make_worker(boom=Raises(JobFailed("GPU out of memory"))).work(burst=True,
                                                                 install_signals=False)
    lines = _job_lines(caplog, "j1")
    assert lines[1:3] == ["job j1: stage downloading", "job j1: stage uploading"]
    assert lines[-1].startswith("job j1: completed in ") and "(main artifact result)" in lines[-1]
    *_, reason, end = _job_lines(caplog, "j2")
    assert reason == "job j2: attempt failed: GPU out of memory"
    assert end.startswith("job j2: failed in ") and "main artifact" not in end


class Records:
    """A pipeline that notes its folder and input, writes files, then fails or succeeds."""

    def __init__(self, fail: bool = False):
        self.fail, self.seen = fail, []

    def run(self, ctx, input_path: Path) -> JobResult:
        self.seen.append((ctx.work_dir, input_path, sorted(p.name for p in ctx.work_dir.iterdir())))
        (ctx.work_dir / "scratch").mkdir()
        (ctx.work_dir / "scratch" / "a.wav").write_bytes(b"x")
        out = ctx.work_dir / "out.txt"
        out.write_bytes(input_path.read_bytes())
        if self.fail:
            raise JobFailed("failed after writing files")
        return JobResult(outputs=(OutputFile("result", out),), main="result")


@pytest.mark.parametrize("fail", [False, True])
def test_the_job_has_one_folder_removed_when_it_ends(fake, make_worker, tmp_path, fail):
    """Input and pipeline files share `<work_dir>/<job>-<attempt>` (one mkdir), which is gone
    after the job, completed or failed."""
    fake.add("j1", b"in", kind="rec")
    pipeline = Records(fail)
    worker = make_worker(rec=pipeline)
    worker.work(burst=True, install_signals=False)
    folder, input_path, present = pipeline.seen[0]
    assert folder == tmp_path / "work" / "j1-1" and input_path == folder / "input.bin"
    assert present == ["input.bin"]  # no directory the job does not use
    assert worker.outcomes == [("j1", "failed" if fail else "completed")]
    assert list((tmp_path / "work").iterdir()) == []


def test_small_outputs_are_read_once_and_sent_from_memory(fake, make_worker):
    fake.add("j1", b"small")
    fake.add("j2", os.urandom(1024 * 1024 + 1))
    make_worker().work(burst=True, install_signals=False)
    assert fake.from_memory == [True, False]
    assert fake.uploads[("j1", "result")] == b"small"


def test_heartbeats_of_consecutive_jobs_reuse_one_thread(fake, make_worker):
    threads = []

    class Notes:
        def run(self, ctx, input_path):
            deadline = time.monotonic() + 5
            while ctx.beat._thread is None and time.monotonic() < deadline:
                time.sleep(0.001)
            threads.append(ctx.beat._thread)
            return EchoPipeline().run(ctx, input_path)

    for n in range(3):
        fake.add(f"j{n}", kind="notes")
    make_worker(notes=Notes()).work(burst=True, install_signals=False)
    assert len(threads) == 3 and threads[0] is threads[1] is threads[2]
