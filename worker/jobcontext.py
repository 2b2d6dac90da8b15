"""The `JobContext` the worker loop hands to pipelines: progress, cancellation, early artifacts."""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from shared.protocol import ClaimedJob, Stage
from worker.context import OutputFile
from worker.errors import JobCancelled, LeaseLost, ShutdownRequested
from worker.heartbeat import HeartbeatThread
from worker.transfer import file_sha256, human_bytes, read_small

logger = logging.getLogger(__name__)


class LiveJobContext:
    """A running job as its pipeline sees it; fields go to the heartbeat thread."""

    def __init__(self, job: ClaimedJob, work_dir: Path, client: Any, beat: HeartbeatThread,
                 abort: threading.Event):
        self.job = job
        self.work_dir = work_dir
        self.client = client
        self.beat = beat
        self.abort = abort
        self.current_stage: Stage | None = None
        self.percent = 0.0
        self.published: dict[str, str] = {}
        # A dub's own subtitles, downloaded next to the input (None: the job has none).
        self.subtitles_path: Path | None = None
        # A re-dub's copy of its parent's segment bundle (None: not a re-dub).
        self.parent_path: Path | None = None
        # The main artifact, once the job completed with it (for the job's last log line).
        self.main_artifact: str | None = None

    def stage(self, stage: Stage, message: str | None = None, *, quiet: bool = False) -> None:
        """Enter a stage; an immediate (rate-limited) beat tells the coordinator.

        `quiet` logs it at DEBUG only: the loop's transfer stages when there is next to nothing
        to transfer (a tiny job's log is its claimed and completed lines)."""
        self.check()
        self.current_stage = Stage(stage)
        logger.log(logging.DEBUG if quiet else logging.INFO, "job %s: stage %s%s",
                   self.job.job_id, self.current_stage.value, f" ({message})" if message else "")
        # "" clears the previous stage's message on the coordinator (None means "unchanged").
        self.beat.update(stage=self.current_stage.value, message=message or "",
                         eta_seconds=None, urgent=True)

    def progress(self, percent: float, message: str | None = None,
                 eta_seconds: float | None = None) -> None:
        """Report overall progress; it never goes backwards."""
        self.percent = max(self.percent, min(100.0, max(0.0, float(percent))))
        fields: dict[str, Any] = {"progress": round(self.percent, 2), "eta_seconds": eta_seconds}
        if message is not None:
            fields["message"] = message
        self.beat.update(**fields)

    def message(self, text: str) -> None:
        """Set the status message only."""
        self.beat.update(message=text)

    def check(self) -> None:
        """Raise if the lease is lost, the job cancelled, or the worker must stop now."""
        if self.beat.lease_lost.is_set():
            lost = self.beat.lost
            raise LeaseLost(f"job {self.job.job_id}: lease lost",
                            lost.job_status if lost else None, bool(lost and lost.this_lease))
        if self.beat.cancel_requested.is_set():
            raise JobCancelled(f"job {self.job.job_id} was cancelled")
        if self.abort.is_set():
            raise ShutdownRequested(f"worker stopping: job {self.job.job_id} released")

    def publish(self, output: OutputFile) -> None:
        """Upload a partial artifact now (final=0) so clients can fetch it before the end."""
        self.upload(output)

    def upload(self, output: OutputFile, final: bool = False,
               detected_language: str | None = None, claim_next: bool = False) -> bool:
        """Upload one output unless the same content was already published under its name.

        Returns False when it was skipped (already uploaded). `final` completes the job, and
        with `claim_next` also claims the worker's next job (the client's `handover`).
        """
        self.check()
        data = read_small(output.path)  # a small output is read once: hashed and sent from memory
        sha = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(output.path)
        if self.published.get(output.name) == sha:
            logger.debug("job %s: %s already uploaded", self.job.job_id, output.name)
            return False
        self.client.upload_result(self.job, output.path, output.name, final=final,
                                  content_type=output.content_type, check=self.check,
                                  on_progress=self.transfer_progress(f"uploading {output.name}"),
                                  sha256=sha, detected_language=detected_language,
                                  claim_next=claim_next, data=data)
        self.published[output.name] = sha
        return True

    def transfer_progress(self, label: str):
        """A callback that puts transfer byte counts into the status message."""
        def report(done: int, total: int | None) -> None:
            size = f"{human_bytes(done)} of {human_bytes(total)}" if total else human_bytes(done)
            self.beat.update(message=f"{label}: {size}")
        return report
