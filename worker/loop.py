"""The worker loop: claim a job, run its pipeline, deliver the results; never die from a job.

Exits cleanly for burst (queue empty), max-jobs and a stop request. The first SIGINT/SIGTERM
finishes the current job and exits (warm shutdown); the second makes the running pipeline's next
`ctx.check()` raise `ShutdownRequested`, and the job is released back to the queue.

Delivery: every other output is uploaded with `final=0`, then the main one with `final=1` and the
detected language, which completes the job in the same fenced call (one request fewer per job).
If the main output was already published (a subtitle job's subtitles), `POST complete` names it.
With `batch` > 1, short jobs' small results are held and delivered in batch calls that also claim
the next jobs (`worker.batching`).
"""
from __future__ import annotations

import contextlib
import logging
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from shared.protocol import MAX_CLAIM_WAIT_SECONDS, ClaimedJob, Stage, WorkerInfo
from worker.batching import Batcher
from worker.context import JobResult, OutputFile
from worker.errors import (CoordinatorError, CoordinatorUnavailable, JobCancelled, JobFailed,
                           LeaseLost, PermanentJobError, ShutdownRequested)
from worker.heartbeat import HeartbeatThread
from worker.jobcontext import LiveJobContext
from worker.jobfiles import checked_outputs, input_filename, make_job_folder, outputs_size, redub_bundle
from worker.pipelines import PipelineRegistry
from worker.transfer import SMALL_TRANSFER, backoff_delay

logger = logging.getLogger(__name__)

EMPTY, ERROR, HELD = "empty", "error", "held"
UPLOAD_ROUNDS = 5
REPORT_TRIES = 4
# The loop's own files in a job's folder, next to the input (`input_filename`); pipelines use
# other names (worker.context).
SUBTITLES_FILE = "subtitles.txt"
PARENT_BUNDLE_FILE = "parent_segments.tar"
# 4xx replies to a claim that retrying cannot fix (bad key, wrong URL, rejected WorkerInfo).
RETRYABLE_CLAIM_STATUSES = {408, 409, 425, 429}


class _StopClaiming(BaseException):
    """Raised by the signal handler on a second signal to cut an idle long poll short."""


