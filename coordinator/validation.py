"""Turn untrusted request fields into typed values; every failure is a 4xx error."""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from shared.glossary import parse_glossary
from shared.languages import AUTO, is_known
from shared.protocol import (ARTIFACT_NAME_RE, WORKER_LISTS, FailReport, Heartbeat, JobKind, Stage,
                             WorkerInfo, is_valid_artifact_name)

from shared.netguard import UnsafeURL

from .callbacks import callback_guard
from .errors import BadRequest, ValidationFailed

# The limits and patterns of the API's fields. `coordinator.schemas` builds the OpenAPI document
# from these same names, so the document says exactly what is checked here. Patterns are written
# in the subset Python and ECMA-262 (JSON Schema) read the same way, and always fully matched.
MAX_OPTIONS_BYTES = 16 * 1024
MAX_URL_LENGTH = 2048
HTTP_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://"  # necessary, not sufficient: see parse_url
PRIORITY_RANGE = (-100, 100)
ATTEMPTS_RANGE = (1, 10)
QUERY_INT_MAX = 999_999_999  # a query integer has at most nine digits
LIMIT_RANGE = (1, QUERY_INT_MAX)
OFFSET_RANGE = (0, QUERY_INT_MAX)
CLAIM_WAIT_RANGE = (0.0, 1e9)  # then capped at MAX_CLAIM_WAIT_SECONDS
PROGRESS_RANGE = (-1e9, 1e9)  # then clamped to 0..100
ETA_RANGE = (-1e12, 1e12)  # then clamped at 0
TRUE_SPELLINGS, FALSE_SPELLINGS = ("1", "true", "yes"), ("0", "false", "no")
BOOL_SPELLINGS = TRUE_SPELLINGS + FALSE_SPELLINGS
MAX_CONTENT_TYPE = 128
MIME_PATTERN = (r"^[A-Za-z0-9][A-Za-z0-9_!#$&^.+-]{0,62}/[A-Za-z0-9][A-Za-z0-9_!#$&^.+-]{0,62}"
                r"(; ?[A-Za-z0-9._-]{1,32}=[A-Za-z0-9._-]{1,64}){0,3}$")
SHA256_PATTERN = r"^[0-9a-f]{64}$"
LABEL_PATTERN = ARTIFACT_NAME_RE.pattern
# Worker capability labels: any text without control characters.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_LABEL_CHARS = 128
MAX_WORKER_LIST = 256
_INT_RE = re.compile(r"^[+-]?\d{1,9}$")
_MIME_RE = re.compile(MIME_PATTERN)
_PRINTABLE_RE = re.compile(PRINTABLE_PATTERN)


@dataclass(frozen=True)
class NewJob:
    """A validated job submission (the input file, if any, is handled separately)."""

    kind: str = JobKind.DUB.value
    source_language: str = AUTO
    target_language: str = "es"
    priority: int = 0
    callback_url: str | None = None
    asr_model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    max_attempts: int | None = None
    source_url: str | None = None
    input_name: str = ""


def clean_text(value: Any, max_length: int) -> str:
    """Printable text: control characters (NUL included) dropped, then truncated."""
    text = str(value)
    if not text.isprintable():  # printable text has no category-C character: nothing to drop
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return text[:max_length]


def display_name(raw: Any) -> str:
    """A client file name reduced to a harmless label (never used as a path)."""
    if not raw:
        return ""
    base = re.split(r"[\\/]", str(raw))[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:255].strip().lstrip(".")
    return base or "input"


def parse_int(value: Any, name: str, lo: int, hi: int) -> int:
    """An integer within [lo, hi], from JSON or from a query/form string."""
    if isinstance(value, str) and _INT_RE.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{name} must be an integer", field=name)
    if not lo <= value <= hi:
        raise ValidationFailed(f"{name} must be between {lo} and {hi}", field=name)
    return value


