"""A dub's own subtitles against a real waitress coordinator: submit, 422s, the worker download
under the lease, and the file's life with its job (orphan sweep, retention)."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.procs import ADMIN_KEY, Api

pytestmark = pytest.mark.integration

SRT_ES = """1
00:00:00,800 --> 00:00:02,400
Hola a todos y bienvenidos.

2
00:00:03,000 --> 00:00:04,500
Hoy vamos a hablar de la casa.
""".encode()

SRT_EN = b"""1
00:00:00,800 --> 00:00:02,400
Hello and welcome to the show.

2
00:00:03,000 --> 00:00:04,500
Today we talk about the house and the garden.
"""

VTT_NO_HINT = b"""WEBVTT

00:00:00.800 --> 00:00:02.400
12345

00:00:03.000 --> 00:00:04.500
67890
"""


def _submit(api: Api, subtitles: bytes | None, name: str = "talk.srt", video: bytes = b"fake video",
            **fields: str):
    files = {"file": ("talk.mp4", video)}
    if subtitles is not None:
        files["subtitles"] = (name, subtitles)
    return api.post("/jobs", files=files, data={"kind": "dub", "target_language": "es", **fields})


def _error(resp, status: int = 422) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    return body


def _claim(worker_api: Api, job_id: str) -> dict:
    info = {"worker_id": "w", "session_id": uuid.uuid4().hex, "kinds": ["dub"],
            "target_languages": ["es"], "asr_models": ["base"]}
    resp = worker_api.post(f"/jobs/{job_id}/claim", json=info)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_submit_with_target_language_subtitles(coordinator, admin: Api, worker_api: Api):
    resp = _submit(admin, SRT_ES, name="talk.es.srt", source_language="en")
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["options"]["subtitles_language"] == "es" and view["options"]["subtitles"] == "target"
    assert view["subtitles"] == {"size": len(SRT_ES), "sha256": hashlib.sha256(SRT_ES).hexdigest(),
                                 "language": "es", "used_as": "target"}
    assert view["input_size"] == len(b"fake video")

    claimed = _claim(worker_api, job_id)
    assert claimed["subtitles_size"] == len(SRT_ES)
    assert claimed["subtitles_sha256"] == hashlib.sha256(SRT_ES).hexdigest()
    lease = {"X-Lease-Token": claimed["lease_token"]}
    got = worker_api.get(f"/jobs/{job_id}/download-subtitles", headers=lease)
    assert got.status_code == 200 and got.content == SRT_ES
    assert got.headers["X-Content-SHA256"] == claimed["subtitles_sha256"]
    part = worker_api.get(f"/jobs/{job_id}/download-subtitles", headers={**lease, "Range": "bytes=2-9"})
    assert part.status_code == 206 and part.content == SRT_ES[2:10]
    assert worker_api.get(f"/jobs/{job_id}/download-input", headers=lease).content == b"fake video"


@pytest.mark.parametrize("subtitles, name, fields, language, role", [
    (SRT_EN, "talk.srt", {"source_language": "en"}, "en", "source"),  # words: en over es
    (SRT_EN, "talk.srt", {}, "en", "source"),  # source auto: any other language is the source
    (SRT_ES, "talk.srt", {}, "es", "target"),
    (VTT_NO_HINT, "talk.vtt", {"subtitles_language": "es"}, "es", "target"),  # the field wins
    (VTT_NO_HINT, "talk.en.vtt", {"source_language": "en"}, "en", "source"),  # the file name
    (SRT_EN, "talk.srt", {"options": '{"subtitles_language": "es"}'}, "es", "target"),  # option
])
def test_language_and_role_are_recorded(coordinator, admin: Api, subtitles, name, fields,
                                        language, role):
    resp = _submit(admin, subtitles, name=name, **fields)
    assert resp.status_code == 202, resp.text
    view = admin.get(f"/jobs/{resp.json()['job_id']}").json()
    assert (view["options"]["subtitles_language"], view["options"]["subtitles"]) == (language, role)


def test_a_job_without_subtitles_has_none(coordinator, admin: Api, worker_api: Api):
    job_id = _submit(admin, None).json()["job_id"]
    assert admin.get(f"/jobs/{job_id}").json()["subtitles"] is None
    claimed = _claim(worker_api, job_id)
    assert claimed["subtitles_sha256"] is None
    resp = worker_api.get(f"/jobs/{job_id}/download-subtitles",
                          headers={"X-Lease-Token": claimed["lease_token"]})
    _error(resp, 404)


BAD = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "talk.srt", "not a subtitle"),
    (b"Hola a todos.\nHoy hablamos de la casa.\n", "talk.es.txt", "not SRT or WebVTT"),
    (b"", "talk.es.srt", "empty"),
    (b"\n\n  \n", "talk.es.srt", "empty"),
    (b"WEBVTT\n\n", "talk.es.vtt", "no cues"),
    (b"1\n00:00:01,000 --> 00:00:03,000\nuno\n\n2\n00:00:02,000 --> 00:00:04,000\ndos\n",
     "talk.es.srt", "overlaps"),
    (b"1\n-00:00:01,000 --> 00:00:02,000\nuno\n", "talk.es.srt", "negative"),
    (b"1\n00:00:03,000 --> 00:00:02,000\nuno\n", "talk.es.srt", "ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:0x,000\nuno\n", "talk.es.srt", "malformed"),
]


@pytest.mark.parametrize("data, name, reason", BAD, ids=[b[2] for b in BAD])
def test_bad_subtitles_are_422_and_store_nothing(coordinator, admin: Api, data, name, reason):
    body = _error(_submit(admin, data, name=name))
    assert body["field"] == "subtitles" and reason in body["message"], body
    assert admin.get("/jobs").json()["total"] == 0
    assert not any((coordinator.data_dir / "inputs").iterdir())


@pytest.mark.parametrize("files, data, field, reason", [
    ({"subtitles": ("a.es.srt", SRT_ES)}, {"kind": "transcribe"}, "subtitles", "dub jobs only"),
    ({"subtitles": ("a.es.srt", SRT_ES)}, {"kind": "echo"}, "subtitles", "dub jobs only"),
    ({}, {"kind": "dub", "subtitles_language": "es"}, "subtitles_language", "needs a 'subtitles'"),
    ({}, {"kind": "dub", "options": '{"subtitles": "target"}'}, "options", "set by the coordinator"),
    ({"subtitles": ("a.srt", SRT_ES)}, {"kind": "dub", "subtitles_language": "xx"},
     "subtitles_language", "unknown language"),
    ({"subtitles": ("a.srt", SRT_EN)}, {"kind": "dub", "source_language": "en",
                                        "subtitles_language": "fr"}, "subtitles_language",
     "source or the target"),
    ({"subtitles": ("a.vtt", VTT_NO_HINT)}, {"kind": "dub"}, "subtitles_language",
     "could not tell the language"),
])
def test_subtitle_fields_that_do_not_fit_are_422(coordinator, admin: Api, files, data, field,
                                                 reason):
    resp = admin.post("/jobs", files={"file": ("talk.mp4", b"fake video"), **files},
                      data={"target_language": "es", **data})
    body = _error(resp)
    assert body["field"] == field and reason in body["message"], body
    assert admin.get("/jobs").json()["total"] == 0


def test_oversize_subtitles_are_422(coordinator_factory):
    coord = coordinator_factory(env={"MAX_SUBTITLES_KB": "1"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    cues = b"".join(b"%d\n00:00:%02d,000 --> 00:00:%02d,500\nHola a todos, hoy la casa.\n\n"
                    % (i + 1, i, i) for i in range(40))
    assert len(cues) > 1024
    body = _error(_submit(admin, cues, name="talk.es.srt"))
    assert body["field"] == "subtitles" and "MAX_SUBTITLES_KB" in body["message"]
    assert _submit(admin, cues[:900].rsplit(b"\n\n", 1)[0] + b"\n", name="talk.es.srt").status_code == 202


def test_subtitles_download_requires_the_lease(coordinator, admin: Api, worker_api: Api):
    job_id = _submit(admin, SRT_ES, name="talk.es.srt").json()["job_id"]
    # before any claim: no lease to show
    _error(worker_api.get(f"/jobs/{job_id}/download-subtitles"), 409)
    claimed = _claim(worker_api, job_id)
    for headers in ({}, {"X-Lease-Token": claimed["lease_token"] + "x"}, {"X-Lease-Token": "nope"}):
        body = _error(worker_api.get(f"/jobs/{job_id}/download-subtitles", headers=headers), 409)
        assert body["error"] == "lease_lost" and body["job_status"] == "running"
    # a client key cannot reach the worker endpoint, not even with the token
    client = Api(coordinator.url, coordinator.create_key("client", "alice"))
    _error(client.get(f"/jobs/{job_id}/download-subtitles",
                      headers={"X-Lease-Token": claimed["lease_token"]}), 403)
    # the lease holder can, and its download confirms the claim
    ok = worker_api.get(f"/jobs/{job_id}/download-subtitles",
                        headers={"X-Lease-Token": claimed["lease_token"]})
    assert ok.status_code == 200 and ok.content == SRT_ES
    # once the lease has ended (released), the old token is refused
    assert worker_api.post(f"/jobs/{job_id}/release",
                           headers={"X-Lease-Token": claimed["lease_token"]}).status_code == 200
    _error(worker_api.get(f"/jobs/{job_id}/download-subtitles",
                          headers={"X-Lease-Token": claimed["lease_token"]}), 409)
    _error(worker_api.get("/jobs/0123/download-subtitles"), 404)


def test_subtitles_live_and_die_with_their_job(coordinator_factory):
    """The orphan sweep (no grace) keeps a live job's subtitles; retention removes them with it."""
    coord = coordinator_factory(env={"ORPHAN_GRACE_SECONDS": "0", "ORPHAN_SWEEP_INTERVAL": "0.2",
                                     "RETENTION_DAYS": "30"}).start()
    admin = Api(coord.url, ADMIN_KEY)
    kept = _submit(admin, SRT_ES, name="talk.es.srt").json()["job_id"]
    old = _submit(admin, SRT_ES, name="talk.es.srt").json()["job_id"]
    assert admin.request("DELETE", f"/jobs/{old}").json()["status"] == "cancelled"
    with sqlite3.connect(coord.data_dir / "coordinator.db") as conn:
        conn.execute("UPDATE jobs SET finished_at = ?, created_at = ? WHERE id = ?",
                     (time.time() - 40 * 86400, time.time() - 40 * 86400, old))
    inputs = coord.data_dir / "inputs"
    deadline = time.monotonic() + 20
    while (inputs / old).exists():
        assert time.monotonic() < deadline, "retention did not remove the old job's files"
        time.sleep(0.1)
    time.sleep(0.6)  # a few more sweeps with no grace
    assert sorted(p.name for p in (inputs / kept).iterdir()) == ["input", "subtitles"]
    assert (inputs / kept / "subtitles").read_bytes() == SRT_ES
    assert admin.get(f"/jobs/{old}").status_code == 404


