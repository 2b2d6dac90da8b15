"""The `glossary` job option: parse_glossary, and the coordinator refusing a bad one at submit
(422 JSON) while storing a good one with the job's options."""
from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest

from shared.glossary import MAX_CHARS, MAX_ENTRIES, parse_glossary


# --------------------------------------------------------------------------------------------
# parse_glossary
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, {}])
def test_absent_glossary_is_empty(value):
    assert parse_glossary(value) == {}


def test_valid_glossary_is_returned():
    value = {"office": "despacho", "Dark Forest": "Bosque Oscuro"}
    assert parse_glossary(value) == value


def test_whitespace_is_normalised():
    assert parse_glossary({"  Dark \t Forest ": " Bosque\n Oscuro  ", "car": "coche "}) \
        == {"Dark Forest": "Bosque Oscuro", "car": "coche"}


def test_input_is_not_modified():
    value = {" car ": " coche "}
    parse_glossary(value)
    assert value == {" car ": " coche "}


@pytest.mark.parametrize("value", [["office", "despacho"], [["office", "despacho"]], "office",
                                   "office=despacho", 5, True, ()])
def test_not_an_object_is_refused(value):
    with pytest.raises(ValueError, match="must be an object"):
        parse_glossary(value)


def test_at_most_max_entries():
    ok = {f"term{i}": f"t{i}" for i in range(MAX_ENTRIES)}
    assert len(parse_glossary(ok)) == MAX_ENTRIES
    with pytest.raises(ValueError, match=f"at most {MAX_ENTRIES} terms"):
        parse_glossary({**ok, "one more": "uno más"})


@pytest.mark.parametrize("value", [{"": "x"}, {"x": ""}, {"   ": "x"}, {"x": " \t "},
                                   {"x": 5}, {"x": None}, {"x": ["y"]}, {"x": {"y": "z"}}])
def test_empty_or_non_string_entries_are_refused(value):
    with pytest.raises(ValueError, match="non-empty strings"):
        parse_glossary(value)


def test_one_bad_entry_refuses_the_whole_glossary():
    with pytest.raises(ValueError):
        parse_glossary({"office": "despacho", "car": ""})


def test_length_limit():
    assert parse_glossary({"a" * MAX_CHARS: "b" * MAX_CHARS}) == {"a" * MAX_CHARS: "b" * MAX_CHARS}
    with pytest.raises(ValueError, match=f"at most {MAX_CHARS} characters"):
        parse_glossary({"a" * (MAX_CHARS + 1): "b"})
    with pytest.raises(ValueError, match=f"at most {MAX_CHARS} characters"):
        parse_glossary({"a": "b" * (MAX_CHARS + 1)})


def test_non_ascii_terms():
    assert parse_glossary({"Straße": "calle", "東京": "Tokio"}) == {"Straße": "calle",
                                                                   "東京": "Tokio"}


# --------------------------------------------------------------------------------------------
# the coordinator refuses a bad glossary at submit
# --------------------------------------------------------------------------------------------

def h(key: str, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key, **extra}


@pytest.fixture
def ckey(make_key) -> str:
    return make_key("client")


BAD = [
    ["office", "despacho"],
    "office=despacho",
    {"office": ""},
    {"": "despacho"},
    {"office": 5},
    {"office": "x" * (MAX_CHARS + 1)},
    {f"t{i}": "x" for i in range(MAX_ENTRIES + 1)},
]


def _assert_glossary_422(reply):
    assert reply.status_code == 422, reply.get_json()
    assert reply.is_json
    body = reply.get_json()
    assert body["error"] == "validation_failed"
    assert body["field"] == "options.glossary"
    assert "glossary" in body["message"]


@pytest.mark.parametrize("glossary", BAD)
def test_bad_glossary_in_json_submit_is_422(client, ckey, glossary):
    reply = client.post("/jobs", json={"source_url": "https://example.com/talk.mp4",
                                       "kind": "dub", "target_language": "es",
                                       "options": {"glossary": glossary}}, headers=h(ckey))
    _assert_glossary_422(reply)


@pytest.mark.parametrize("glossary", BAD[:3])
def test_bad_glossary_in_raw_submit_query_is_422(client, ckey, glossary):
    options = quote(json.dumps({"glossary": glossary}))
    reply = client.post(f"/jobs?kind=echo&options={options}", data=b"media",
                        headers=h(ckey, **{"Content-Type": "application/octet-stream"}))
    _assert_glossary_422(reply)


def test_bad_glossary_in_multipart_submit_is_422(client, ckey):
    data = {"file": (io.BytesIO(b"abc"), "movie.mkv"), "kind": "dub", "target_language": "es",
            "options": json.dumps({"glossary": {"office": ""}})}
    reply = client.post("/jobs", data=data, headers=h(ckey), content_type="multipart/form-data")
    _assert_glossary_422(reply)


def test_bad_glossary_creates_no_job(client, ckey):
    client.post("/jobs", json={"source_url": "https://example.com/talk.mp4", "kind": "dub",
                               "target_language": "es", "options": {"glossary": [1]}},
                headers=h(ckey))
    assert client.get("/jobs", headers=h(ckey)).get_json()["total"] == 0


def test_good_glossary_is_accepted_and_kept_in_the_options(client, ckey):
    glossary = {"office": "despacho", "Dark Forest": "Bosque Oscuro"}
    reply = client.post("/jobs", json={"source_url": "https://example.com/talk.mp4",
                                       "kind": "dub", "target_language": "es",
                                       "options": {"glossary": glossary, "voice": "x"}},
                        headers=h(ckey))
    assert reply.status_code == 202, reply.get_json()
    view = client.get(f"/jobs/{reply.get_json()['job_id']}", headers=h(ckey)).get_json()
    assert view["options"]["glossary"] == glossary


@pytest.mark.parametrize("glossary", [None, {}])
def test_empty_glossary_is_accepted(client, ckey, glossary):
    reply = client.post("/jobs", json={"source_url": "https://example.com/talk.mp4",
                                       "kind": "dub", "target_language": "es",
                                       "options": {"glossary": glossary}}, headers=h(ckey))
    assert reply.status_code == 202, reply.get_json()
