"""The `translate` kind through a real coordinator, a real worker (translate only: no audio
models load) and the real client CLI, translating with the real Apertium en→es."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.procs import ADMIN_KEY, Api, Coordinator, start_worker, stop_all
from worker.stages.subtitle_translate import parse_document

pytestmark = pytest.mark.media

SRT_EN = """1
00:00:01,000 --> 00:00:03,200
Good morning. The weather is very

2
00:00:03,400 --> 00:00:05,000
nice today, and the children are happy.

3
00:00:06,000 --> 00:00:08,500
Where is the train station?
"""


@pytest.fixture(scope="module")
def translate_fleet(tmp_path_factory):
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed")
    root = tmp_path_factory.mktemp("translate")
    coord = Coordinator(root / "coord").start()
    worker = start_worker(coord.url, root / "w", "text-worker", "--kinds", "translate",
                          "--claim-wait", "2")
    yield coord, Api(coord.url, ADMIN_KEY), root
    stop_all([worker])
    coord.kill()


def test_srt_translates_with_the_same_timings_via_the_cli(translate_fleet, tmp_path):
    coord, api, _ = translate_fleet
    src = tmp_path / "talk.srt"
    src.write_text(SRT_EN, encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "DUBFLEET_API_URL": coord.url, "DUBFLEET_API_KEY": ADMIN_KEY}
    done = subprocess.run([str(Path(sys.executable).parent / "dubfleet"), "submit", str(src),
                           "--kind", "translate", "--to", "es", "--wait", "--output", str(out),
                           # Apertium by name: other media tests install a toy Argos package in
                           # this session's sandbox, which the worker would otherwise prefer
                           "--option", "translation_engine=apertium"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    srt = parse_document((out / "subtitles.es.srt").read_bytes())
    source = parse_document(SRT_EN.encode())
    assert [(c.start, c.end) for c in srt.cues] == [(c.start, c.end) for c in source.cues]
    spanish = " ".join(c.text for c in srt.cues).lower()
    assert "tiempo" in spanish and "niños" in spanish and "tren" in spanish and "weather" not in spanish
    job = api.all_jobs()[0]
    assert job["kind"] == "translate" and job["detected_language"] == "en"  # guessed from the text
    names = {a["name"] for a in job["artifacts"]}
    assert names == {"subtitles.es.srt", "subtitles.es.vtt"} and job["main_artifact"] == "subtitles.es.srt"
    vtt = api.get(f"/jobs/{job['job_id']}/artifacts/subtitles.es.vtt").content
    assert vtt.startswith(b"WEBVTT") and len(parse_document(vtt).cues) == 3


def test_vtt_and_text_keep_their_format(translate_fleet):
    _, api, _ = translate_fleet
    apertium = '{"translation_engine": "apertium"}'
    vtt = api.submit_bytes(b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nThank you very much.\n",
                           kind="translate", filename="a.vtt", source_language="en", options=apertium)
    text = api.submit_bytes(b"The house is big.\nI like green apples.\n", kind="translate",
                            filename="notes.txt", source_language="en", options=apertium)
    vtt_view = api.wait_status(vtt["job_id"], {"completed", "failed"}, timeout=60)
    text_view = api.wait_status(text["job_id"], {"completed", "failed"}, timeout=60)
    assert vtt_view["main_artifact"] == "subtitles.es.vtt", vtt_view
    assert text_view["main_artifact"] == "translation.es.txt", text_view
    lines = api.get(f"/jobs/{text['job_id']}/download").text.strip().split("\n")
    assert len(lines) == 2 and "casa" in lines[0].lower() and "manzanas" in lines[1].lower()


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01PK\x03\x04 not text at all \xff\xfe\xfd", "not a subtitle or text file"),
    (b"1\n00:00:01,000 --> 00:00:03,000\na\n\n2\n00:00:02,000 --> 00:00:04,000\nb\n", "overlaps"),
])
def test_bad_subtitles_fail_with_the_reason_in_one_attempt(translate_fleet, data, reason):
    _, api, _ = translate_fleet
    job = api.submit_bytes(data, kind="translate", filename="bad.srt")
    view = api.wait_status(job["job_id"], {"completed", "failed"}, timeout=60)
    assert view["status"] == "failed" and reason in view["error"] and view["attempts"] == 1
