"""The coordinator's OpenAPI 3.1 document, built (with apispec) from the running app.

Nothing in it is written twice: the paths and methods come from the app's URL map, who may call
a route from its `require_key` decorator, what a view reads and answers from its `documented`
decorator (which names components), and every schema from `coordinator.schemas`, itself built
from the protocol dataclasses and the validators' limits. Served at `/openapi.json`.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from apispec import APISpec
from flask import Blueprint, Flask
from werkzeug.routing import Rule

from shared.protocol import (API_KEY_HEADER, IDEMPOTENCY_HEADER, LEASE_HEADER, SHA256_HEADER,
                             WORKER_SESSION_HEADER, KeyKind)

from . import schemas
from .validation import SHA256_PATTERN

# Reply bodies that are not components: any file, plain text, an HTML page, any JSON object.
BINARY, TEXT, HTML, OBJECT = "binary", "text", "html", "object"
EVENTS = "events"  # a Server-Sent Events stream (text/event-stream)
SESSION = (WORKER_SESSION_HEADER,)
LEASED = (WORKER_SESSION_HEADER, LEASE_HEADER)  # the headers of the calls made under a lease
# A stored file: Range and ETag supported; with object storage, a redirect to a presigned URL.
DOWNLOAD = {200: BINARY, 206: BINARY, 302: None, 304: None}
SUBMIT_BODIES = {"multipart/form-data": "SubmitForm", "application/octet-stream": "InputFile",
                 "application/json": "SubmitJSON"}
UPLOAD_BODIES = {"application/octet-stream": BINARY, "multipart/form-data": "UploadForm"}

_ERRORS: dict[int, str] = {
    400: "malformed request (bad JSON, bad header, no or empty file)",
    401: "missing, unknown or revoked API key",
    403: "this kind of API key may not call this endpoint",
    404: "no such job (or another client's), or no such file",
    409: "the job is not in a state that allows this; `lease_lost`: a stale or wrong lease "
         "token, nothing was changed",
    413: "body over the size limit",
    416: "the Range cannot be satisfied",
    422: "a field has an invalid value (`field` names it)",
    429: "too many requests for this API key; retry after `Retry-After` seconds",
    503: "the database is busy, the server is shutting down, or (event streams) MAX_EVENT_STREAMS "
         "are open; retry after `Retry-After`",
}
_REPLY_TEXT = {
    202: "accepted", 204: "nothing to do now", 206: "the requested byte range",
    302: "the file is in object storage: `Location` is a presigned URL for it",
    304: "not modified (`If-None-Match` matched the ETag, the sha256)",
    503: "a check failed",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_HEADERS: dict[str, dict[str, Any]] = {
    WORKER_SESSION_HEADER: {"description": "a random id per worker process",
                            "schema": {"type": "string"}},
    LEASE_HEADER: {"description": "the lease token of the claim; a missing, stale or wrong one "
                                  "is a 409 `lease_lost`", "schema": {"type": "string"}},
    IDEMPOTENCY_HEADER: {"description": "a repeat with the same key by the same owner returns the "
                                        "same job (200) and stores nothing",
                         "schema": {"type": "string", "maxLength": 255}},
    SHA256_HEADER: {"description": "the body's SHA-256, checked when sent (400 on a mismatch)",
                    "schema": {"type": "string", "pattern": SHA256_PATTERN.replace("a-f", "a-fA-F")}},
    "Range": {"description": "a byte range (RFC 9110)", "schema": {"type": "string"}},
    "Last-Event-ID": {"description": "the id of the last message received: resume after it (an "
                                     "id that is not in the recent buffer: a fresh snapshot)",
                      "schema": {"type": "string"}},
}
_SCHEMES = {
    KeyKind.CLIENT: "submits jobs and sees only its own (`dfc_...`)",
    KeyKind.WORKER: "runs the worker protocol (`dfw_...`, or WORKER_API_KEY)",
    KeyKind.ADMIN: "everything, every job (`dfa_...`, or ADMIN_API_KEY)",
}


@dataclass(frozen=True)
class Operation:
    """What a view reads and answers, in component names (see `documented`)."""

    tag: str
    ok: Mapping[int, str | None]
    body: Mapping[str, str] = field(default_factory=dict)
    body_required: bool = False
    query: str | None = None
    headers: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()


def documented(tag: str, *, ok: str | Mapping[int, str | None] | None = None,
               body: str | Mapping[str, str] | None = None, body_required: bool = False,
               query: str | None = None, headers: Sequence[str] = (),
               errors: Sequence[int] = ()) -> Callable:
    """Decorator: describe a view for the OpenAPI document.

    `ok`: the reply's component (200), or {status: component, BINARY, TEXT, HTML, OBJECT or None
    for no body}; `body`: the JSON body's component, or {media type: component or BINARY}; `query`: a
    component of `schemas.QUERIES` whose properties are the query parameters; `errors`: the
    view's own 4xx codes (those of the key check, the path's job id and a JSON body are added).
    """
    replies = ok if isinstance(ok, Mapping) else {200: ok}
    bodies = {"application/json": body} if isinstance(body, str) else dict(body or {})
    operation = Operation(tag, replies, bodies, body_required, query, tuple(headers), tuple(errors))

    def mark(view: Callable) -> Callable:
        view.openapi = operation  # type: ignore[attr-defined]
        return view
    return mark


def _content(name: str | None) -> dict[str, Any] | None:
    """The `content` of a reply or request body named by `name`."""
    if name is None:
        return None
    if name == BINARY:
        return {"*/*": {"schema": {}}}
    if name == TEXT:
        return {"text/plain": {"schema": {"type": "string"}}}
    if name == HTML:
        return {"text/html": {"schema": {"type": "string"}}}
    if name == EVENTS:
        return {"text/event-stream": {"schema": "JobEventMessage"}}
    if name == OBJECT:
        return {"application/json": {"schema": {"type": "object"}}}
    return {"application/json": {"schema": name}}


def _request_body(operation: Operation) -> dict[str, Any]:
    """The requestBody object."""
    content: dict[str, Any] = {}
    for media_type, name in operation.body.items():
        if name == BINARY:
            content[media_type] = {"schema": {"type": "string",
                                              "contentMediaType": "application/octet-stream"}}
        else:
            content[media_type] = {"schema": name}
    return {"required": operation.body_required, "content": content}


def _parameters(rule_args: Sequence[str], operation: Operation) -> list[dict[str, Any]]:
    """Path, query and header parameters."""
    params = [{"name": name, "in": "path", "required": True,
               "schema": schemas.JOB_ID if name == "job_id" else schemas.LABEL}
              for name in rule_args]
    component = schemas.QUERIES[operation.query] if operation.query else {}
    query, required = component.get("properties", {}), component.get("required", ())
    for name, schema in query.items():
        param = {"name": name, "in": "query", "required": name in required, "schema": schema}
        if schema.get("type") == "array":  # one comma separated value
            param.update(style="form", explode=False)
        if "description" in schema:
            param["description"] = schema["description"]
        params.append(param)
    params += [{"name": name, "in": "header", "required": False, **_HEADERS[name]}
               for name in operation.headers]
    return params


def _error_codes(operation: Operation, kinds: Sequence[KeyKind], path: str) -> list[int]:
    """Every 4xx/5xx the operation may answer."""
    codes = {400, 503, *operation.errors}
    if kinds:
        codes |= {401, 403, 429}
    if "{job_id}" in path:
        codes.add(404)
    if "application/json" in operation.body:
        codes |= {400, 413}
    return sorted(codes)


def _responses(operation: Operation, kinds: Sequence[KeyKind], path: str) -> dict[str, Any]:
    """The responses object: the view's replies, then its errors (shared components)."""
    responses: dict[str, Any] = {}
    for status, name in operation.ok.items():
        reply: dict[str, Any] = {"description": _REPLY_TEXT.get(status, "success")}
        content = _content(name)
        if content:
            reply["content"] = content
        if status == 204:  # a claim refused a long poll: too many workers are already waiting
            reply["headers"] = _RETRY_AFTER
        if status == 302:
            reply["headers"] = {"Location": {"schema": {"type": "string"}, "required": True}}
        responses[str(status)] = reply
    for status in _error_codes(operation, kinds, path):
        responses.setdefault(str(status), f"E{status}")
    return responses


