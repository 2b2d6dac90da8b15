"""JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) of the HTTP API's bodies and fields.

Derived from the definitions the code runs on, never written a second time: the wire
dataclasses and enums of `shared.protocol`, the language list, the glossary limits and the
limits and patterns `coordinator.validation` enforces. `coordinator.openapi` puts them into the
document served at `/openapi.json`.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from shared import glossary
from shared.languages import AUTO, LANGUAGES
from shared.protocol import (JOB_EVENT_FIELDS, MAX_BATCH_JOBS, MAX_BATCH_RESULT_BYTES, MAX_CLAIM_WAIT_SECONDS,
                             ArtifactInfo, ClaimedJob, FailReport, HeldResult, Heartbeat, HeartbeatReply,
                             JobKind, JobStatus, LeaseRef, SlotRequest, Stage, UploadSlot, WorkerInfo)

from . import batch, direct, search_query as sq, validation as v
from .storage import _JOB_ID_RE  # the ids every view accepts (storage.is_job_id)

Schema = dict[str, Any]

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


def ref(name: str) -> Schema:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or null."""
    if "type" in schema and not {"$ref", "not", "anyOf"} & schema.keys():
        types_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        widened = {**schema, "type": [*types_, "null"]}
        if "enum" in schema:
            widened["enum"] = [*schema["enum"], None]
        return widened
    return {"anyOf": [schema, {"type": "null"}]}


def enum_of(values: Any) -> Schema:
    """A string enum from an Enum class or an iterable of strings."""
    return {"type": "string", "enum": [getattr(x, "value", x) for x in values]}