def _cli(coordinator, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DUBFLEET_API_URL": coordinator.url, "DUBFLEET_API_KEY": ADMIN_KEY}
    return subprocess.run([str(Path(sys.executable).parent / "dubfleet"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_client_cli_submits_video_and_subtitles_in_one_streamed_body(coordinator, admin: Api,
                                                                     tmp_path):
    video = tmp_path / "charla ñ.mp4"
    video.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # several chunks
    subs = tmp_path / "charla ñ.es.srt"
    subs.write_bytes(SRT_ES)
    done = _cli(coordinator, "submit", str(video), "--subtitles", str(subs), "--from", "en")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.strip()
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["input_name"] == "charla ñ.mp4" and view["input_size"] == video.stat().st_size
    assert view["subtitles"]["language"] == "es" and view["subtitles"]["used_as"] == "target"
    stored = coordinator.data_dir / "inputs" / job_id
    assert (stored / "input").read_bytes() == video.read_bytes()
    assert (stored / "subtitles").read_bytes() == SRT_ES

    en = tmp_path / "notes.srt"
    en.write_bytes(VTT_NO_HINT)
    done = _cli(coordinator, "submit", str(video), "--subtitles", str(en),
                "--subtitles-language", "en", "--option", "translation_engine=apertium")
    assert done.returncode == 0, done.stdout + done.stderr
    view = admin.get(f"/jobs/{done.stdout.strip()}").json()
    assert view["options"] == {"translation_engine": "apertium", "subtitles_language": "en",
                               "subtitles": "source"}


def test_client_cli_shows_the_reason_of_a_refusal(coordinator, admin: Api, tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"fake video")
    bad = tmp_path / "talk.es.srt"
    bad.write_bytes(b"1\n00:00:01,000 --> 00:00:03,000\nuno\n\n2\n00:00:02,000 --> 00:00:04,000\ndos\n")
    done = _cli(coordinator, "submit", str(video), "--subtitles", str(bad))
    assert done.returncode != 0 and "overlaps" in done.stderr and "422" in done.stderr
    done = _cli(coordinator, "submit", str(video), "--kind", "transcribe", "--subtitles", str(bad))
    assert done.returncode != 0 and "dub jobs only" in done.stderr
    done = _cli(coordinator, "submit", str(video), "--subtitles-language", "es")
    assert done.returncode == 2 and "needs --subtitles" in done.stderr
    assert admin.get("/jobs").json()["total"] == 0
