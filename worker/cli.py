"""`worker`: pull jobs from a dubfleet coordinator and run them (also `python -m worker`)."""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path

import click

from shared.protocol import MAX_BATCH_JOBS, MAX_CLAIM_WAIT_SECONDS
from worker.capabilities import build_worker_info
from worker.client import CoordinatorClient
from worker.errors import CoordinatorError, UnsupportedJob
from worker.loop import Worker
from worker.pipelines import PipelineRegistry, default_registry
from worker.safefetch import DEFAULT_MAX_SOURCE_MB

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def default_worker_id() -> str:
    """A readable label: HOSTNAME-PID (the session id is what identifies this process)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def setup_logging(level: str) -> None:
    """Log to stderr with timestamps."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parse_kinds(value: str | None) -> list[str] | None:
    """`echo,dub` -> ["echo", "dub"]; empty -> None (everything available)."""
    kinds = [k.strip().lower() for k in (value or "").split(",") if k.strip()]
    return list(dict.fromkeys(kinds)) or None


def load_registry(kinds: str | None) -> PipelineRegistry:
    """The pipelines to advertise, or a usage error naming what is missing."""
    try:
        return default_registry(parse_kinds(kinds))
    except UnsupportedJob as exc:
        raise click.BadParameter(str(exc), param_hint="--kinds") from exc


@click.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("--api-url", envvar="DUBFLEET_API_URL", help="Coordinator base URL.")
@click.option("--api-key", envvar=["WORKER_API_KEY", "DUBFLEET_API_KEY"],
              help="Worker API key (dfw_...).")
@click.option("--poll-interval", type=click.FloatRange(0), default=5.0,
              envvar="DUBFLEET_POLL_INTERVAL",
              help="Seconds between polls when the server answers 'no job' at once (jittered).")
@click.option("--worker-id", envvar="DUBFLEET_WORKER_ID",
              help="Label shown in job views [default: HOSTNAME-PID].")
@click.option("--once", is_flag=True, envvar="DUBFLEET_ONCE",
              help="Run at most one job, exit when the queue is empty.")
@click.option("--burst", is_flag=True, envvar="DUBFLEET_BURST",
              help="Run jobs until the queue is empty, then exit.")
@click.option("--max-jobs", type=click.IntRange(1), envvar="DUBFLEET_MAX_JOBS",
              help="Exit after this many jobs.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="DUBFLEET_WORK_DIR",
              default=str(Path(tempfile.gettempdir()) / "dubfleet-worker"),
              help="Scratch space for inputs and results (each job's folder is removed after).")
@click.option("--kinds", envvar="DUBFLEET_WORKER_KINDS",
              help="Comma-separated job kinds to advertise, e.g. 'echo' [default: all available].")
@click.option("--claim-wait", type=click.FloatRange(0, MAX_CLAIM_WAIT_SECONDS), default=20.0,
              envvar="DUBFLEET_CLAIM_WAIT",
              help="Long-poll seconds per claim (0: plain polling).")
@click.option("--max-transfer-rate", type=click.FloatRange(0), default=0.0,
              envvar="DUBFLEET_MAX_TRANSFER_RATE",
              help="Cap downloads and uploads at this many MiB/s (0: unlimited).")
@click.option("--allow-downloads", is_flag=True, envvar="DUBFLEET_ALLOW_DOWNLOADS",
              help="Let jobs name hub models (e.g. large-v3) that this worker may download. "
                   "Off by default: only models installed from packages are used.")
@click.option("--allow-private-urls", is_flag=True, envvar="DUBFLEET_ALLOW_PRIVATE_URLS",
              show_envvar=True,
              help="Let source_url jobs fetch from loopback, private, link-local and other "
                   "non-public addresses (lab networks). Off by default: such URLs, and "
                   "redirects to them, fail the job.")
@click.option("--max-source-mb", type=click.IntRange(1), default=DEFAULT_MAX_SOURCE_MB,
              envvar="DUBFLEET_MAX_SOURCE_MB", show_envvar=True,
              help="Largest source_url download in MiB (the coordinator's MAX_SOURCE_MB also "
                   "applies; the smaller wins).")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH_JOBS), default=1, envvar="DUBFLEET_BATCH",
              show_envvar=True,
              help="For streams of short jobs: hold the small result of a job that ran under "
                   "0.1 s and deliver up to this many in one call that also claims the next ones "
                   "(1: off; a longer job gives the jobs claimed ahead back at once).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="INFO", envvar="DUBFLEET_LOG_LEVEL", help="Logging level.")
@click.pass_context
def main(ctx: click.Context, api_url: str | None, api_key: str | None, poll_interval: float,
         worker_id: str | None, once: bool, burst: bool, max_jobs: int | None, work_dir: Path,
         kinds: str | None, claim_wait: float, max_transfer_rate: float, allow_downloads: bool,
         allow_private_urls: bool, max_source_mb: int, batch: int, log_level: str) -> None:
    """Pull jobs from a dubfleet coordinator and run them until stopped.

    Ctrl-C / SIGTERM once: finish the current job, then exit. Twice: give the job back, exit.
    """
    setup_logging(log_level)
    if ctx.invoked_subcommand is not None:
        return
    if not api_url:
        raise click.UsageError("missing --api-url (or DUBFLEET_API_URL)")
    if not api_key:
        raise click.UsageError("missing --api-key (or WORKER_API_KEY / DUBFLEET_API_KEY)")
    if allow_downloads:  # read by the media pipeline (never by a job's own options)
        os.environ["DUBFLEET_ALLOW_DOWNLOADS"] = "1"
    session_id = uuid.uuid4().hex
    registry = load_registry(kinds)
    info = build_worker_info(worker_id or default_worker_id(), session_id, registry.kinds())
    client = CoordinatorClient(api_url, api_key, session_id,
                               max_rate=max_transfer_rate * MIB or None,
                               allow_private_urls=allow_private_urls,
                               max_source_bytes=max_source_mb * MIB)
    worker = Worker(client, info, registry, work_dir, poll_interval=poll_interval,
                    claim_wait=claim_wait, batch=batch)
    try:
        worker.work(burst=burst or once, max_jobs=1 if once else max_jobs)
    except CoordinatorError as exc:
        raise click.ClickException(f"coordinator refused this worker: {exc}") from exc
    finally:
        client.close_all()


try:  # the `worker models ...` commands live with the model registry
    from worker.models_cli import models

    main.add_command(models)
except ImportError:
    pass
