"""The `echo` pipeline: copies the input to the `result` artifact (tests and smoke checks).

Test options: `{"delay": seconds}` waits before copying (checking for cancellation every 0.1 s),
`{"fail": "permanent" | "retryable"}` fails the attempt the given way.
"""
from __future__ import annotations

import hashlib
import logging
import mimetypes
import time
from pathlib import Path

from worker.context import JobContext, JobResult, OutputFile
from worker.errors import JobFailed, PermanentJobError

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
MAX_DELAY = 3600.0


class EchoPipeline:
    """Copy the input byte for byte, reporting progress and honouring cancellation."""

    def __init__(self, chunk_size: int = CHUNK_SIZE, tick: float = 0.1):
        self.chunk_size = chunk_size
        self.tick = tick

    def run(self, ctx: JobContext, input_path: Path) -> JobResult:
        """Copy `input_path` to `<work_dir>/result<suffix>` and return it as `result`."""
        options = ctx.job.options or {}
        self._fail_if_asked(options.get("fail"))
        self._delay(ctx, options.get("delay"))
        out = ctx.work_dir / f"result{input_path.suffix}"
        total = input_path.stat().st_size
        digest = self._copy(ctx, input_path, out, total)
        content_type = mimetypes.guess_type(ctx.job.input_name or out.name)[0]
        output = OutputFile("result", out, content_type or "application/octet-stream")
        logger.debug("job %s: echoed %d bytes, sha256 %s", ctx.job.job_id, total, digest)
        return JobResult(outputs=(output,), main="result",
                         info={"sha256": digest, "size": total})

    @staticmethod
    def _fail_if_asked(mode: object) -> None:
        """Fail on purpose when the job's options ask for it."""
        if mode == "permanent":
            raise PermanentJobError("echo: permanent failure requested by the job options")
        if mode is not None:
            raise JobFailed(f"echo: {mode} failure requested by the job options")

    def _delay(self, ctx: JobContext, seconds: object) -> None:
        """Wait `seconds` in small steps, checking for cancellation and reporting progress."""
        try:
            total = min(MAX_DELAY, max(0.0, float(seconds or 0)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise PermanentJobError(f"echo: bad delay option {seconds!r}") from None
        end = time.monotonic() + total
        while (left := end - time.monotonic()) > 0:
            ctx.check()
            ctx.progress(50.0 * (1 - left / total), "waiting", eta_seconds=left)
            time.sleep(min(self.tick, left))

    def _copy(self, ctx: JobContext, src: Path, dest: Path, total: int) -> str:
        """Copy in chunks, checking for cancellation between chunks; return the sha256."""
        digest = hashlib.sha256()
        done = 0
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            for chunk in iter(lambda: fin.read(self.chunk_size), b""):
                ctx.check()
                fout.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                ctx.progress(100.0 * done / total if total else 100.0, "copying")
        ctx.check()
        ctx.progress(100.0, "copied")
        return digest.hexdigest()
