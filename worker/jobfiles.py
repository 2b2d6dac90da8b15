"""A job's files in the worker: its folder, its input's name, and the outputs a pipeline returns."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from shared.files import make_folder
from shared.protocol import ClaimedJob, is_valid_artifact_name
from worker.context import JobResult, OutputFile


def make_job_folder(folder: Path) -> None:
    """Create a job's folder with one mkdir (the worker's own folder too, the first time).

    An existing folder (the same attempt after a worker crash) is reused: downloads resume.
    """
    make_folder(folder)


def redub_bundle(job: ClaimedJob) -> str | None:
    """The sha256 of a re-dub's copy of its parent's segment bundle (None: not a re-dub)."""
    redub = (job.options or {}).get("redub")
    if isinstance(redub, dict) and redub.get("bundle_sha256"):
        return str(redub["bundle_sha256"])
    return None


def checked_outputs(result: JobResult) -> tuple[OutputFile, ...]:
    """The result's outputs, after checking names, files and that the main one is present."""
    names = [o.name for o in result.outputs]
    bad = [n for n in names if not is_valid_artifact_name(n)]
    if bad or len(set(names)) != len(names) or result.main not in names:
        raise ValueError(f"pipeline returned bad outputs {names} (main {result.main!r})")
    missing = [str(o.path) for o in result.outputs if not Path(o.path).is_file()]
    if missing:
        raise FileNotFoundError(f"pipeline outputs missing on disk: {missing}")
    return result.outputs


def outputs_size(outputs: tuple[OutputFile, ...]) -> int:
    """The total size of the outputs in bytes."""
    return sum(os.stat(o.path).st_size for o in outputs)


def input_filename(job: ClaimedJob) -> str:
    """`input` plus a safe suffix from the input name or source URL (never the name itself)."""
    name = job.input_name or (urlsplit(job.source_url).path if job.source_url else "")
    suffix = Path(name).suffix.lower()
    return "input" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else "")
