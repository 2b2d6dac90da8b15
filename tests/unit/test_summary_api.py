"""PUT /jobs/<id>/summary: the owner's edit stored beside the worker's summary (Flask test client)."""
from __future__ import annotations

import io
import json
import time

import pytest

from shared.summary import EDITED_JSON, EDITED_MD, SUMMARY_JSON, SummaryFiles

ORIGINAL = {"version": 1, "title": "Rivers", "language": "en", "duration": 120.0,
            "method": "extractive",
            "key_points": [{"text": "Rivers come from rain.", "start": 3.0, "end": 6.0},
                           {"text": "Cities flood fast.", "start": 50.0, "end": 53.0},
                           {"text": "Lag time helps.", "start": 90.0, "end": 93.0}],
            "chapters": [{"start": 0.0, "end": 45.0, "title": "Where rivers come from"},
                         {"start": 45.0, "end": 120.0, "title": "Floods"}], "notes": []}
SPANISH = {**ORIGINAL, "title": "Ríos", "language": "es",
           "key_points": [{"text": "Los ríos nacen de la lluvia.", "start": 3.0, "end": 6.0},
                          {"text": "Las ciudades se inundan rápido.", "start": 50.0, "end": 53.0},
                          {"text": "El tiempo de retardo ayuda.", "start": 90.0, "end": 93.0}],
           "chapters": [{"start": 0.0, "end": 45.0, "title": "De dónde vienen los ríos"},
                        {"start": 45.0, "end": 120.0, "title": "Inundaciones"}]}


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _completed_job(app, client, key: str, with_summary: bool = True,
                   translated: bool = False) -> str:
    """A transcribe job, made completed with a stored summary.json (and summary.es.json when
    `translated`) as a worker would leave it."""
    from coordinator.extensions import db
    from coordinator.models import Artifact, Job
    from coordinator.state import get_state

    reply = client.post("/jobs?kind=transcribe", data=b"media",
                        headers={**h(key), "Content-Type": "application/octet-stream"})
    job_id = reply.get_json()["job_id"]
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.status, job.run_number, job.main_artifact = "completed", 1, "transcript.json"
        names = {"transcript.json": b"{}"}
        if with_summary:
            names[SUMMARY_JSON] = json.dumps(ORIGINAL).encode()
        if translated:
            names["summary.es.json"] = json.dumps(SPANISH).encode()
        for name, data in names.items():
            stored = get_state().storage.save_artifact(job_id, 1, name, io.BytesIO(data), 1 << 20)
            db.session.add(Artifact(job_id=job_id, attempt=1, name=name, size=stored.size,
                                    sha256=stored.sha256, content_type="application/json",
                                    path=stored.relpath, created_at=time.time()))
        db.session.commit()
        db.session.remove()
    return job_id


def _edit(**changes):
    body = json.loads(json.dumps(ORIGINAL))
    body.update(changes)
    return body


@pytest.fixture
def ckey(make_key) -> str:
    return make_key("client")


def test_owner_saves_an_edit_beside_the_original(app, client, ckey):
    job_id = _completed_job(app, client, ckey)
    body = _edit(title="  Where   rivers come from ", key_points=ORIGINAL["key_points"][:2])
    reply = client.put(f"/jobs/{job_id}/summary", json=body, headers=h(ckey))
    assert reply.status_code == 200, reply.get_json()
    saved = reply.get_json()
    assert saved["artifacts"] == [EDITED_JSON, EDITED_MD]
    assert saved["summary"]["title"] == "Where rivers come from"
    assert saved["summary"]["method"] == "edited" and saved["summary"]["language"] == "en"
    view = client.get(f"/jobs/{job_id}", headers=h(ckey)).get_json()
    names = {a["name"]: a["url"] for a in view["artifacts"]}
    assert {SUMMARY_JSON, EDITED_JSON, EDITED_MD} <= set(names)
    original = client.get(names[SUMMARY_JSON], headers=h(ckey)).get_json()
    assert original["title"] == "Rivers"  # the worker's summary is kept
    edited = client.get(names[EDITED_JSON], headers=h(ckey)).get_json()
    assert len(edited["key_points"]) == 2
    markdown = client.get(names[EDITED_MD], headers=h(ckey)).get_data(as_text=True)
    assert markdown.startswith("# Where rivers come from\n") and "- 0:45–2:00 Floods" in markdown


def test_a_second_edit_replaces_the_first(app, client, ckey):
    job_id = _completed_job(app, client, ckey)
    for title in ("First", "Second"):
        assert client.put(f"/jobs/{job_id}/summary", json=_edit(title=title),
                          headers=h(ckey)).status_code == 200
    view = client.get(f"/jobs/{job_id}", headers=h(ckey)).get_json()
    edited = [a for a in view["artifacts"] if a["name"] == EDITED_JSON]
    assert len(edited) == 1
    assert client.get(edited[0]["url"], headers=h(ckey)).get_json()["title"] == "Second"