def _hint_schema(hint: Any) -> Schema:
    """The schema of a dataclass field's type hint."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = _hint_schema(members[0])
        return nullable(inner) if type(None) in args else inner
    if origin is tuple:
        return {"type": "array", "items": _hint_schema(args[0])}
    if origin is dict:
        return {"type": "object"}
    return {"type": _SCALARS[hint]}


def dataclass_schema(cls: type, *, reply: bool, description: str = "",
                     **constraints: Schema) -> Schema:
    """An object schema from a wire dataclass: its fields and their types, plus `constraints`
    per field (the validators' limits). A reply always carries every field and nothing else; a
    request may leave out any field with a default, and unknown keys are ignored."""
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    props = {f.name: {**_hint_schema(hints[f.name]), **constraints.get(f.name, {})} for f in fields}
    required = [f.name for f in fields if reply or (f.default is dataclasses.MISSING
                                                     and f.default_factory is dataclasses.MISSING)]
    schema: Schema = {"type": "object", "properties": props, "required": required,
                      "description": description or (cls.__doc__ or "").strip()}
    if reply:
        schema["additionalProperties"] = False
    return schema


# --- fields ------------------------------------------------------------------------------------

LANGUAGE = enum_of(LANGUAGES)
SOURCE_LANGUAGE = enum_of([AUTO, *LANGUAGES])
LABEL: Schema = {"type": "string", "pattern": v.LABEL_PATTERN, "not": {"pattern": r"\.\."},
                 "description": "a path-safe name: letters, digits, '.', '_', '-'"}
JOB_ID: Schema = {"type": "string", "pattern": _JOB_ID_RE.pattern, "description": "32 hex digits"}
SHA256: Schema = {"type": "string", "pattern": v.SHA256_PATTERN}
EPOCH: Schema = {"type": "number", "description": "epoch seconds"}
ISO_TIME: Schema = {"type": "string", "format": "date-time"}
PRINTABLE: Schema = {"type": "string", "pattern": v.PRINTABLE_PATTERN}


def _range(lo: float, hi: float, kind: str = "integer") -> Schema:
    """A number within [lo, hi]."""
    return {"type": kind, "minimum": lo, "maximum": hi}


def _or_blank(schema: Schema, null: bool = False) -> Schema:
    """`schema`, or "" (and null in JSON): a field left blank takes its default."""
    blank = ["", None] if null else [""]
    text = schema.get("description", "")
    return {"anyOf": [schema, {"enum": blank}],
            "description": f"{text} (blank: the default)" if text else "blank: the default"}


_GLOSSARY_TEXT: Schema = {"type": "string", "maxLength": glossary.MAX_CHARS, "pattern": r"\S"}
GLOSSARY: Schema = nullable({
    "type": "object", "maxProperties": glossary.MAX_ENTRIES,
    "propertyNames": _GLOSSARY_TEXT, "additionalProperties": _GLOSSARY_TEXT,
    "description": "terms the translation must render a fixed way: {\"term\": \"translation\"}"})
OPTIONS: Schema = {
    "type": "object", "properties": {"glossary": GLOSSARY},
    "description": f"job options (README), at most {v.MAX_OPTIONS_BYTES // 1024} KB as JSON; "
                   "`subtitles` and `subtitles_language` are set by the coordinator"}
URL: Schema = {"type": "string", "format": "uri", "maxLength": v.MAX_URL_LENGTH,
               "pattern": v.HTTP_URL_PATTERN}

# The submit fields, as JSON values (a JSON submit) or as query/form strings (raw and multipart).
SUBMIT_FIELDS: dict[str, Schema] = {
    "kind": {**enum_of(JobKind), "default": JobKind.DUB.value},
    "source_language": {**SOURCE_LANGUAGE, "default": AUTO},
    "target_language": {**LANGUAGE, "default": "es"},
    "priority": {**_range(*v.PRIORITY_RANGE), "default": 0, "description": "higher runs first"},
    "callback_url": {**URL, "description": "POSTed the job view when the job ends (public hosts "
                                          "only unless ALLOW_PRIVATE_CALLBACKS)"},
    "asr_model": LABEL,
    "options": OPTIONS,
    "max_attempts": _range(*v.ATTEMPTS_RANGE),
    "filename": {"type": "string", "description": "the input's display name"},
}

SUBMIT_FORM: Schema = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1,
                 "description": "the input (video, audio, or a subtitle/text file for translate)"},
        "subtitles": {"type": "string", "contentMediaType": "application/octet-stream",
                      "description": "a dub's own SRT or WebVTT subtitles (dub jobs only)"},
        "subtitles_language": _or_blank({**LANGUAGE, "description": "the subtitles' language"}),
        **{name: _or_blank(schema) for name, schema in SUBMIT_FIELDS.items() if name != "options"},
        "options": _or_blank({"type": "string", "contentMediaType": "application/json",
                              "contentSchema": OPTIONS, "description": "a JSON object"}),
    },
    "required": ["file"],
}

INPUT_FILE: Schema = {"type": "string", "contentMediaType": "application/octet-stream",
                      "minLength": 1, "description": "the input's bytes (never empty); the fields "
                                                     "go in the query string"}

UPLOAD_FORM: Schema = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "contentMediaType": "application/octet-stream"}}}

_ABSENT: Schema = {"not": {}, "description": "set by the coordinator from a `subtitles` part"}

SUBMIT_JSON: Schema = {
    "type": "object",
    "properties": {"source_url": {**URL, "description": "the worker downloads the input from here"},
                   **{name: _or_blank(schema, null=True) for name, schema in SUBMIT_FIELDS.items()},
                   "options": _or_blank({**OPTIONS, "properties": {**OPTIONS["properties"],
                                                                   "subtitles": _ABSENT,
                                                                   "subtitles_language": _ABSENT}},
                                        null=True)},
    "required": ["source_url"],
}

# Query parameters of the raw-body submit (also read, under the form fields, by a multipart one).
SUBMIT_QUERY: Schema = {"type": "object", "properties": {
    **{name: _or_blank(schema) for name, schema in SUBMIT_FIELDS.items() if name != "options"},
    "options": _or_blank({"type": "string", "contentMediaType": "application/json",
                          "contentSchema": OPTIONS, "description": "a JSON object"})}}

LIST_QUERY: Schema = {"type": "object", "properties": {
    "status": _or_blank(enum_of(JobStatus)),
    "limit": {**_range(*v.LIMIT_RANGE), "default": 50,
              "description": "page size; clamped to MAX_LIST_LIMIT (the reply says what was used)"},
    "offset": {**_range(*v.OFFSET_RANGE), "default": 0},
}}

SEARCH_QUERY: Schema = {"type": "object", "required": ["q"], "properties": {
    "q": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": sq.QUERY_PATTERN,
          "description": "words (all must match), \"a phrase\", `or`, -excluded; at most "
                         "MAX_SEARCH_QUERY_CHARS characters (default 256)"},
    "limit": {**_range(*v.LIMIT_RANGE), "default": 20, "description": "clamped to MAX_LIST_LIMIT"},
    "offset": {**_range(*v.OFFSET_RANGE), "default": 0},
    "language": _or_blank({"type": "string", "pattern": sq.LANGUAGE_PATTERN}),
    "kind": _or_blank(enum_of(["source", "translation"])),
}}

# Sent as one comma separated value (`?kinds=dub,echo`): blanks around items are dropped.
_CSV_LABELS: Schema = {"type": "array", "maxItems": v.MAX_WORKER_LIST,
                       "items": {**PRINTABLE, "maxLength": v.MAX_LABEL_CHARS}}
NEXT_QUERY: Schema = {"type": "object", "properties": {
    "kinds": {**_CSV_LABELS, "description": "comma separated; default: echo"},
    "asr_models": {**_CSV_LABELS, "description": "comma separated"},
    "target_languages": {**_CSV_LABELS, "description": "comma separated"}}}

UPLOAD_QUERY: Schema = {"type": "object", "properties": {
    "name": {**LABEL, "default": "result"},
    "final": {"type": "string", "enum": list(v.BOOL_SPELLINGS), "default": "1",
              "description": "1: this is the main result and completes the job"},
    "content_type": {"type": "string", "maxLength": v.MAX_CONTENT_TYPE, "pattern": v.MIME_PATTERN},
    "detected_language": LANGUAGE,
    # object storage: the result is already there (no body); see POST upload-slot
    "key": {"type": "string", "pattern": direct.TOKEN_PATTERN, "description": "the upload slot's key"},
    "upload_id": {"type": "string", "pattern": direct.TOKEN_PATTERN},
    "size": {"type": "string", "pattern": direct.SIZE_PATTERN, "description": "bytes (with key)"},
    "next": {"type": "string", "enum": list(v.BOOL_SPELLINGS), "default": "0",
             "description": "1 with final=1: claim this worker's next job in the same call (the "
                            "reply's `next`)"},
}}

# --- worker protocol bodies (the dataclasses of shared.protocol) ---------------------------------

_WORKER_LIST: Schema = {"type": "array", "maxItems": v.MAX_WORKER_LIST,
                        "items": {**PRINTABLE, "maxLength": v.MAX_LABEL_CHARS}}
WORKER_INFO = dataclass_schema(WorkerInfo, reply=False, **{
    name: _WORKER_LIST for name in v.WORKER_LISTS})
WORKER_INFO["required"] = []  # worker_id and session_id default to "anonymous" / X-Worker-Session

HEARTBEAT = dataclass_schema(
    Heartbeat, reply=False, stage=nullable(enum_of(Stage)),
    progress={**nullable(_range(*v.PROGRESS_RANGE, kind="number")),
              "description": "percent; clamped to 0..100"},
    eta_seconds={**nullable(_range(*v.ETA_RANGE, kind="number")), "description": "clamped at 0"})
FAIL_REPORT = dataclass_schema(FailReport, reply=False, retryable={"type": "boolean"})
FAIL_REPORT["required"] = []  # the reason defaults to "worker reported failure"
CLAIMED_JOB = dataclass_schema(ClaimedJob, reply=True, kind=enum_of(JobKind),
                               source_language=SOURCE_LANGUAGE, target_language=LANGUAGE)
HEARTBEAT_REPLY = dataclass_schema(HeartbeatReply, reply=True)
ARTIFACT_INFO = dataclass_schema(ArtifactInfo, reply=True)
_TOKEN: Schema = {"type": "string", "pattern": direct.TOKEN_PATTERN}
SLOT_REQUEST = dataclass_schema(
    SlotRequest, reply=False, name=LABEL, size={**_range(0, direct.MAX_SIZE)}, sha256=SHA256,
    content_type={"maxLength": v.MAX_CONTENT_TYPE, "pattern": v.MIME_PATTERN},
    key=nullable(_TOKEN), upload_id=nullable(_TOKEN))
UPLOAD_SLOT = dataclass_schema(UploadSlot, reply=True)

CLAIM_REQUEST: Schema = {"type": "object", "properties": {
    "worker": nullable(ref("WorkerInfo")),
    "wait": {**_range(*v.CLAIM_WAIT_RANGE, kind="number"), "default": 0,
             "description": "seconds to hold the request for a job (at most "
                            f"{MAX_CLAIM_WAIT_SECONDS:g} are used)"}}}
_BATCH_TOKEN: Schema = {"type": "string", "minLength": 1, "maxLength": batch.MAX_TOKEN_CHARS}
_BATCH_DATA: Schema = {"type": "string", "contentEncoding": "base64",
                       "pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                       "maxLength": 4 * (MAX_BATCH_RESULT_BYTES // 3),
                       "description": f"at most {MAX_BATCH_RESULT_BYTES} bytes"}
_LEASE_REF = dataclass_schema(LeaseRef, reply=False, job_id=JOB_ID, lease_token=_BATCH_TOKEN)
_HELD = dataclass_schema(HeldResult, reply=False, job_id=JOB_ID, lease_token=_BATCH_TOKEN, name=LABEL,
                         data=_BATCH_DATA, sha256=SHA256, detected_language=nullable(LANGUAGE),
                         content_type={**_or_blank({"type": "string", "maxLength": v.MAX_CONTENT_TYPE,
                                                    "pattern": v.MIME_PATTERN}, null=True),
                                       "type": ["string", "null"]})


def _batch_list(item: Schema, description: str) -> Schema:
    """An array of at most MAX_BATCH_JOBS items."""
    return {"type": "array", "maxItems": MAX_BATCH_JOBS, "items": item, "default": [],
            "description": description}


BATCH_REQUEST: Schema = {"type": "object", "properties": {
    "worker": nullable(ref("WorkerInfo")),
    "claim": {**_range(0, MAX_BATCH_JOBS), "default": 0, "description": "jobs to claim (after the rest)"},
    "results": _batch_list(_HELD, "short jobs' only results: each completes its job"),
    "release": _batch_list(_LEASE_REF, "jobs to give back to the queue")}}
_BATCH_ENTRY: Schema = {"type": "object", "required": ["job_id"], "properties": {
    "job_id": JOB_ID, "status": enum_of(JobStatus), "artifact": ref("ArtifactInfo"),
    "repeated": {"type": "boolean"}, "error": {"type": "string"}, "message": {"type": "string"},
    "status_code": {"type": "integer", "description": "with `error`: the status this call alone "
                                                      "would have answered"}},
    "description": "what became of one result or release: its status, or an error body"}
COMPLETE_REQUEST: Schema = {"type": "object", "required": ["main_artifact"], "properties": {
    "main_artifact": LABEL, "detected_language": nullable(LANGUAGE)}}

# POST /jobs/<id>/redub (coordinator.redub): the lengths are the defaults of the MAX_REDUB_* settings
_REDUB_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 1000}
_REDUB_LINE: Schema = {"type": "integer", "minimum": 0, "maximum": 10**9 - 1,
                       "description": "the line's `index` in transcript.json / dub_report.json"}
REDUB_REQUEST: Schema = {
    "type": "object", "required": ["segments"], "additionalProperties": False,
    "description": "edited lines: `text` is voiced as given, `source_text` is translated again",
    "properties": {"segments": {"type": "array", "minItems": 1, "maxItems": 200, "items": {
        "oneOf": [{"type": "object", "required": ["index", "text"], "additionalProperties": False,
                   "properties": {"index": _REDUB_LINE, "text": _REDUB_TEXT}},
                  {"type": "object", "required": ["index", "source_text"],
                   "additionalProperties": False,
                   "properties": {"index": _REDUB_LINE, "source_text": _REDUB_TEXT}}]}}}}

# An edited summary (PUT /jobs/<id>/summary; shared.summary): limits are the MAX_SUMMARY_* defaults.
SUMMARY_QUERY: Schema = {"type": "object", "properties": {
    "language": _or_blank({**LANGUAGE, "description": "the summary in this language: the "
                                                      "translation's (summary.<language>.json) "
                                                      "or the source's (404: none in it)"}),
}}
_SUMMARY_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": r"\S"}
_SECONDS: Schema = {"type": "number", "minimum": 0, "exclusiveMaximum": 10_000_000}
_KEY_POINT: Schema = {"type": "object", "required": ["text"], "properties": {
    "text": _SUMMARY_TEXT, "start": _SECONDS, "end": _SECONDS}}
_CHAPTER: Schema = {"type": "object", "required": ["start", "end", "title"], "properties": {
    "start": _SECONDS, "end": _SECONDS, "title": _SUMMARY_TEXT}}
SUMMARY_EDIT: Schema = {
    "type": "object", "required": ["title", "key_points", "chapters"],
    "description": "the corrected summary (other fields of summary.json are ignored); chapters "
                   "in order, none starting before the previous one ends",
    "properties": {"title": _SUMMARY_TEXT,
                   "key_points": {"type": "array", "maxItems": 20, "items": _KEY_POINT},
                   "chapters": {"type": "array", "maxItems": 200, "items": _CHAPTER},
                   "language": {"type": "string", "maxLength": 16}}}

# --- replies (coordinator.serializers) -----------------------------------------------------------


def _reply(description: str, **props: Schema) -> Schema:
    """A reply object: exactly these properties, all present."""
    return {"type": "object", "description": description, "properties": props,
            "required": list(props), "additionalProperties": False}


_STR_OR_NULL = nullable({"type": "string"})
_INT_OR_NULL = nullable({"type": "integer"})
LINKS = _reply("paths of the job's endpoints", **{
    name: {"type": "string"} for name in ("self", "download", "cancel", "retry")})
ARTIFACT_VIEW = _reply("a result file", name=LABEL, size={"type": "integer"}, sha256=SHA256,
                       content_type={"type": "string"}, url={"type": "string"})
SUBTITLES_VIEW = _reply("a dub's own subtitles", size={"type": "integer"}, sha256=SHA256,
                        language=nullable(LANGUAGE),
                        used_as=nullable(enum_of(["source", "target"])))

_TIMES = {"created_at": EPOCH, "started_at": nullable(EPOCH), "finished_at": nullable(EPOCH),
          "updated_at": EPOCH}
JOB_VIEW = _reply(
    "the client's view of a job",
    job_id=JOB_ID, kind=enum_of(JobKind), status=enum_of(JobStatus), stage=nullable(enum_of(Stage)),
    progress={"type": "number", "minimum": 0, "maximum": 100}, message=_STR_OR_NULL,
    eta_seconds=nullable({"type": "number"}),
    queue_position={**_INT_OR_NULL, "description": "1 = next; null unless queued"},
    attempts={"type": "integer"}, max_attempts={"type": "integer"}, worker_id=_STR_OR_NULL,
    source_language=SOURCE_LANGUAGE, target_language=LANGUAGE,
    detected_language=nullable(LANGUAGE), priority={"type": "integer"}, options={"type": "object"},
    asr_model=nullable(LABEL), source_url=_STR_OR_NULL, input_name=_STR_OR_NULL,
    input_size=_INT_OR_NULL, error=_STR_OR_NULL, cancel_requested={"type": "boolean"},
    main_artifact=nullable(LABEL), subtitles=nullable(ref("SubtitlesView")),
    parent_job_id={**nullable(JOB_ID), "description": "a re-dub's parent job; null otherwise"},
    **_TIMES, **{f"{name}_iso": nullable(ISO_TIME) for name in _TIMES},
    artifacts={"type": "array", "items": ref("ArtifactView")}, links=ref("Links"),
    waiting_for={**_STR_OR_NULL, "description": "what a queued job nobody can run needs"})
SEARCH_HIT = _reply(
    "a transcript line that matches", job_id=JOB_ID, input_name={"type": "string"},
    segment_index={"type": "integer"}, start={"type": "number"}, end={"type": "number"},
    language={"type": "string"}, kind=enum_of(["source", "translation"]),
    snippet={"type": "string", "description": "plain text around the match (never HTML)"},
    highlights={"type": "array", "description": "[start, end) character offsets in `snippet`",
                "items": {"type": "array", "items": {"type": "integer"}}})
SEARCH_REPLY = _reply("a page of search results, best first", q={"type": "string"},
                      results={"type": "array", "items": ref("SearchHit")},
                      total={"type": "integer"}, limit={"type": "integer"},
                      offset={"type": "integer"})
JOB_LIST = _reply("a page of jobs, newest first", jobs={"type": "array", "items": ref("JobView")},
                  total={"type": "integer"}, limit={"type": "integer"}, offset={"type": "integer"})
SUBMIT_REPLY = _reply("a queued (202) or an idempotent repeat's (200) job", job_id=JOB_ID,
                      status=enum_of(JobStatus), queue_position=_INT_OR_NULL, links=ref("Links"))
_COUNT = {"type": "integer", "minimum": 0}
QUEUE_INFO = _reply("queue counts", queued=_COUNT, running=_COUNT, completed_last_hour=_COUNT,
                    failed_last_hour=_COUNT, throughput_per_minute={"type": "number"},
                    workers_online=_COUNT)
_CHECK = enum_of(["ok", "error"])
HEALTH = {**_reply("database and storage checks", status=enum_of(["ok", "unavailable"]),
                   database=_CHECK, storage=_CHECK, version={"type": "string"},
                   protocol={"type": "integer"}),
          "additionalProperties": True}  # a 503 adds the error body's keys
JOB_STATUS = _reply("the job's status after the call", job_id=JOB_ID, status=enum_of(JobStatus))
FAIL_REPLY = _reply("the job after a failed attempt", job_id=JOB_ID, status=enum_of(JobStatus),
                    attempts={"type": "integer"},
                    available_at={**EPOCH, "description": "when a requeued job may run again"})
UPLOAD_REPLY = _reply("the stored artifact", artifact=ref("ArtifactInfo"),
                      status=enum_of(JobStatus),
                      repeated={"type": "boolean", "description": "the same upload again: "
                                                                  "nothing was stored"},
                      next={"oneOf": [ref("ClaimedJob"), {"type": "null"}],
                            "description": "asked with next=1: the worker's next job, claimed"})
UPLOAD_REPLY["required"] = ["artifact", "status", "repeated"]  # `next` only when asked
BATCH_REPLY = _reply("every result and release in the order sent, and the jobs claimed",
                     results={"type": "array", "items": _BATCH_ENTRY},
                     released={"type": "array", "items": _BATCH_ENTRY},
                     jobs={"type": "array", "items": ref("ClaimedJob")})
_NUMBER: Schema = {"type": "number"}
SUMMARY_REPLY = _reply(
    "the stored edit (`summary.edited.json`) and the artifacts written",
    summary=_reply("a summary as in summary.json", version={"type": "integer"},
                   title={"type": "string"}, language={"type": "string"}, duration=_NUMBER,
                   method={"type": "string", "enum": ["extractive", "abstractive", "edited"]},
                   key_points={"type": "array", "items": _reply(
                       "a key point", text={"type": "string"}, start=_NUMBER, end=_NUMBER)},
                   chapters={"type": "array", "items": _reply(
                       "a chapter", start=_NUMBER, end=_NUMBER, title={"type": "string"})},
                   notes={"type": "array", "items": {"type": "string"}}),
    artifacts={"type": "array", "items": {"type": "string"}})
DELIVERY_VIEW = _reply(
    "one webhook delivery of a terminal state (README \"Webhooks\")",
    id={"type": "string", "description": "sent as X-Dubfleet-Delivery"},
    event=enum_of(["job.completed", "job.failed", "job.cancelled"]), url={"type": "string"},
    status=enum_of(["pending", "delivered", "failed"]), attempts={"type": "integer", "minimum": 0},
    signed={**nullable({"type": "boolean"}), "description": "null until the first attempt"},
    last_http_status=_INT_OR_NULL, last_error=_STR_OR_NULL,
    next_attempt_at={**nullable(EPOCH), "description": "when pending: the next try"},
    created_at=EPOCH, updated_at=EPOCH, delivered_at=nullable(EPOCH))
DELIVERY_LIST = _reply("the job's webhook deliveries, oldest first",
                       job_id=JOB_ID, deliveries={"type": "array", "items": ref("DeliveryView")})
JOB_EVENT = _reply("a live update's data: the job's state now (`progress` is 0..1 here)",
                   id=JOB_ID, progress={"type": "number", "minimum": 0, "maximum": 1},
                   **{name: JOB_VIEW["properties"][name] for name in JOB_EVENT_FIELDS})
JOB_EVENT_MESSAGE: Schema = {
    "type": "object", "required": ["event", "id", "data"],
    "description": "one Server-Sent Events message; `: keepalive` comments come between them",
    "properties": {"event": {"const": "job"},
                   "id": {"type": "string", "pattern": "^[0-9]+$",
                          "description": "send it back as Last-Event-ID to resume after it"},
                   "data": {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": ref("JobEvent")}}}
ERROR: Schema = {
    "type": "object", "required": ["error", "message"],
    "description": "every error; some add keys such as `field` (422) or `job_status` and "
                   "`this_lease` (409 lease_lost)",
    "properties": {"error": {"type": "string", "description": "a snake_case code"},
                   "message": {"type": "string"}, "field": {"type": "string"},
                   "job_status": nullable(enum_of(JobStatus)), "this_lease": {"type": "boolean"}}}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR, "SubmitJSON": SUBMIT_JSON, "SubmitForm": SUBMIT_FORM, "InputFile": INPUT_FILE,
    "UploadForm": UPLOAD_FORM,
    "SubmitReply": SUBMIT_REPLY, "JobView": JOB_VIEW, "JobList": JOB_LIST, "Links": LINKS,
    "ArtifactView": ARTIFACT_VIEW, "SubtitlesView": SUBTITLES_VIEW, "QueueInfo": QUEUE_INFO,
    "Health": HEALTH, "WorkerInfo": WORKER_INFO, "ClaimRequest": CLAIM_REQUEST,
    "ClaimedJob": CLAIMED_JOB, "Heartbeat": HEARTBEAT, "HeartbeatReply": HEARTBEAT_REPLY,
    "FailReport": FAIL_REPORT, "FailReply": FAIL_REPLY, "CompleteRequest": COMPLETE_REQUEST,
    "JobStatusReply": JOB_STATUS, "ArtifactInfo": ARTIFACT_INFO, "UploadReply": UPLOAD_REPLY,
    "SlotRequest": SLOT_REQUEST, "UploadSlot": UPLOAD_SLOT, "RedubRequest": REDUB_REQUEST,
    "JobEvent": JOB_EVENT, "JobEventMessage": JOB_EVENT_MESSAGE,
    "SearchHit": SEARCH_HIT, "SearchReply": SEARCH_REPLY,
    "SummaryEdit": SUMMARY_EDIT, "SummaryReply": SUMMARY_REPLY,
    "DeliveryView": DELIVERY_VIEW, "DeliveryList": DELIVERY_LIST,
    "BatchRequest": BATCH_REQUEST, "BatchReply": BATCH_REPLY,
}

# Objects whose properties are an operation's query parameters (coordinator.openapi expands them).
QUERIES: dict[str, Schema] = {"SubmitQuery": SUBMIT_QUERY, "ListQuery": LIST_QUERY,
                              "NextQuery": NEXT_QUERY, "UploadQuery": UPLOAD_QUERY,
                              "SearchQuery": SEARCH_QUERY, "SummaryQuery": SUMMARY_QUERY}
