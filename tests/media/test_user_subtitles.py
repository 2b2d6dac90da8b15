"""A dub with the user's own subtitles, through a real coordinator, a real worker process and
real engines (espeak-ng voices; Apertium translates source-language subtitles).

The source video is generated: Piper speaks three English sentences with pauses, so where each
sentence starts is known. No speech recogniser runs: the worker's log never loads whisper, and
the transcript and report say the text came from the subtitles.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from dubfleet.sample import make_sample_video
from shared.subtitles import parse_document
from tests.integration.procs import ADMIN_KEY, Api, Coordinator, start_worker, stop_all
from tests.media.sound import sound_onsets

pytestmark = [pytest.mark.media, pytest.mark.integration]

SENTENCES = ("Hello and welcome to this short video.",
             "Today we will learn how to make fresh bread at home.",
             "Thank you for watching.")
SPANISH = ("Hola y bienvenidos a este vídeo corto.",
           "Hoy vamos a aprender a hacer pan fresco en casa.",
           "Gracias por mirar.")
# The dubbed track alone, voiced quickly by espeak-ng with its default Spanish voice.
OPTIONS = {"keep_original": False, "tts_engines": ["espeak"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A coordinator and one dub worker (no model is loaded until a job needs it)."""
    if shutil.which("espeak-ng") is None or shutil.which("apertium") is None:
        pytest.skip("espeak-ng and apertium are needed")
    root = tmp_path_factory.mktemp("subs-fleet")
    coord = Coordinator(root / "coord").start()
    worker = start_worker(coord.url, root / "w", "subs-worker", "--kinds", "dub",
                          "--claim-wait", "2")
    yield Api(coord.url, ADMIN_KEY), root / "w" / "subs-worker.log"
    stop_all([worker])
    coord.kill()


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """The generated English talk and where each sentence is spoken."""
    path = tmp_path_factory.mktemp("talk") / "talk.mp4"
    return path, make_sample_video(path, sentences=SENTENCES, pause=1.0)


def _srt(texts, spoken) -> bytes:
    """An SRT with one cue per spoken sentence, at its real start and end."""
    def ts(t: float) -> str:
        ms = int(round(t * 1000))
        return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return "\n".join(f"{i}\n{ts(s.start)} --> {ts(s.end)}\n{text}\n"
                     for i, (text, s) in enumerate(zip(texts, spoken), 1)).encode()


def _dub(api: Api, video: Path, subtitles: bytes, name: str, options: dict, **fields) -> dict:
    with open(video, "rb") as fh:
        resp = api.post("/jobs", files={"file": (video.name, fh), "subtitles": (name, subtitles)},
                        data={"kind": "dub", "target_language": "es",
                              "options": json.dumps(options), **fields})
    assert resp.status_code == 202, resp.text
    return api.wait_status(resp.json()["job_id"], {"completed", "failed"}, timeout=300)


def _voice_track(path: Path, rate: int = 16000) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])
                  for f in resampler.resample(frame)]
    return np.concatenate(chunks)


def _onsets(audio: np.ndarray, rate: int = 16000) -> list[float]:
    """Where sound starts after at least 0.2 s of silence."""
    return sound_onsets(audio, rate, min_quiet=0.2)


def _no_recogniser(log: Path) -> None:
    text = log.read_text(errors="replace")
    assert "loading whisper model" not in text and "transcribed" not in text, text[-3000:]


def test_target_language_subtitles_are_voiced_at_their_cues(fleet, talk, tmp_path):
    api, log = fleet
    video, spoken = talk
    srt = _srt(SPANISH, spoken)
    view = _dub(api, video, srt, "talk.es.srt", OPTIONS, source_language="en")
    assert view["status"] == "completed", view
    assert view["subtitles"]["used_as"] == "target" and view["main_artifact"] == "dubbed_video.mp4"
    files = api.download_artifacts(view, tmp_path)
    assert {"dubbed_video.mp4", "dubbed_audio.m4a", "subtitles.es.srt", "subtitles.es.vtt",
            "transcript.json", "dub_report.json"} <= set(files)
    assert not any(name.startswith("subtitles.en") for name in files)  # nothing was recognised

    report = json.loads(files["dub_report.json"].read_text())
    assert report["subtitles"] == "target" and report["asr_model"] is None
    assert report["translation_engine"] == "user"
    transcript = json.loads(files["transcript.json"].read_text())
    assert transcript["text_source"] == "user_subtitles" and transcript["segments"] == []
    assert transcript["user_subtitles"]["used_as"] == "target"
    assert [s["text"] for s in transcript["translation"]["segments"]] == list(SPANISH)

    rows = report["segments"]
    assert [r["target_text"] for r in rows] == list(SPANISH)  # each cue voiced, as written
    for row, said in zip(rows, spoken):
        assert row["synth_duration"] > 0.5 and row["engine"] == "espeak", row
        assert row["slot_start"] == pytest.approx(said.start, abs=1e-3)
        assert abs(row["placed_start"] - said.start) <= 0.15, row
    onsets = _onsets(_voice_track(files["dubbed_video.mp4"]))
    for said in spoken:  # the dubbed track's speech starts at each cue
        assert min(abs(t - said.start) for t in onsets) <= 0.15, (said, onsets)
    out_cues = parse_document(files["subtitles.es.srt"].read_bytes()).cues
    assert [round(c.start, 2) for c in out_cues] == [round(s.start, 2) for s in spoken]
    _no_recogniser(log)


def test_source_language_subtitles_are_translated_and_voiced(fleet, talk, tmp_path):
    api, log = fleet
    video, spoken = talk
    srt = _srt(SENTENCES, spoken)
    view = _dub(api, video, srt, "talk.srt", {**OPTIONS, "translation_engine": "apertium"})
    assert view["status"] == "completed", view
    assert (view["subtitles"]["language"], view["subtitles"]["used_as"]) == ("en", "source")
    assert view["detected_language"] == "en"
    files = api.download_artifacts(view, tmp_path)
    assert {"subtitles.en.srt", "subtitles.es.srt", "dubbed_video.mp4"} <= set(files)

    report = json.loads(files["dub_report.json"].read_text())
    assert report["subtitles"] == "source" and report["asr_model"] is None
    assert "apertium" in report["translation_engine"]
    transcript = json.loads(files["transcript.json"].read_text())
    assert transcript["text_source"] == "user_subtitles" and transcript["language"] == "en"
    assert [s["text"] for s in transcript["segments"]] == list(SENTENCES)
    assert all(s["words"] == [] for s in transcript["segments"])
    spanish = " ".join(r["target_text"] for r in report["segments"]).lower()
    assert "pan" in spanish and "gracias" in spanish and "bread" not in spanish, spanish
    for row, said in zip(report["segments"], spoken):
        assert row["synth_duration"] > 0.5 and abs(row["placed_start"] - said.start) <= 0.15, row
    source_cues = parse_document(files["subtitles.en.srt"].read_bytes()).cues
    assert [round(c.start, 2) for c in source_cues] == [round(s.start, 2) for s in spoken]
    _no_recogniser(log)


def test_subtitles_past_the_media_end_fail_the_job_once_with_the_reason(fleet, talk):
    api, _ = fleet
    video, _ = talk
    late = b"1\n01:00:00,000 --> 01:00:02,000\nHola a todos y bienvenidos a la casa.\n"
    view = _dub(api, video, late, "late.es.srt", OPTIONS)
    assert view["status"] == "failed" and "end of the media" in view["error"], view
    assert view["attempts"] == 1
