"""A job context for running a worker pipeline in the test process: the slice of
`worker.jobcontext.JobContext` the pipelines use, with stage, progress and cancel checks doing
nothing and published artifacts recorded (shared by the media tests that run a whole job)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.protocol import ClaimedJob


class RecordingContext:
    """A claimed job of `kind` working in `work_dir`; `published` lists the artifact names."""

    def __init__(self, work_dir: Path, kind: str, options: dict[str, Any] | None = None,
                 target_language: str = "es", job_id: str = "media-test"):
        self.job = ClaimedJob(job_id=job_id, kind=kind, lease_token="t", lease_expires_at=0,
                              attempt=1, max_attempts=1, heartbeat_interval=10,
                              source_language="en", target_language=target_language,
                              options=dict(options or {}))
        self.work_dir = work_dir
        self.published: list[str] = []

    def stage(self, stage: Any, message: str | None = None) -> None:
        """No live progress here."""

    def progress(self, percent: float, message: str | None = None,
                 eta_seconds: float | None = None) -> None:
        """No live progress here."""

    def check(self) -> None:
        """Never cancelled."""

    def publish(self, output: Any) -> None:
        """Record the artifact's name (nothing is uploaded)."""
        self.published.append(output.name)