class Worker:
    """Pulls jobs from the coordinator one at a time and runs them."""

    def __init__(self, client: Any, info: WorkerInfo, registry: PipelineRegistry,
                 work_dir: Path, *, poll_interval: float = 5.0, claim_wait: float = 20.0,
                 backoff_min: float = 1.0, backoff_max: float = 60.0,
                 heartbeat_min_gap: float = 2.0, sleep: Callable[[float], Any] | None = None,
                 batch: int = 1):
        self.client, self.info, self.registry = client, info, registry
        self.work_dir = Path(work_dir)
        self.poll_interval = max(0.0, poll_interval)
        self.claim_wait = max(0.0, min(claim_wait, MAX_CLAIM_WAIT_SECONDS))
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.heartbeat_min_gap = heartbeat_min_gap
        self.jobs_done = 0
        self.outcomes: list[tuple[str, str]] = []
        self.current: ClaimedJob | None = None
        self._max_jobs: int | None = None
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._wakeup = threading.Event()
        self._stop_requests = 0
        self._claiming = False
        self._errors = 0
        self._idle_sleep = sleep or self._wakeup.wait
        self._retry_sleep = sleep or time.sleep
        self._job_sleep = sleep or self._abort.wait  # a second signal cuts it short
        self.batch = Batcher(client, batch, self._held_outcome) if batch > 1 else None

    # -- stopping ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: finish the current job, then exit. Second: abort the job and exit."""
        self._stop_requests += 1
        self._stop.set()
        self._wakeup.set()
        if self._stop_requests >= 2:
            self._abort.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGINT/SIGTERM handler: warm shutdown first, abort on the second signal."""
        name = signal.Signals(signum).name
        self.request_stop()
        if not self._abort.is_set():
            logger.warning("%s: %s, then exiting (again to quit now)", name,
                           "waiting for the pending claim" if self._claiming
                           else "finishing the current job")
            return
        logger.warning("%s again: quitting now; a running job goes back to the queue", name)
        if self._claiming:
            # The coordinator may still hand this cut-off long poll a job, which then waits
            # for its lease to expire: acceptable on an explicit second signal only.
            raise _StopClaiming()

    @contextlib.contextmanager
    def _signal_handlers(self, install: bool) -> Iterator[None]:
        """Install the SIGINT/SIGTERM handlers for the duration of `work()` (main thread)."""
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- the loop ---------------------------------------------------------------------------

    def work(self, burst: bool = False, max_jobs: int | None = None,
             install_signals: bool = True) -> int:
        """Run jobs until stopped, the queue is empty (burst) or `max_jobs` ran; return count."""
        logger.info("worker %s (session %s) starting: kinds=%s burst=%s max_jobs=%s",
                    self.info.worker_id, self.info.session_id, ",".join(self.info.kinds),
                    burst, max_jobs)
        self._max_jobs = max_jobs
        with self._signal_handlers(install_signals), self._batch_ends():
            while not self._stop.is_set():
                if max_jobs is not None and self.jobs_done >= max_jobs:
                    logger.info("ran %d job(s): max-jobs reached", self.jobs_done)
                    break
                got = self._next_local() or self._poll(burst)
                if got == EMPTY and burst:
                    logger.info("queue empty: burst finished after %d job(s)", self.jobs_done)
                    break
                if isinstance(got, ClaimedJob):
                    self._take(got)
        handed = self._handed_over()
        if handed is not None:  # a stop came after the completing upload brought it
            self._take(handed)
        logger.info("worker %s stopped after %d job(s)", self.info.worker_id, self.jobs_done)
        return self.jobs_done

    @contextlib.contextmanager
    def _batch_ends(self) -> Iterator[None]:
        """However the loop ends: held results delivered, jobs claimed ahead given back."""
        try:
            yield
        finally:
            if self.batch is not None:
                self.batch.give_back()

    def _next_local(self) -> ClaimedJob | None:
        """A job claimed ahead; when none is left, the jobs the batch call that delivers the
        held results claims; else the one the last completing upload handed over."""
        if self.batch is not None:
            job = self.batch.take()
            if job is None and self.batch.holding:
                self.batch.flush(self._batch_claims(), self.info)
                job = self.batch.take()
            if job is not None:
                return job
        return self._handed_over()

    def _batch_claims(self) -> int:
        """How many jobs a batch call claims: up to the batch size, none while stopping, and not
        past max-jobs (held jobs count as done)."""
        if self._stop.is_set() or self.batch is None:
            return 0
        wanted = self.batch.size - self.batch.ahead
        if self._max_jobs is not None:
            wanted = min(wanted, self._max_jobs - self.jobs_done - self.batch.ahead)
        return max(0, wanted)

    def _held_outcome(self, job_id: str, outcome: str) -> None:
        """A held job's outcome, known once its batch call answered."""
        self.outcomes.append((job_id, outcome))

    def _handed_over(self) -> ClaimedJob | None:
        """The job the last completing upload claimed for us (claim-on-complete), if any."""
        return self.client.take_handover()

    def _wants_next(self) -> bool:
        """Whether the completing upload should claim our next job too: not while stopping, and
        not past max-jobs (the job being finished is not counted yet)."""
        if self._stop.is_set():
            return False
        return self._max_jobs is None or self.jobs_done + 1 < self._max_jobs

    def _take(self, job: ClaimedJob) -> None:
        """Run a freshly claimed job, or hand it straight back if we are stopping."""
        if self._stop.is_set():
            logger.info("job %s: claimed while stopping, releasing it", job.job_id)
            self._report(job, "released", lambda: self.client.release(job))
            return
        self.perform(job)
        self.jobs_done += 1

    def _poll(self, burst: bool) -> ClaimedJob | str:
        """Ask for a job once; pause after errors and empty replies; return job/EMPTY/ERROR."""
        wait = 0.0 if burst else self.claim_wait
        started = time.monotonic()
        try:
            job = self._claim(wait)
        except CoordinatorError as exc:
            if not isinstance(exc, CoordinatorUnavailable) and \
                    exc.status not in RETRYABLE_CLAIM_STATUSES:
                raise
            self._idle_sleep(self._error_delay(exc))
            return ERROR
        except Exception as exc:
            logger.exception("claim failed unexpectedly")
            self._idle_sleep(self._error_delay(exc))
            return ERROR
        self._errors = 0
        if job is None:
            if not burst and not self._stop.is_set():
                self._idle_pause(wait, time.monotonic() - started)
            return EMPTY
        return job

    def _claim(self, wait: float) -> ClaimedJob | None:
        """The claim call itself; only a second signal cuts the long poll short."""
        try:
            self._claiming = True
            if self._stop.is_set():
                return None
            return self.client.claim(self.info, wait)
        except _StopClaiming:
            return None
        finally:
            self._claiming = False

    def _idle_pause(self, wait: float, elapsed: float) -> None:
        """After an empty reply: ask again at once if we long-polled, else sleep with jitter."""
        if wait > 0 and elapsed >= wait / 2:
            return
        retry_after = getattr(self.client, "last_retry_after", None) or 0.0
        self._idle_sleep(retry_after + random.uniform(0, self.poll_interval))

    def _error_delay(self, exc: Exception) -> float:
        """Randomized exponential backoff after consecutive errors; Retry-After wins."""
        self._errors += 1
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = retry_after * (1 + 0.1 * random.random())
        else:
            delay = backoff_delay(self._errors - 1, self.backoff_min, self.backoff_max)
        logger.warning("coordinator error (%d in a row), retrying in %.1fs: %s",
                       self._errors, delay, exc)
        return delay

    # -- one job ----------------------------------------------------------------------------

    def perform(self, job: ClaimedJob) -> str:
        """Run one claimed job to an outcome; never raises.

        The job gets one folder, `<work_dir>/<job_id>-<attempt>`: the loop's downloads and the
        pipeline's files (`ctx.work_dir`), removed when the job ends however it ends.
        """
        logger.info("job %s: claimed %s (attempt %d/%d)", job.job_id, job.kind, job.attempt,
                    job.max_attempts)
        folder = self.work_dir / f"{job.job_id}-{job.attempt}"
        beat = HeartbeatThread(self.client, job, min_gap=self.heartbeat_min_gap,
                               on_launch=self.batch.give_back_soon if self.batch else None)
        ctx = LiveJobContext(job, folder, self.client, beat, self._abort)
        self.current, started = job, time.monotonic()
        beat.start()
        try:
            outcome = self._outcome(ctx)
        finally:
            beat.stop()
            self.current = None
            shutil.rmtree(folder, ignore_errors=True)
        if outcome != HELD:  # a held job's end is logged and counted by its batch call
            _log_end(ctx, outcome, time.monotonic() - started)
            self.outcomes.append((job.job_id, outcome))
        return outcome

    def _outcome(self, ctx: LiveJobContext) -> str:
        """Execute and map every exception to what we tell the coordinator."""
        job, client = ctx.job, self.client
        try:
            return self._execute(ctx)
        except LeaseLost as exc:
            return _lease_lost(job, exc)
        except JobCancelled:
            return self._end(ctx, "cancelled",
                             lambda: client.fail(job, "cancelled by the client", False))
        except ShutdownRequested:
            return self._end(ctx, "released", lambda: client.release(job))
        except PermanentJobError as exc:
            logger.error("job %s: permanent failure: %s", job.job_id, exc)
            reason = str(exc)
            return self._end(ctx, "failed", lambda: client.fail(job, reason, False))
        except JobFailed as exc:
            logger.error("job %s: attempt failed: %s", job.job_id, exc)
            reason = str(exc)
            return self._end(ctx, "failed", lambda: client.fail(job, reason, True))
        except Exception as exc:
            logger.exception("job %s: attempt failed", job.job_id)
            reason = f"{type(exc).__name__}: {exc}"
            return self._end(ctx, "failed", lambda: client.fail(job, reason, True))

    def _execute(self, ctx: LiveJobContext) -> str:
        """Download the input (and a dub's own subtitles), run the pipeline, deliver the outputs."""
        job, folder = ctx.job, ctx.work_dir
        make_job_folder(folder)
        bundle = redub_bundle(job)
        # Only a transfer is worth a log line: not an input that came inside the claim reply.
        ctx.stage(Stage.DOWNLOADING, quiet=job.input_inline is not None and bool(job.input_sha256)
                  and not job.subtitles_sha256 and not bundle)
        input_path = self.client.download_input(
            job, folder / input_filename(job), check=ctx.check,
            on_progress=ctx.transfer_progress("downloading input"))
        if job.subtitles_sha256:  # a dub with the user's own subtitles
            ctx.subtitles_path = self.client.download_subtitles(
                job, folder / SUBTITLES_FILE, check=ctx.check)
        if bundle:  # a re-dub: the parent's lines
            ctx.parent_path = self.client.download_parent(
                job, folder / PARENT_BUNDLE_FILE, bundle, check=ctx.check)
        ctx.check()
        pipeline = self.registry.get(ctx.job.kind)
        result = pipeline.run(ctx, input_path)
        return HELD if self._hold(ctx, result) else self._deliver(ctx, result)

    def _hold(self, ctx: LiveJobContext, result: JobResult) -> bool:
        """Hold a short job's only, small result for the next batch call (`worker.batching`)."""
        if self.batch is None:
            return False
        outputs = checked_outputs(result)
        ctx.check()
        if not self.batch.hold_if_short(ctx.job, outputs, result.detected_language, not ctx.beat.launched):
            return False
        ctx.beat.stop()
        ctx.main_artifact = result.main
        return True

    def _deliver(self, ctx: LiveJobContext, result: JobResult) -> str:
        """Upload the other outputs (final=0), then the main one with final=1 (completes)."""
        outputs = checked_outputs(result)
        ctx.stage(Stage.UPLOADING, quiet=outputs_size(outputs) < SMALL_TRANSFER)
        main = next(o for o in outputs if o.name == result.main)
        for output in outputs:
            if output is not main:
                self._upload_with_retries(ctx, output)
        ctx.check()
        sent = self._upload_with_retries(ctx, main, final=True,
                                         detected_language=result.detected_language,
                                         claim_next=self._wants_next())
        ctx.beat.stop()
        if not sent:
            self._with_retries(lambda: self.client.complete(ctx.job, result.main,
                                                            result.detected_language), "complete")
        ctx.main_artifact = result.main
        return "completed"

    def _upload_with_retries(self, ctx: LiveJobContext, output: OutputFile, final: bool = False,
                             detected_language: str | None = None, claim_next: bool = False) -> bool:
        """Upload one output, retrying outages while the lease holds (results stay on disk)."""
        for round_ in range(UPLOAD_ROUNDS):
            try:
                return ctx.upload(output, final=final, detected_language=detected_language,
                                  claim_next=claim_next)
            except CoordinatorUnavailable as exc:
                if round_ + 1 >= UPLOAD_ROUNDS:
                    raise
                delay = getattr(exc, "retry_after", None) or backoff_delay(
                    round_, self.backoff_min * 2, self.backoff_max)
                logger.warning("job %s: upload of %s failed, again in %.1fs: %s",
                               ctx.job.job_id, output.name, delay, exc)
                self._job_sleep(delay)
                ctx.check()

    def _with_retries(self, call: Callable[[], Any], what: str) -> Any:
        """Call, retrying a few times while the coordinator is unreachable."""
        for attempt in range(REPORT_TRIES):
            try:
                return call()
            except CoordinatorUnavailable as exc:
                if attempt + 1 >= REPORT_TRIES:
                    raise
                delay = getattr(exc, "retry_after", None) or backoff_delay(attempt, 0.5, 10.0)
                logger.warning("%s failed, again in %.1fs: %s", what, delay, exc)
                self._retry_sleep(delay)
        return None

    def _end(self, ctx: LiveJobContext, outcome: str, call: Callable[[], Any]) -> str:
        """Stop heartbeating and report the end of an attempt (unless the lease is gone)."""
        ctx.beat.stop()
        if ctx.beat.lease_lost.is_set():
            logger.warning("job %s: lease lost, not reporting %s", ctx.job.job_id, outcome)
            return "lease_lost"
        return self._report(ctx.job, outcome, call)

    def _report(self, job: ClaimedJob, outcome: str, call: Callable[[], Any]) -> str:
        """Send fail/release; a lost lease or an unreachable coordinator is only logged."""
        try:
            self._with_retries(call, f"reporting {outcome} for job {job.job_id}")
        except LeaseLost as exc:
            logger.warning("job %s: lease lost while reporting %s: %s", job.job_id, outcome, exc)
            return "lease_lost"
        except CoordinatorError as exc:
            logger.error("job %s: could not report %s: %s", job.job_id, outcome, exc)
        except Exception:  # a malformed reply must not kill the worker
            logger.exception("job %s: reporting %s failed", job.job_id, outcome)
        return outcome


def _log_end(ctx: LiveJobContext, outcome: str, seconds: float) -> None:
    """The one line that ends a job's log: outcome, duration and (completed) main artifact."""
    main = f" (main artifact {ctx.main_artifact})" if ctx.main_artifact else ""
    logger.info("job %s: %s in %.1fs%s", ctx.job.job_id, outcome, seconds, main)


def _lease_lost(job: ClaimedJob, exc: LeaseLost) -> str:
    """Log what really became of a job whose call got 409, and return that as the outcome."""
    outcome = exc.outcome()
    if outcome == "completed":
        logger.info("job %s: completed (a reply was lost; the coordinator confirms this worker's "
                    "upload completed it)", job.job_id)
    elif outcome == "cancelled":
        logger.info("job %s: cancelled by the client before it completed; output discarded",
                    job.job_id)
    elif outcome == "failed":
        logger.warning("job %s: already failed under this worker's lease: %s", job.job_id, exc)
    else:
        logger.warning("job %s: lease lost (job now %s): %s; discarding the output", job.job_id,
                       exc.job_status or "unknown", exc)
    return outcome
