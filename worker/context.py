"""The interface between the worker loop and the job pipelines (echo, transcribe, subtitle, dub).

A pipeline receives a `JobContext` and the downloaded input, writes its outputs under
`ctx.work_dir` and returns a `JobResult`. The work dir is the job's own folder, removed after the
job; the loop's downloads are in it too (`input.<ext>`, `subtitles.txt`, `parent_segments.tar`),
so a pipeline names its files otherwise. It reports progress through the context, calls
`ctx.check()` between units of work (raises `JobCancelled` / `LeaseLost` / `ShutdownRequested`),
and may `ctx.publish()` partial artifacts (transcript, subtitles) before it finishes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.protocol import ClaimedJob, Stage


@dataclass(frozen=True)
class OutputFile:
    """A file a pipeline produced, to be uploaded as the artifact `name`."""

    name: str
    path: Path
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class JobResult:
    """What a pipeline returns: its artifacts and which one is the main result."""

    outputs: tuple[OutputFile, ...]
    main: str
    detected_language: str | None = None
    info: dict = field(default_factory=dict)


class JobContext(Protocol):
    """What the loop gives a pipeline while a job runs."""

    job: ClaimedJob
    work_dir: Path
    # A dub's own subtitles (the job's `subtitles_sha256` is set), downloaded by the loop; a
    # context without the attribute, or None, means none (see worker.stages.user_subtitles).
    subtitles_path: Path | None

    def stage(self, stage: Stage, message: str | None = None) -> None:
        """Enter a stage (progress stays monotonic across stages)."""

    def progress(self, percent: float, message: str | None = None,
                 eta_seconds: float | None = None) -> None:
        """Report overall progress 0-100 (sent with the next heartbeat)."""

    def check(self) -> None:
        """Raise if the job was cancelled, its lease lost, or the worker must stop now."""

    def publish(self, output: OutputFile) -> None:
        """Upload a partial artifact now (transcript, subtitles) so clients can fetch it early."""


class Pipeline(Protocol):
    """Runs one job kind."""

    def run(self, ctx: JobContext, input_path: Path) -> JobResult:
        """Process the input and return the outputs."""