def _security(kinds: Sequence[KeyKind]) -> list[dict[str, list]]:
    """The operation's alternatives of API keys (admin keys always pass)."""
    allowed = [*kinds, KeyKind.ADMIN] if kinds else []
    return [{f"{kind.value.capitalize()}Key": []} for kind in dict.fromkeys(allowed)]


def _operation(view: Callable, endpoint: str, path: str, args: Sequence[str]) -> dict[str, Any]:
    """One operation object."""
    operation: Operation = getattr(view, "openapi", None) or Operation("undescribed", {})
    kinds: Sequence[KeyKind] = getattr(view, "key_kinds", ())
    doc = inspect.cleandoc(view.__doc__ or endpoint)
    result: dict[str, Any] = {
        "tags": [operation.tag], "summary": doc.splitlines()[0], "description": doc,
        "operationId": endpoint.split(".")[-1], "security": _security(kinds),
        "parameters": _parameters(args, operation), "responses": _responses(operation, kinds, path)}
    if operation.body:
        result["requestBody"] = _request_body(operation)
    if not operation.ok:
        result["responses"]["default"] = "E400"
        result["x-undescribed"] = True  # a route without `documented` (the tests refuse it)
    return result


def not_api(blueprint: Blueprint) -> Blueprint:
    """Mark a blueprint whose routes are not API (HTML pages and their files): the document
    leaves them out."""
    blueprint.not_api = True  # type: ignore[attr-defined]
    return blueprint


