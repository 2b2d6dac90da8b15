"""Search: the query syntax, indexing a worker's transcript.json, stemming, owner isolation,
snippets, bad queries, removal with the job and `coordinator reindex` (SQLite and PostgreSQL)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coordinator import retention, search
from coordinator.errors import ValidationFailed
from coordinator.extensions import db
from coordinator.search_query import check_request, fts_query, snippet_of, snippet_parts

SESSION = "sess-search"
TRANSCRIPT = {
    "language": "en", "duration": 12.0,
    "segments": [
        {"index": 0, "start": 0.0, "end": 3.5, "text": "The runners were running along the river."},
        {"index": 1, "start": 3.5, "end": 7.25, "text": "A <b>bold</b> café owner waved at them."},
        {"index": 2, "start": 7.25, "end": 12.0, "text": "Nobody expected the storm."},
    ],
    "translation": {"target_language": "es", "segments": [
        {"index": 0, "start": 0.0, "end": 3.5, "text": "Los corredores corrían junto al río."},
        {"index": 2, "start": 7.25, "end": 12.0, "text": "Nadie esperaba la tormenta."},
    ]},
}


@pytest.fixture
def keys(make_key) -> dict[str, str]:
    """Two clients, a worker and an admin."""
    return {"alice": make_key("client", "alice"), "bob": make_key("client", "bob"),
            "worker": make_key("worker"), "admin": make_key("admin")}


def _worker_headers(keys, token: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": keys["worker"], "X-Worker-Session": SESSION}
    return {**headers, "X-Lease-Token": token} if token else headers


def finished_job(client, keys, owner: str, transcript: dict = TRANSCRIPT, name: str = "talk.mp4") -> str:
    """A transcribe job of `owner` that a worker completed with `transcript` as transcript.json."""
    reply = client.post(f"/jobs?kind=transcribe&source_language=en&target_language=es&filename={name}",
                        data=b"media", headers={"X-API-Key": keys[owner],
                                                "Content-Type": "application/octet-stream"})
    job_id = reply.get_json()["job_id"]
    info = {"worker_id": "w1", "session_id": SESSION, "kinds": ["transcribe"], "asr_models": ["base"],
            "target_languages": ["es"]}
    token = client.post(f"/jobs/{job_id}/claim", json=info,
                        headers=_worker_headers(keys)).get_json()["lease_token"]
    upload = client.post(f"/jobs/{job_id}/upload-result?name=transcript.json&final=1"
                         "&content_type=application/json", data=json.dumps(transcript).encode(),
                         headers=_worker_headers(keys, token))
    assert upload.status_code == 200, upload.get_json()
    return job_id


def find(client, key: str, q: str, **params) -> dict:
    reply = client.get("/search", query_string={"q": q, **params}, headers={"X-API-Key": key})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


# --- the query syntax ------------------------------------------------------------------------


@pytest.mark.parametrize("q, expected", [
    ("storm", '("storm")'),
    ("river storm", '("river" AND "storm")'),
    ('"along the river" or storm', '("along the river" OR "storm")'),
    ("storm -river", '("storm") NOT "river"'),
    ("NEAR( storm*", '("NEAR(" AND "storm")'),
    ("AND OR NOT", '("AND" OR "NOT")'),
    ("or storm or", '("or" AND "storm")'),
])
def test_queries_become_quoted_fts5_expressions(q, expected):
    assert fts_query(q) == expected


@pytest.mark.parametrize("q", ['"', "*", "-", "-storm", "(( ))", "   "])
def test_queries_with_nothing_to_find_are_refused(q):
    with pytest.raises(ValidationFailed):
        check_request(q, 100)


def test_snippet_marks_become_offsets_and_parts():
    snippet = snippet_of("a \x02<b>run\x03 and \x02ran\x03")
    assert snippet.text == "a <b>run and ran" and snippet.highlights == ((2, 8), (13, 16))
    assert snippet_parts(snippet.text, snippet.highlights) == [
        ("a ", False), ("<b>run", True), (" and ", False), ("ran", True)]


def test_transcript_entries_skip_malformed_segments():
    data = {"language": "en-US", "segments": [{"text": "ok", "start": "x"}, {"start": 1}, "junk"],
            "translation": {"segments": [{"index": 4, "text": " hola ", "start": 2, "end": 3}]}}
    entries = search.transcript_entries(data, "en", "es")
    assert [(e.kind, e.language, e.index, e.start, e.text) for e in entries] == [
        ("source", "en", 0, 0.0, "ok"), ("translation", "es", 4, 2.0, "hola")]
    with pytest.raises(ValidationFailed):
        search.transcript_entries(["not", "an", "object"])


# --- over HTTP, on SQLite then PostgreSQL ----------------------------------------------------


def _flow(app, client, keys) -> None:
    alice = finished_job(client, keys, "alice")
    bob = finished_job(client, keys, "bob", {"language": "en", "segments": [
        {"index": 0, "start": 1.0, "end": 2.0, "text": "Bob runs a bakery by the river."}]},
        name="bob.mp4")
    page = find(client, keys["alice"], "run")  # English is stemmed: "running" matches
    hits = page["results"]
    assert page["total"] == len(hits) >= 1 and {h["job_id"] for h in hits} == {alice}
    first = hits[0]
    assert (first["segment_index"], first["start"], first["end"], first["kind"],
            first["language"], first["input_name"]) == (0, 0.0, 3.5, "source", "en", "talk.mp4")
    start, end = first["highlights"][0]
    assert first["snippet"][start:end].lower().startswith("run")
    # bob's lines never reach alice, and the reverse; admin sees both
    assert {h["job_id"] for h in find(client, keys["bob"], "river")["results"]} == {bob}
    assert {h["job_id"] for h in find(client, keys["admin"], "river")["results"]} == {alice, bob}
    # transcript text is returned as text, never as markup
    bold = find(client, keys["alice"], "bold")["results"][0]
    assert "<b>bold</b>" in bold["snippet"]
    # filters and paging
    translated = find(client, keys["alice"], "tormenta", kind="translation")["results"]
    assert [(h["kind"], h["language"]) for h in translated] == [("translation", "es")]
    assert find(client, keys["alice"], "tormenta", kind="source")["total"] == 0
    assert find(client, keys["alice"], "storm", language="es")["total"] == 0
    second = find(client, keys["admin"], "river", limit=1, offset=1)
    assert second["total"] == 2 and len(second["results"]) == 1
    assert find(client, keys["admin"], "river", offset=50) == {
        "q": "river", "results": [], "total": 2, "limit": 20, "offset": 50}
    # deleted by retention: gone from the index too
    with app.app_context():
        removed = retention.apply(db.session, _storage(app), retention.RetentionPolicy(0.0001, {}),
                                  now=4e9)
        assert set(removed) == {alice, bob}
        assert db.session.execute(db.text("SELECT count(*) FROM search_segments")).scalar() == 0
        db.session.remove()
    assert find(client, keys["admin"], "river")["total"] == 0


def _storage(app):
    from coordinator.state import get_state
    return get_state(app).storage


def test_search_flow_on_sqlite(app, client, keys):
    _flow(app, client, keys)


@pytest.mark.postgres
def test_search_flow_on_postgres(pg_app_factory, make_key_for):
    app = pg_app_factory()
    keys = {name: make_key_for(app, kind, name) for name, kind in
            (("alice", "client"), ("bob", "client"), ("worker", "worker"), ("admin", "admin"))}
    _flow(app, app.test_client(), keys)


@pytest.fixture
def make_key_for():
    """Factory: a key of `kind` on `app`."""
    from coordinator.auth import create_key
    from shared.protocol import KeyKind

    def make(app, kind: str, name: str) -> str:
        with app.app_context():
            _, plain = create_key(db.session, KeyKind(kind), name)
            db.session.remove()
        return plain
    return make


@pytest.mark.parametrize("q", ['"', "*", "NEAR(", "-", "", "-river", "x" * 300])
def test_bad_queries_are_422_json(client, keys, q):
    reply = client.get("/search", query_string={"q": q}, headers={"X-API-Key": keys["alice"]})
    if q == "NEAR(":
        assert reply.status_code == 200 and reply.get_json()["total"] == 0
        return
    assert reply.status_code == 422
    assert reply.get_json()["error"] == "validation_failed" and reply.get_json()["field"] == "q"


def test_bad_filters_and_missing_key(client, keys):
    bad_kind = client.get("/search?q=a&kind=video", headers={"X-API-Key": keys["alice"]})
    bad_lang = client.get("/search?q=a&language=%3Cscript%3E", headers={"X-API-Key": keys["alice"]})
    assert bad_kind.status_code == bad_lang.status_code == 422
    assert client.get("/search?q=a").status_code == 401
    assert client.get("/search?q=a", headers={"X-API-Key": keys["worker"]}).status_code == 403


def test_a_new_run_replaces_the_rows_and_reindex_rebuilds(app, client, keys, tmp_path):
    job_id = finished_job(client, keys, "alice")
    with app.app_context():
        entries = search.transcript_entries({"language": "en", "segments": [
            {"index": 0, "start": 0, "end": 1, "text": "Completely different words."}]})
        search.index_entries(db.session, job_id, 1, entries)
        db.session.commit()
        db.session.remove()
    assert find(client, keys["alice"], "storm")["total"] == 0
    assert find(client, keys["alice"], "different")["total"] == 1
    from coordinator.cli import main
    result = CliRunner().invoke(main, ["reindex", "--data-dir", app.config["DATA_DIR"]],
                                env={"DATABASE_URL": "", "STORAGE_URL": ""}, catch_exceptions=False)
    assert result.exit_code == 0 and "indexed 5 lines of 1 jobs" in result.output
    assert find(client, keys["alice"], "storm")["total"] == 1
    assert find(client, keys["alice"], "different")["total"] == 0


def test_an_unreadable_transcript_does_not_fail_the_upload(client, keys):
    job_id = finished_job(client, keys, "alice", transcript=["not", "an", "object"])  # type: ignore[arg-type]
    view = client.get(f"/jobs/{job_id}", headers={"X-API-Key": keys["alice"]}).get_json()
    assert view["status"] == "completed"
    assert find(client, keys["alice"], "not")["total"] == 0


# --- the web app's search page ---------------------------------------------------------------


def test_search_page_escapes_marks_and_links_to_the_moment(client, keys):
    from tests.unit.test_web_app import sign_in
    job_id = finished_job(client, keys, "alice")
    finished_job(client, keys, "bob")  # the same words in another client's job
    sign_in(client, keys["alice"])
    html = client.get("/app/search?q=bold").get_data(as_text=True)
    assert 'id="header-search"' in html and html.count("<li>") >= 1
    assert "A &lt;b&gt;<mark>bold</mark>&lt;/b&gt; café owner" in html
    assert f'href="/app/jobs/{job_id}?t=3.5"' in html and html.count("/app/jobs/") == 1
    refused = client.get("/app/search?q=-bold").get_data(as_text=True)
    assert 'id="search-error"' in refused and "no word to find" in refused
    assert 'id="no-results"' in client.get("/app/search?q=zebra").get_data(as_text=True)
    assert client.get("/app/search").status_code == 200
