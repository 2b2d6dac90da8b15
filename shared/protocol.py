"""The coordinator <-> worker <-> client protocol: states, routes, headers and wire types.

Everything that crosses HTTP is defined here once; both sides import it and the worker
never imports the coordinator.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Mapping

PROTOCOL_VERSION = 1

API_KEY_HEADER = "X-API-Key"
LEASE_HEADER = "X-Lease-Token"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SHA256_HEADER = "X-Content-SHA256"
WORKER_SESSION_HEADER = "X-Worker-Session"

# Artifact and file names are only ever used as labels; this pattern keeps them path-safe.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

MAX_CLAIM_WAIT_SECONDS = 20.0
# A batch call (POST BATCH) claims at most this many jobs and carries at most this many results
# and releases; each result is at most MAX_BATCH_RESULT_BYTES (the JSON body stays under 1 MB).
MAX_BATCH_JOBS = 32
MAX_BATCH_RESULT_BYTES = 16 * 1024


class JobStatus(str, Enum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for states a job never leaves on its own."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Stage(str, Enum):
    """What a running job is doing now."""

    DOWNLOADING = "downloading"
    TRANSCRIBING = "transcribing"
    TRANSLATING = "translating"
    SYNTHESIZING = "synthesizing"
    MUXING = "muxing"
    UPLOADING = "uploading"


class JobKind(str, Enum):
    """What a job produces."""

    DUB = "dub"
    SUBTITLE = "subtitle"
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"  # a subtitle (.srt/.vtt) or text file in, the same format translated out
    ECHO = "echo"


# Kinds whose result is in the job's target language: a claim needs a worker that covers it.
LANGUAGE_KINDS = (JobKind.DUB.value, JobKind.SUBTITLE.value, JobKind.TRANSLATE.value)


# Live updates (Server-Sent Events of GET /jobs/<id>/events and /jobs/events): every message is
# `event: job` with an integer `id`; its data is a JSON object: `id` (the job id), `progress`
# (0..1) and these fields of the job view.
JOB_EVENT_FIELDS = ("kind", "status", "stage", "eta_seconds", "message", "queue_position",
                    "waiting_for", "updated_at", "attempts", "max_attempts", "error",
                    "cancel_requested", "main_artifact", "worker_id", "finished_at")


class KeyKind(str, Enum):
    """Who an API key belongs to."""

    WORKER = "worker"
    CLIENT = "client"
    ADMIN = "admin"


class Routes:
    """URL templates of the HTTP API (Flask style placeholders)."""

    HEALTH = "/health"
    JOBS = "/jobs"
    UPLOAD_ASYNC = "/upload-async"
    JOB = "/jobs/<job_id>"
    JOB_RETRY = "/jobs/<job_id>/retry"
    JOB_DOWNLOAD = "/jobs/<job_id>/download"
    JOB_ARTIFACT = "/jobs/<job_id>/artifacts/<name>"
    JOB_INPUT = "/jobs/<job_id>/input"  # the owner's own uploaded input (the web player's original)
    JOB_REDUB = "/jobs/<job_id>/redub"
    JOB_EVENTS = "/jobs/<job_id>/events"  # Server-Sent Events of one job
    JOBS_EVENTS = "/jobs/events"  # ... of all the caller's jobs
    QUEUE_INFO = "/queue/info"
    SEARCH = "/search"  # full-text search of the caller's transcripts
    METRICS = "/metrics"
    # worker side
    NEXT = "/jobs/next"
    CLAIM_NEXT = "/jobs/claim"
    CLAIM = "/jobs/<job_id>/claim"
    DOWNLOAD_INPUT = "/jobs/<job_id>/download-input"
    DOWNLOAD_SUBTITLES = "/jobs/<job_id>/download-subtitles"
    DOWNLOAD_PARENT = "/jobs/<job_id>/download-parent"  # a re-dub's copy of its parent's segments
    HEARTBEAT = "/jobs/<job_id>/heartbeat"
    UPLOAD_RESULT = "/jobs/<job_id>/upload-result"
    UPLOAD_SLOT = "/jobs/<job_id>/upload-slot"
    COMPLETE = "/jobs/<job_id>/complete"
    FAIL = "/jobs/<job_id>/fail"
    RELEASE = "/jobs/<job_id>/release"
    BATCH = "/jobs/batch"  # deliver short jobs' small results, give jobs back, claim the next ones

    @staticmethod
    def fill(template: str, **values: str) -> str:
        """Substitute `<name>` placeholders in a route template."""
        for key, value in values.items():
            template = template.replace(f"<{key}>", str(value))
        return template


class _Wire:
    """Mixin: dict conversion that ignores unknown keys (forward compatible)."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (shallow: the wire fields hold no dataclasses, and a dict
        field is copied one level, which spares asdict's deep copy on every hot-path reply)."""
        return {name: dict(value) if isinstance(value, dict) else value
                for name, value in ((f.name, getattr(self, f.name)) for f in fields(self))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Build from a dict, ignoring keys this version does not know."""
        names = _field_names(cls)
        return cls(**{k: v for k, v in data.items() if k in names})


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> frozenset[str]:
    """The field names of a wire dataclass (read once per class: they never change)."""
    return frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]


# The list fields of WorkerInfo (tuples once parsed).
WORKER_LISTS = ("kinds", "asr_models", "target_languages", "engines")


@dataclass(frozen=True)
class WorkerInfo(_Wire):
    """What a worker advertises when it asks for work: identity and capabilities."""

    worker_id: str
    session_id: str
    hostname: str = ""
    device: str = "cpu"
    memory_mb: int = 0
    gpu_memory_mb: int = 0
    kinds: tuple[str, ...] = (JobKind.ECHO.value,)
    asr_models: tuple[str, ...] = ()
    target_languages: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    version: int = PROTOCOL_VERSION

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkerInfo":
        """Build from JSON, turning lists into tuples."""
        data = {**data, **{k: tuple(str(x) for x in data[k]) for k in WORKER_LISTS if k in data}}
        return super().from_dict(data)


@dataclass(frozen=True)
class ClaimedJob(_Wire):
    """A job as handed to the worker that claimed it; the lease token fences later calls."""

    job_id: str
    kind: str
    lease_token: str
    lease_expires_at: float
    attempt: int
    max_attempts: int
    heartbeat_interval: float
    source_language: str = "auto"
    target_language: str = "es"
    options: dict = field(default_factory=dict)
    input_name: str = ""
    input_size: int | None = None
    input_sha256: str | None = None
    source_url: str | None = None
    asr_model: str | None = None
    # The coordinator's cap on a source_url download (None: the worker's own cap only).
    max_source_bytes: int | None = None
    # A dub's own subtitles (GET DOWNLOAD_SUBTITLES); None: the job has none. Their language and
    # role are in options["subtitles_language"] and options["subtitles"] ("source"/"target").
    subtitles_size: int | None = None
    subtitles_sha256: str | None = None
    # Object storage (the coordinator's STORAGE_URL is s3://...): presigned GET URLs of the input
    # and subtitles (GET DOWNLOAD_INPUT / DOWNLOAD_SUBTITLES answers 302 to a fresh one), and
    # whether results go straight to the store (POST UPLOAD_SLOT). None / False: through the
    # coordinator, as with local storage.
    input_url: str | None = None
    subtitles_url: str | None = None
    direct_upload: bool = False
    # A small uploaded input itself, base64 (INLINE_INPUT_KB): no download round trip. None: fetch it.
    input_inline: str | None = None


@dataclass(frozen=True)
class SlotRequest(_Wire):
    """A worker asks where to put a result (object storage): a new slot, or fresh URLs for the
    slot `key` / `upload_id` it already uploads to (parts already stored are kept)."""

    name: str
    size: int
    sha256: str
    content_type: str = "application/octet-stream"
    key: str | None = None
    upload_id: str | None = None


@dataclass(frozen=True)
class UploadSlot(_Wire):
    """Presigned PUT URLs for one result: one URL (`upload_id` None) or one per `part_size` part
    of a multipart upload (`urls[0]` is part 1). They stop working `expires_in` seconds after
    this reply; POST UPLOAD_SLOT with `key` and `upload_id` renews them."""

    key: str
    urls: tuple[str, ...]
    part_size: int
    expires_in: float
    upload_id: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UploadSlot":
        """Build from JSON, turning the URL list into a tuple."""
        slot = super().from_dict(data)
        return dataclasses.replace(slot, urls=tuple(str(u) for u in slot.urls))


@dataclass(frozen=True)
class Heartbeat(_Wire):
    """Progress report sent by a worker; renews the lease."""

    stage: str | None = None
    progress: float | None = None
    message: str | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class HeartbeatReply(_Wire):
    """The control channel: cancellation and the renewed lease."""

    cancel_requested: bool
    lease_expires_at: float
    heartbeat_interval: float


@dataclass(frozen=True)
class FailReport(_Wire):
    """Why an attempt failed and whether trying again could help."""

    reason: str
    retryable: bool = True


@dataclass(frozen=True)
class ArtifactInfo(_Wire):
    """A stored result file of a job."""

    name: str
    size: int
    sha256: str
    content_type: str = "application/octet-stream"
    attempt: int = 0


@dataclass(frozen=True)
class HeldResult(_Wire):
    """The only output of a short job, held by its worker and delivered in a batch call, where
    it completes the job under the job's lease as a completing upload-result would."""

    job_id: str
    lease_token: str
    name: str
    data: str  # the bytes, base64 (at most MAX_BATCH_RESULT_BYTES)
    sha256: str
    content_type: str = "application/octet-stream"
    detected_language: str | None = None


@dataclass(frozen=True)
class LeaseRef(_Wire):
    """A job under a lease, named in a batch call (to give it back)."""

    job_id: str
    lease_token: str


def is_valid_artifact_name(name: str) -> bool:
    """True if `name` is safe to use as an artifact label."""
    # fullmatch: `$` alone would also match before a final newline ("result\n")
    return bool(ARTIFACT_NAME_RE.fullmatch(name or "")) and ".." not in name