def api_rules(app: Flask) -> Iterator[Rule]:
    """The URL map's API routes: every rule but static files and `not_api` blueprints' routes."""
    for rule in app.url_map.iter_rules():
        blueprint = app.blueprints.get(rule.endpoint.rpartition(".")[0])
        if rule.endpoint != "static" and not getattr(blueprint, "not_api", False):
            yield rule


def openapi_path(rule: str) -> str:
    """A werkzeug rule (`/jobs/<job_id>`) as an OpenAPI path template (`/jobs/{job_id}`)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _components(spec: APISpec) -> None:
    """Schemas, error replies and security schemes."""
    for name, schema in schemas.COMPONENTS.items():
        spec.components.schema(name, schema)
    for status, text in _ERRORS.items():
        reply = {"description": text, "content": {"application/json": {"schema": "Error"}}}
        if status in (429, 503):
            reply["headers"] = _RETRY_AFTER
        spec.components.response(f"E{status}", reply)
    for kind, text in _SCHEMES.items():
        spec.components.security_scheme(f"{kind.value.capitalize()}Key", {
            "type": "apiKey", "in": "header", "name": API_KEY_HEADER,
            "description": f"{kind.value} keys: {text}"})


def build_document(app: Flask, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every API route of `app` (see `api_rules`)."""
    spec = APISpec(title="dubfleet coordinator", version=version, openapi_version="3.1.0",
                   info={"description": _DESCRIPTION})
    _components(spec)
    seen: set[str] = set()
    for rule in api_rules(app):
        view, path = app.view_functions[rule.endpoint], openapi_path(rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = _operation(view, rule.endpoint, path, list(rule.arguments))
            if operation["operationId"] in seen:  # a view served on two paths (an alias)
                operation["operationId"] += "_" + re.sub(r"\W+", "_", path).strip("_")
            seen.add(operation["operationId"])
            operations[method.lower()] = operation
        spec.path(path=path, operations=operations)
    return spec.to_dict()


_DESCRIPTION = (
    "Pull-based video dubbing: clients submit jobs, workers claim them under leases. Every "
    f"request but /health and the docs carries `{API_KEY_HEADER}`. Every error is JSON "
    '`{"error": "<code>", "message": "<text>"}` with a 4xx status (a 5xx only when the '
    "coordinator itself cannot serve). The semantics, leases and transport errors are explained "
    "in docs/API.md; this document is generated from the code that validates the requests.")
