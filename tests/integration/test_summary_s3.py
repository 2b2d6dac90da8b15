"""PUT /jobs/<id>/summary with object storage (STORAGE_URL=s3://…, moto's S3 server): the edit is
written into the bucket by the store's own `write_artifact` and downloaded through the redirect."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("psutil")  # the object storage tests' helpers need it

from tests.integration.procs import WORKER_KEY, Api  # noqa: E402
from tests.integration.test_s3_storage import (  # noqa: E402,F401 (s3, s3_env: fixtures)
    _claim, _fetch, _prefix, _store_outputs, s3, s3_env)

pytestmark = pytest.mark.integration

ORIGINAL = {"version": 1, "title": "Rivers", "language": "en", "duration": 60.0,
            "method": "extractive", "notes": [],
            "key_points": [{"text": "Rain feeds rivers.", "start": 3.0, "end": 6.0},
                           {"text": "Cities flood fast.", "start": 30.0, "end": 33.0},
                           {"text": "Lag time helps.", "start": 50.0, "end": 53.0}],
            "chapters": [{"start": 0.0, "end": 25.0, "title": "Where rivers come from"},
                         {"start": 25.0, "end": 60.0, "title": "Floods"}]}
SPANISH = {**ORIGINAL, "title": "Ríos", "language": "es",
           "key_points": [{"text": "La lluvia alimenta los ríos.", "start": 3.0, "end": 6.0},
                          {"text": "Las ciudades se inundan.", "start": 30.0, "end": 33.0},
                          {"text": "El retardo ayuda.", "start": 50.0, "end": 53.0}],
           "chapters": [{"start": 0.0, "end": 25.0, "title": "De dónde vienen los ríos"},
                        {"start": 25.0, "end": 60.0, "title": "Inundaciones"}]}


def _finish_with_summaries(coord, job_id: str) -> None:
    """Claim `job_id` by hand and publish the worker's summaries through upload slots."""
    worker = Api(coord.url, WORKER_KEY)
    token = _claim(coord, job_id)["lease_token"]
    files = (("summary.json", json.dumps(ORIGINAL).encode(), 0),
             ("summary.es.json", json.dumps(SPANISH).encode(), 0),
             ("dubbed_video.mp4", b"dubbed", 1))
    _store_outputs(worker, job_id, token, files)


def _edited_keys(s3, s3_env, job_id: str) -> list[str]:
    """The bucket's objects of the job's edited summaries."""
    return [k for k in s3.keys(f"{_prefix(s3_env)}artifacts/{job_id}/") if ".edited." in k]


def test_summary_edits_are_stored_in_the_bucket(coordinator_factory, s3, s3_env):
    """Both summaries' edits go into the bucket; a second edit replaces (and deletes) the first;
    the client reads them back through the presigned redirect."""
    coord = coordinator_factory(env=s3_env).start()
    alice = Api(coord.url, coord.create_key("client", "alice"))
    job_id = alice.submit_bytes(b"video", kind="dub", target_language="es")["job_id"]
    _finish_with_summaries(coord, job_id)

    for title in ("First try", "Rivers, edited"):
        reply = alice.request("PUT", f"/jobs/{job_id}/summary", json={**ORIGINAL, "title": title})
        assert reply.status_code == 200, reply.text
    reply = alice.request("PUT", f"/jobs/{job_id}/summary", params={"language": "es"},
                          json={**SPANISH, "title": "Ríos, editado"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["artifacts"] == ["summary.es.edited.json", "summary.es.edited.md"]

    route = f"/jobs/{job_id}/artifacts"
    first, stored = _fetch(alice, f"{route}/summary.edited.json")
    assert s3.url in first.headers["Location"]  # the bytes come from the store, not the coordinator
    assert stored.json()["title"] == "Rivers, edited" and stored.json()["method"] == "edited"
    assert _fetch(alice, f"{route}/summary.edited.md")[1].text.startswith("# Rivers, edited\n")
    spanish = _fetch(alice, f"{route}/summary.es.edited.json")[1].json()
    assert spanish["title"] == "Ríos, editado" and spanish["language"] == "es"
    assert _fetch(alice, f"{route}/summary.json")[1].json()["title"] == ORIGINAL["title"]
    assert len(_edited_keys(s3, s3_env, job_id)) == 4  # two per summary: the first edit is gone
