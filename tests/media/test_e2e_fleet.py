"""End to end through a real coordinator and a real worker process with real models.

A generated English video (Piper speech with pauses over a test pattern) is dubbed into Spanish;
bad media fails only its own job and the worker takes the next one.
"""
from __future__ import annotations

import functools
import http.server
import json
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from dubfleet.sample import make_sample_video
from tests.integration.procs import ADMIN_KEY, Api, Coordinator, start_worker, stop_all
from tests.media.sound import sound_onsets
from worker.stages.subtitles import parse_srt, parse_vtt

pytestmark = [pytest.mark.media, pytest.mark.integration]

EXPECTED = {"dubbed_video.mp4", "dubbed_audio.m4a", "subtitles.en.srt", "subtitles.en.vtt",
            "subtitles.es.srt", "subtitles.es.vtt", "transcript.json", "dub_report.json"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A coordinator and one worker that can run every media kind (models load once)."""
    root = tmp_path_factory.mktemp("fleet")
    coord = Coordinator(root / "coord").start()
    # --allow-private-urls: the zero-byte source below is served from 127.0.0.1.
    worker = start_worker(coord.url, root / "w", "media-worker", "--claim-wait", "5", "--allow-private-urls")
    yield coord, Api(coord.url, ADMIN_KEY), root
    stop_all([worker])
    coord.kill()
    log = (root / "w" / "media-worker.log").read_text(errors="replace")
    assert "Traceback" not in log or "BadMedia" in log, log[-4000:]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The generated English talk and where each sentence is spoken."""
    path = tmp_path_factory.mktemp("sample") / "talk_en.mp4"
    return path, make_sample_video(path, pause=1.2)


def _submit_file(api: Api, path: Path, **params) -> str:
    with open(path, "rb") as fh:
        resp = api.post("/jobs", params={"filename": path.name, **params}, data=fh,
                        headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def _audio_track(path: Path, index: int = 0, rate: int = 16000) -> np.ndarray:
    """Decode one audio track to mono float32 at `rate`."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(stream)
                  for f in resampler.resample(frame)]
    return np.concatenate(chunks)


def _duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / 1e6


def test_dub_english_video_to_spanish(fleet, sample, tmp_path):
    coord, api, _ = fleet
    video, spoken = sample
    job_id = _submit_file(api, video, kind="dub", target_language="es")
    view = api.wait_status(job_id, {"completed", "failed"}, timeout=600)
    assert view["status"] == "completed", view
    assert view["main_artifact"] == "dubbed_video.mp4" and view["detected_language"] == "en"
    files = api.download_artifacts(view, tmp_path)
    assert EXPECTED <= set(files)

    transcript = json.loads(files["transcript.json"].read_text())
    assert transcript["language"] == "en" and transcript["translation"]["target_language"] == "es"
    assert all(seg["words"] for seg in transcript["segments"])
    for name in ("subtitles.en.srt", "subtitles.es.srt"):
        assert parse_srt(files[name].read_text())
    for name in ("subtitles.en.vtt", "subtitles.es.vtt"):
        assert parse_vtt(files[name].read_text())

    report = json.loads(files["dub_report.json"].read_text())
    _check_report_timing(report, spoken)
    assert abs(_duration(files["dubbed_video.mp4"]) - _duration(video)) <= 0.5
    with av.open(str(files["dubbed_video.mp4"])) as container:
        assert len(container.streams.audio) == 2 and len(container.streams.video) == 1
    assert api.get(f"/jobs/{job_id}/download").content == files["dubbed_video.mp4"].read_bytes()


def _check_report_timing(report: dict, spoken) -> None:
    rows = report["segments"]
    assert len(rows) >= len(spoken) - 1
    for row in rows:
        assert row["target_text"] and row["engine"]
        assert row["onset_method"] in ("energy", "word", "segment"), row
        assert abs(row["placed_start"] - row["onset"]) <= 0.05, row  # placed on the speech onset
        assert row["speed"] <= report["max_speed"] + 1e-6
    for a, b in zip(rows, rows[1:]):
        assert a["placed_end"] <= b["placed_start"] + 1e-6, (a, b)
    starts = [s.start for s in spoken]
    for row in rows:  # every dubbed slot sits on a spoken sentence of the source
        assert min(abs(row["slot_start"] - s) for s in starts) < 0.6 or \
            any(s.start <= row["slot_start"] <= s.end for s in spoken), row


def test_voice_only_dub_timing_from_decoded_output(fleet, sample, tmp_path):
    """Decode the dubbed track: speech starts where the report says, and it is Spanish."""
    coord, api, _ = fleet
    video, _ = sample
    job_id = _submit_file(api, video, kind="dub", source_language="en",
                          options='{"keep_original": false}')
    view = api.wait_status(job_id, {"completed", "failed"}, timeout=600)
    assert view["status"] == "completed", view
    files = api.download_artifacts(view, tmp_path)
    report = json.loads(files["dub_report.json"].read_text())
    voice = _audio_track(files["dubbed_video.mp4"], 0)
    onsets = _onsets(voice, 16000)
    for row in report["segments"]:
        if row["synth_duration"] > 0:
            nearest = min(onsets, key=lambda t: abs(t - row["placed_start"]))
            assert abs(nearest - row["onset"]) <= 0.05, (row, nearest)

    from worker.stages.transcribe import Transcriber
    from worker.stages.types import DecodedAudio
    import soundfile as sf

    wav = tmp_path / "dub16k.wav"
    sf.write(wav, voice, 16000)
    lang, prob = Transcriber("base").detect_language(DecodedAudio(wav, 16000, len(voice) / 16000))
    assert lang == "es", (lang, prob)


_onsets = sound_onsets  # fit keeps a 50 ms gap between lines: 30 ms of quiet splits them


@pytest.fixture(scope="module")
def empty_url(tmp_path_factory):
    """A local HTTP server that serves a zero-byte file (a source_url job with no data)."""
    root = tmp_path_factory.mktemp("www")
    (root / "empty.mp4").write_bytes(b"")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/empty.mp4"
    server.shutdown()


@pytest.mark.parametrize("name, reason", [
    ("text.mp4", "not a media file"),
    ("truncated.mp4", "truncated"),
    ("silent_video.mp4", "no audio"),
])
def test_bad_media_fails_with_reason(fleet, media_dir, name, reason):
    coord, api, _ = fleet
    job_id = _submit_file(api, media_dir / name, kind="transcribe")
    view = api.wait_status(job_id, {"completed", "failed"}, timeout=300)
    assert view["status"] == "failed" and reason in view["error"], view
    assert view["attempts"] == 1, "a permanent media error must not be retried"
    _worker_takes_next(api, media_dir)


def test_zero_bytes(fleet, media_dir, empty_url):
    coord, api, _ = fleet
    resp = api.post("/jobs", files={"file": ("empty.mp4", b"")}, data={"kind": "transcribe"})
    assert resp.status_code == 400 and resp.json()["error"]
    resp = api.post("/jobs", json={"source_url": empty_url, "kind": "transcribe"})
    assert resp.status_code == 202, resp.text
    view = api.wait_status(resp.json()["job_id"], {"completed", "failed"}, timeout=300)
    assert view["status"] == "failed" and "empty" in view["error"], view
    _worker_takes_next(api, media_dir)


def test_silence_completes_with_empty_transcript(fleet, media_dir, tmp_path):
    coord, api, _ = fleet
    job_id = _submit_file(api, media_dir / "silence.wav", kind="transcribe", source_language="en")
    view = api.wait_status(job_id, {"completed", "failed"}, timeout=300)
    assert view["status"] == "completed", view
    files = api.download_artifacts(view, tmp_path)
    assert json.loads(files["transcript.json"].read_text())["segments"] == []


def _worker_takes_next(api: Api, media_dir: Path) -> None:
    job_id = _submit_file(api, media_dir / "tone.wav", kind="transcribe", source_language="en")
    assert api.wait_status(job_id, {"completed", "failed"}, timeout=300)["status"] == "completed"


def test_cancel_running_dub_stops_promptly(fleet, sample, media_dir):
    coord, api, _ = fleet
    video, _ = sample
    job_id = _submit_file(api, video, kind="dub", target_language="es")
    deadline = time.monotonic() + 120
    while api.get(f"/jobs/{job_id}").json()["stage"] not in ("transcribing", "synthesizing"):
        assert time.monotonic() < deadline, "the dub never started"
        time.sleep(0.1)
    asked = time.monotonic()
    assert api.request("DELETE", f"/jobs/{job_id}").json()["cancel_requested"] is True
    view = api.wait_status(job_id, {"cancelled", "completed", "failed"}, timeout=60)
    assert view["status"] == "cancelled", view
    assert time.monotonic() - asked < 30, "cancellation took longer than a heartbeat or two"
    _worker_takes_next(api, media_dir)