def test_other_clients_get_404_and_admin_may_edit(app, client, ckey, make_key):
    job_id = _completed_job(app, client, ckey)
    other = make_key("client", "other")
    reply = client.put(f"/jobs/{job_id}/summary", json=_edit(), headers=h(other))
    assert reply.status_code == 404 and reply.get_json()["error"] == "not_found"
    assert client.put(f"/jobs/{job_id}/summary", json=_edit(),
                      headers=h(make_key("admin"))).status_code == 200
    assert client.put(f"/jobs/{'0' * 32}/summary", json=_edit(), headers=h(ckey)).status_code == 404
    assert client.put(f"/jobs/{job_id}/summary", json=_edit()).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"key_points": [], "chapters": []}, "title"),
    (_edit(chapters=[{"start": 10, "end": 5, "title": "x"}]), "chapters[0]"),
    (_edit(key_points=[{"text": "   "}]), "key_points[0].text"),
    (_edit(key_points=[{"text": "a"}] * 21), "key_points"),
    (_edit(title="x" * 1001), "title"),
])
def test_bad_bodies_are_422_naming_the_field(app, client, ckey, body, field):
    job_id = _completed_job(app, client, ckey)
    reply = client.put(f"/jobs/{job_id}/summary", json=body, headers=h(ckey))
    assert reply.status_code == 422
    assert reply.get_json()["error"] == "validation_failed" and reply.get_json()["field"] == field


def test_malformed_and_oversize_bodies(app_factory, make_key):
    app = app_factory(MAX_SUMMARY_BYTES=2048)
    client = app.test_client()
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind

    with app.app_context():
        _, key = create_key(db.session, KeyKind.CLIENT, "small")
        db.session.remove()
    job_id = _completed_job(app, client, key)
    url = f"/jobs/{job_id}/summary"
    assert client.put(url, data=b"{nope", headers={**h(key), "Content-Type": "application/json"}
                      ).status_code == 400
    assert client.put(url, json=[1], headers=h(key)).status_code == 400
    big = _edit(key_points=[{"text": "x" * 900}] * 5)
    assert client.put(url, json=big, headers=h(key)).status_code == 413


def test_jobs_without_a_summary_are_409(app, client, ckey):
    job_id = _completed_job(app, client, ckey, with_summary=False)
    reply = client.put(f"/jobs/{job_id}/summary", json=_edit(), headers=h(ckey))
    assert reply.status_code == 409 and "no summary" in reply.get_json()["message"]
    queued = client.post("/jobs?kind=transcribe", data=b"x", headers={
        **h(ckey), "Content-Type": "application/octet-stream"}).get_json()["job_id"]
    assert client.put(f"/jobs/{queued}/summary", json=_edit(), headers=h(ckey)).status_code == 409


def test_the_translated_summary_is_edited_with_its_language(app, client, ckey):
    job_id = _completed_job(app, client, ckey, translated=True)
    spanish = SummaryFiles.of("es")
    body = {**SPANISH, "title": "Cómo funcionan los ríos", "language": ""}
    reply = client.put(f"/jobs/{job_id}/summary?language=es", json=body, headers=h(ckey))
    assert reply.status_code == 200, reply.get_json()
    saved = reply.get_json()
    assert saved["artifacts"] == [spanish.edited_json, spanish.edited_md]
    assert saved["summary"]["language"] == "es" and saved["summary"]["method"] == "edited"
    view = client.get(f"/jobs/{job_id}", headers=h(ckey)).get_json()
    names = {a["name"]: a["url"] for a in view["artifacts"]}
    assert EDITED_JSON not in names  # the source summary is not touched
    assert client.get(names["summary.es.json"], headers=h(ckey)).get_json()["title"] == "Ríos"
    markdown = client.get(names[spanish.edited_md], headers=h(ckey)).get_data(as_text=True)
    assert markdown.startswith("# Cómo funcionan los ríos\n") and "Inundaciones" in markdown

    source = client.put(f"/jobs/{job_id}/summary?language=en", json=_edit(title="Rivers, edited"),
                        headers=h(ckey))  # the source's own language names the source summary
    assert source.status_code == 200 and source.get_json()["artifacts"] == [EDITED_JSON, EDITED_MD]


@pytest.mark.parametrize("query, body, status, field", [
    ("language=fr", SPANISH, 404, None),  # a language the job has no summary in
    ("language=zz", SPANISH, 422, "language"),  # not a language code
    ("language=ES", SPANISH, 422, "language"),
    ("language=es", ORIGINAL, 422, "language"),  # the body says en: not this summary's language
])
def test_unknown_languages_are_404_or_422(app, client, ckey, query, body, status, field):
    job_id = _completed_job(app, client, ckey, translated=True)
    reply = client.put(f"/jobs/{job_id}/summary?{query}", json=body, headers=h(ckey))
    assert reply.status_code == status, reply.get_json()
    assert reply.get_json().get("field") == field
    if status == 404:
        assert "en, es" in reply.get_json()["message"]  # the summaries it does have