def parse_number(value: Any, name: str, lo: float, hi: float) -> float:
    """A finite number within [lo, hi]."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValidationFailed(f"{name} must be a number", field=name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationFailed(f"{name} must be a finite number", field=name)
    if not lo <= value <= hi:
        raise ValidationFailed(f"{name} must be between {lo} and {hi}", field=name)
    return float(value)


def parse_bool(value: Any, name: str) -> bool:
    """A boolean from JSON or from '0'/'1'/'true'/'false'."""
    if isinstance(value, bool):
        return value
    spelled = value.strip().lower() if isinstance(value, str) else None
    if spelled in BOOL_SPELLINGS:
        return spelled in TRUE_SPELLINGS
    raise ValidationFailed(f"{name} must be a boolean", field=name)


def parse_url(value: Any, name: str) -> str:
    """An absolute http(s) URL."""
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH or clean_text(value, MAX_URL_LENGTH) != value:
        raise ValidationFailed(f"{name} must be an http(s) URL", field=name)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationFailed(f"{name} is not a valid URL", field=name) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or " " in value:
        raise ValidationFailed(f"{name} must be an http(s) URL", field=name)
    return value


def parse_options(value: Any) -> dict[str, Any]:
    """A JSON object of at most 16 KB (a JSON string in query/form fields)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ValidationFailed("options must be a JSON object", field="options") from None
    if not isinstance(value, dict):
        raise ValidationFailed("options must be a JSON object", field="options")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        raise ValidationFailed("options must be plain JSON", field="options") from None
    if len(encoded.encode()) > MAX_OPTIONS_BYTES:
        raise ValidationFailed("options must be at most 16 KB", field="options")
    if "redub" in value:  # set only by POST /jobs/<id>/redub (coordinator.redub)
        raise ValidationFailed("options.redub is reserved: re-dub with POST /jobs/{id}/redub",
                               field="options.redub")
    try:
        parse_glossary(value.get("glossary"))
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="options.glossary") from None
    return value


def parse_language(value: Any, name: str, allow_auto: bool) -> str:
    """A known ISO 639-1 code (or 'auto' where allowed)."""
    if not isinstance(value, str) or not is_known(value.strip().lower(), allow_auto=allow_auto):
        raise ValidationFailed(f"{name}: unknown language {str(value)[:16]!r}", field=name)
    return value.strip().lower()


def parse_kind(value: Any) -> str:
    """One of the job kinds."""
    kinds = {k.value for k in JobKind}
    if not isinstance(value, str) or value not in kinds:
        raise ValidationFailed(f"kind must be one of {sorted(kinds)}", field="kind")
    return value


def parse_label(value: Any, name: str) -> str:
    """A short path-safe identifier (model names, artifact names)."""
    if not isinstance(value, str) or not is_valid_artifact_name(value):
        raise ValidationFailed(f"{name} must match [A-Za-z0-9][A-Za-z0-9._-]*", field=name)
    return value


def parse_filename(value: Any) -> str:
    """The input's display name: a string (422 otherwise), reduced to a label."""
    if value is not None and not isinstance(value, str):
        raise ValidationFailed("filename must be a string", field="filename")
    return display_name(value)


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that carry a value (null and "" mean: use the default)."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def parse_callback_url(value: Any, allow_private: bool = False) -> str:
    """An http(s) callback URL whose host is not, and does not resolve to, a refused address.

    A literal refused IP, a `localhost` name or a name resolving to any refused address is a 422
    (unless `allow_private`); a name that does not resolve now is accepted (the sender checks
    the address again when it connects).
    """
    url = parse_url(value, "callback_url")
    if allow_private:  # every address is allowed: nothing to look up (a slow resolver would stall)
        return url
    try:
        callback_guard(allow_private).check_url(url, unresolvable_ok=True)
    except UnsafeURL as exc:
        raise ValidationFailed(str(exc), field="callback_url") from None
    return url


def parse_submission(fields: Mapping[str, Any], max_attempts_default: int, *,
                     allow_private_callbacks: bool = False) -> NewJob:
    """Validate the fields of `POST /jobs` (JSON values or query/form strings).

    `allow_private_callbacks` (config ALLOW_PRIVATE_CALLBACKS) lets callback_url reach
    loopback, private and other non-public addresses.
    """
    present = _present(fields)
    get = present.get
    asr_model = get("asr_model")
    callback_url = get("callback_url")
    return NewJob(
        kind=parse_kind(get("kind", JobKind.DUB.value)),
        source_language=parse_language(get("source_language", AUTO), "source_language", True),
        target_language=parse_language(get("target_language", "es"), "target_language", False),
        priority=parse_int(get("priority", 0), "priority", *PRIORITY_RANGE),
        callback_url=(parse_callback_url(callback_url, allow_private_callbacks)
                      if callback_url is not None else None),
        asr_model=parse_label(asr_model, "asr_model") if asr_model is not None else None,
        options=parse_options(get("options", {})),
        max_attempts=parse_int(get("max_attempts", max_attempts_default), "max_attempts",
                               *ATTEMPTS_RANGE),
        source_url=parse_url(get("source_url"), "source_url") if "source_url" in present else None,
        input_name=parse_filename(get("filename")),
    )


