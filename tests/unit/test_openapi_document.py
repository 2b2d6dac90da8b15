"""The OpenAPI document: valid 3.1, complete (every route of the app), secured as the views are,
bounded by the validators' own limits, and matched by real replies; the /docs page renders it."""
from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from coordinator.errors import ValidationFailed
from coordinator.openapi import api_rules, openapi_path
from coordinator.validation import (ATTEMPTS_RANGE, PRIORITY_RANGE, parse_content_type, parse_label,
                                   parse_submission)
from shared.languages import LANGUAGES
from shared.protocol import JobKind, KeyKind

IGNORED_METHODS = {"HEAD", "OPTIONS"}
NO_KEY = {"/health", "/openapi.json", "/docs"}


@pytest.fixture
def doc(client) -> dict[str, Any]:
    """The document as served (no key needed)."""
    reply = client.get("/openapi.json")
    assert reply.status_code == 200 and reply.mimetype == "application/json"
    return reply.get_json()


def conforms(doc: dict[str, Any], name: str, instance: Any) -> None:
    """Assert that `instance` matches the component schema `name` (refs resolved in `doc`)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in Draft202012Validator(schema).iter_errors(instance)]
    assert not errors, (name, errors)


def test_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema, unresolved refs included


def test_every_route_and_method_is_documented(app, doc):
    """Enumerated from the URL map, so an endpoint added later cannot be left out."""
    for rule in api_rules(app):
        item = doc["paths"].get(openapi_path(rule.rule))
        assert item is not None, rule.rule
        for method in rule.methods - IGNORED_METHODS:
            operation = item.get(method.lower())
            assert operation is not None, f"{method} {rule.rule}"
            assert not operation.get("x-undescribed"), f"{method} {rule.rule}: no @documented"
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(rule.arguments), rule.rule


def test_only_the_web_pages_and_static_files_are_left_out(app, doc):
    """The web app's HTML pages (a `not_api` blueprint) and static files are not API; every
    other rule is (so a JSON route cannot hide by being put in the wrong place)."""
    left_out = {rule.rule for rule in app.url_map.iter_rules()} - {r.rule for r in api_rules(app)}
    assert left_out and all(path == "/" or path.startswith(("/app/", "/static/")) for path in left_out)
    assert "/app/jobs" in left_out and not any(path.startswith("/app") for path in doc["paths"])


def test_security_and_errors_follow_the_views(app, doc):
    """Keys come from require_key; every secured call documents 401, 403 and 429."""
    for rule in api_rules(app):
        kinds = getattr(app.view_functions[rule.endpoint], "key_kinds", ())
        path = openapi_path(rule.rule)
        for method in rule.methods - IGNORED_METHODS:
            operation = doc["paths"][path][method.lower()]
            names = {name for alternative in operation["security"] for name in alternative}
            expected = {f"{k.value.capitalize()}Key" for k in (*kinds, KeyKind.ADMIN)} if kinds else set()
            assert names == expected, (method, path)
            assert (path in NO_KEY) == (not kinds)
            responses = operation["responses"]
            if kinds:
                assert {"401", "403", "429"} <= responses.keys(), (method, path)
            for status, reply in responses.items():
                if status.startswith("4"):
                    assert reply == {"$ref": f"#/components/responses/E{status}"}, (method, path)
    too_many = doc["components"]["responses"]["E429"]
    assert "Retry-After" in too_many["headers"]
    assert too_many["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    schemes = doc["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == {"X-API-Key"}


def _submit_field(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A field of the JSON submit, without its "blank: the default" alternative."""
    return doc["components"]["schemas"]["SubmitJSON"]["properties"][name]["anyOf"][0]


@pytest.mark.parametrize("name, bounds", [("priority", PRIORITY_RANGE), ("max_attempts", ATTEMPTS_RANGE)])
def test_documented_bounds_are_where_the_validator_turns(doc, name, bounds):
    field = _submit_field(doc, name)
    assert (field["minimum"], field["maximum"]) == bounds
    for value in (field["minimum"], field["maximum"]):
        assert getattr(parse_submission({name: value}, 3), name) == value
    for value in (field["minimum"] - 1, field["maximum"] + 1):
        with pytest.raises(ValidationFailed):
            parse_submission({name: value}, 3)


def test_enums_are_the_protocol_s(doc):
    assert _submit_field(doc, "kind")["enum"] == [k.value for k in JobKind]
    assert _submit_field(doc, "target_language")["enum"] == list(LANGUAGES)
    assert _submit_field(doc, "source_language")["enum"] == ["auto", *LANGUAGES]


@pytest.mark.parametrize("parse, value", [(lambda v: parse_label(v, "name"), "result\n"),
                                          (parse_content_type, "video/mp4\n"),
                                          (parse_content_type, ["video/mp4"])])
def test_values_match_the_documented_pattern_whole(parse, value):
    """The document's patterns are ECMA-262, where `$` is the end; Python's `$` also matched
    before a final newline, so an artifact name or content type could end in one."""
    with pytest.raises(ValidationFailed):
        parse(value)


def _headers(key: str, token: str | None = None) -> dict[str, str]:
    """API key, worker session and (optionally) the lease token."""
    headers = {"X-API-Key": key, "X-Worker-Session": "s1"}
    if token:
        headers["X-Lease-Token"] = token
    return headers


def test_real_replies_match_their_schemas(client, make_key, doc):
    """A whole job's life, every JSON reply checked against the document."""
    user, worker = _headers(make_key("client")), _headers(make_key("worker"))
    submitted = client.post("/jobs?kind=echo&filename=a.txt", data=b"hello", headers={
        **user, "Content-Type": "application/octet-stream"})
    assert submitted.status_code == 202
    conforms(doc, "SubmitReply", submitted.get_json())
    job_id = submitted.get_json()["job_id"]
    conforms(doc, "JobView", client.get(f"/jobs/{job_id}", headers=user).get_json())
    conforms(doc, "JobView", client.get("/jobs/next?kinds=echo", headers=worker).get_json())
    claim = client.post("/jobs/claim", json={"worker": {"worker_id": "w1", "kinds": ["echo"]}},
                        headers=worker)
    conforms(doc, "ClaimedJob", claim.get_json())
    leased = _headers(worker["X-API-Key"], claim.get_json()["lease_token"])
    beat = client.post(f"/jobs/{job_id}/heartbeat", json={"stage": "uploading", "progress": 50},
                       headers=leased)
    conforms(doc, "HeartbeatReply", beat.get_json())
    upload = client.post(f"/jobs/{job_id}/upload-result?name=out.txt&content_type=text/plain",
                         data=b"hello", headers=leased)
    conforms(doc, "UploadReply", upload.get_json())
    conforms(doc, "JobView", client.get(f"/jobs/{job_id}", headers=user).get_json())
    conforms(doc, "JobList", client.get("/jobs", headers=user).get_json())
    conforms(doc, "QueueInfo", client.get("/queue/info", headers=user).get_json())
    conforms(doc, "Health", client.get("/health").get_json())
    lost = client.post(f"/jobs/{job_id}/fail", json={"reason": "late"}, headers=leased)
    assert lost.status_code == 409
    conforms(doc, "Error", lost.get_json())
    conforms(doc, "Error", client.get("/jobs/" + "0" * 32, headers=user).get_json())


def test_docs_page_lists_every_operation_and_schema(client, doc):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path in doc["paths"]:
        assert f"</span> {path}</h3>" in html, path
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    assert "<script" not in html and "http://" not in html and "https://" not in html  # no CDN