def parse_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header: printable, at most 255 characters."""
    if value is None or value == "":
        return None
    if len(value) > 255 or clean_text(value, 255) != value:
        raise ValidationFailed("Idempotency-Key must be at most 255 printable characters")
    return value


def parse_csv(value: str | None) -> tuple[str, ...]:
    """A comma separated query parameter as a tuple of non-empty items."""
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _encodable(value: str) -> bool:
    """False for text with lone surrogates (a JSON "\\ud800"), which no database can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_clean_label(value: Any) -> bool:
    """A short string without control or unpaired surrogate characters."""
    return (isinstance(value, str) and len(value) <= MAX_LABEL_CHARS
            and _PRINTABLE_RE.fullmatch(value) is not None and _encodable(value))


def _check_worker_fields(data: Mapping[str, Any]) -> None:
    """Type-check the WorkerInfo fields the claim filters and records rely on."""
    for name in WORKER_LISTS:
        items = data.get(name, ())
        if not isinstance(items, (list, tuple)) or not all(_is_clean_label(x) for x in items):
            raise ValidationFailed(f"worker.{name} must be a list of short printable strings", field=name)
        if len(items) > MAX_WORKER_LIST:
            raise ValidationFailed(f"worker.{name} is too long", field=name)
    for name in ("worker_id", "session_id", "hostname", "device"):
        if name in data and not isinstance(data[name], str):
            raise ValidationFailed(f"worker.{name} must be a string", field=name)
    for name in ("memory_mb", "gpu_memory_mb", "version"):
        if name in data and (isinstance(data[name], bool) or not isinstance(data[name], int)):
            raise ValidationFailed(f"worker.{name} must be an integer", field=name)


def parse_worker_info(data: Any, session_header: str | None) -> WorkerInfo:
    """A WorkerInfo from JSON; the session defaults to the X-Worker-Session header."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationFailed("worker must be a JSON object", field="worker")
    _check_worker_fields(data)
    return WorkerInfo.from_dict({
        **data,
        "worker_id": clean_text(data.get("worker_id", ""), 128) or "anonymous",
        "session_id": clean_text(data.get("session_id") or session_header or "", 128),
        "hostname": clean_text(data.get("hostname", ""), 255),
        "device": clean_text(data.get("device", "cpu"), 64),
    })


def parse_heartbeat(data: Mapping[str, Any]) -> Heartbeat:
    """A Heartbeat with its values checked and clamped."""
    beat = Heartbeat.from_dict(data)
    stage = beat.stage
    if stage is not None and (not isinstance(stage, str) or stage not in {s.value for s in Stage}):
        raise ValidationFailed(f"unknown stage {str(stage)[:32]!r}", field="stage")
    progress = None if beat.progress is None else parse_number(beat.progress, "progress", *PROGRESS_RANGE)
    eta = None if beat.eta_seconds is None else parse_number(beat.eta_seconds, "eta_seconds", *ETA_RANGE)
    return Heartbeat(
        stage=stage,
        progress=None if progress is None else min(100.0, max(0.0, progress)),
        message=None if beat.message is None else clean_text(beat.message, 1000),
        eta_seconds=None if eta is None else max(0.0, eta),
    )


def parse_fail_report(data: Mapping[str, Any]) -> FailReport:
    """A FailReport; the reason is cleaned and bounded."""
    report = FailReport.from_dict({"reason": "", **data})
    retryable = parse_bool(report.retryable, "retryable")
    reason = clean_text(report.reason, 2000) if report.reason is not None else ""
    return FailReport(reason=reason or "worker reported failure", retryable=retryable)


def parse_content_type(value: Any) -> str:
    """A MIME type for an artifact (default application/octet-stream)."""
    if value is None or value == "":
        return "application/octet-stream"
    if not isinstance(value, str) or len(value) > MAX_CONTENT_TYPE or not _MIME_RE.fullmatch(value):
        raise ValidationFailed("content_type must be a MIME type like video/mp4", field="content_type")
    return value


def parse_sha256(value: str | None) -> str | None:
    """An optional hex SHA-256 (X-Content-SHA256)."""
    if not value:
        return None
    value = value.strip().lower()
    if not re.fullmatch(SHA256_PATTERN, value):
        raise BadRequest("X-Content-SHA256 must be 64 hex characters")
    return value
