"""Correct and re-dub, end to end: a real coordinator and worker with real models.

A 20-line English talk (its lines fixed by the speaker's own subtitles) is dubbed into Spanish;
one line's translated text is edited and the video re-dubbed: exactly that line is re-voiced,
every other line re-used, the new line is in the new subtitles, the video keeps its length and
the rest of the dubbed track is unchanged.
Then a source-text edit is translated again.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from dubfleet.sample import make_sample_video
from tests.integration.procs import ADMIN_KEY, Api, Coordinator, start_worker, stop_all

pytestmark = [pytest.mark.media, pytest.mark.integration]

SENTENCES = (
    "Good morning and welcome.", "Today we bake bread.", "First, warm the water.",
    "Add a spoon of sugar.", "Stir in the yeast.", "Wait ten minutes.", "Now add the flour.",
    "Mix it with your hands.", "Add a little salt.", "Knead the dough well.",
    "Cover the bowl.", "Let it rise for an hour.", "Press the air out.", "Shape a round loaf.",
    "Heat the oven.", "Bake it for forty minutes.", "Let it cool down.", "Cut a thick slice.",
    "Enjoy it with butter.", "Thank you for watching.",
)
NEW_TEXT = "Esta frase fue corregida a mano."
RATE = 16000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A coordinator and one dubbing worker (models load once)."""
    root = tmp_path_factory.mktemp("redub")
    coord = Coordinator(root / "coord").start()
    worker = start_worker(coord.url, root / "w", "redub-worker", "--claim-wait", "5")
    yield Api(coord.url, ADMIN_KEY), root
    stop_all([worker])
    coord.kill()
    log = (root / "w" / "redub-worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def parent(fleet):
    """The original dub of the 20-line talk: (view, files)."""
    api, root = fleet
    video = root / "talk_en.mp4"
    timeline = make_sample_video(video, SENTENCES, pause=1.2)
    # The speaker's own subtitles fix the lines at 20 (the recogniser may merge short sentences).
    srt = "".join(f"{i}\n{_stamp(s.start)} --> {_stamp(s.end)}\n{s.text}\n\n"
                  for i, s in enumerate(timeline, 1))
    with open(video, "rb") as fh:
        resp = api.post("/jobs", data={"kind": "dub", "source_language": "en",
                                       "target_language": "es"},
                        files={"file": (video.name, fh), "subtitles": ("talk.en.srt", srt)})
    assert resp.status_code == 202, resp.text
    view = api.wait_status(resp.json()["job_id"], {"completed", "failed"}, timeout=900)
    assert view["status"] == "completed", view
    return view, api.download_artifacts(view, root / "parent")


def _stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _redub(api: Api, parent_id: str, segments: list[dict], out: Path) -> tuple[dict, dict]:
    resp = api.post(f"/jobs/{parent_id}/redub", json={"segments": segments})
    assert resp.status_code == 201, resp.text
    assert resp.json()["parent_job_id"] == parent_id
    view = api.wait_status(resp.json()["job_id"], {"completed", "failed"}, timeout=600)
    assert view["status"] == "completed", view
    return view, api.download_artifacts(view, out)


def _audio(path: Path) -> np.ndarray:
    """The first audio track, mono float32 at 16 kHz."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                  for f in resampler.resample(frame)]
    return np.concatenate(chunks)


def _duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def _report(files: dict) -> dict:
    return json.loads(files["dub_report.json"].read_text())


def test_editing_one_line_re_voices_only_that_line(fleet, parent):
    api, root = fleet
    view, files = parent
    rows = _report(files)["segments"]
    assert len(rows) == len(SENTENCES) and "dub_segments.tar" in files
    edited = rows[len(rows) // 2]
    new_view, new = _redub(api, view["job_id"], [{"index": edited["index"], "text": NEW_TEXT}],
                           root / "text-edit")
    report = _report(new)
    assert report["revoiced"] == [edited["index"]]
    assert report["reused"] == len(rows) - 1
    assert report["parent_job_id"] == view["job_id"]
    assert NEW_TEXT in new["subtitles.es.srt"].read_text(encoding="utf-8")
    # a dub's artifacts (the summary is the parent's: a re-dub does not summarise again)
    assert {a["name"] for a in view["artifacts"] if not a["name"].startswith("summary")} <= set(new)
    assert _duration(new["dubbed_video.mp4"]) == pytest.approx(
        _duration(files["dubbed_video.mp4"]), abs=0.05)
    row = next(r for r in report["segments"] if r["index"] == edited["index"])
    assert row["target_text"] == NEW_TEXT and row["translation_engine"] == "user"
    _assert_same_outside(files, new, [edited, row])


def _assert_same_outside(old_files: dict, new_files: dict, rows: list[dict]) -> None:
    """The dubbed tracks match everywhere but around the edited line (AAC-encoded both times,
    so equal within the codec's noise)."""
    old, new = _audio(old_files["dubbed_audio.m4a"]), _audio(new_files["dubbed_audio.m4a"])
    n = min(len(old), len(new))
    assert abs(len(old) - len(new)) < 0.05 * RATE
    keep = np.ones(n, bool)
    lo = min(r["placed_start"] or r["slot_start"] for r in rows) - 0.6
    hi = max(r["placed_end"] or r["slot_end"] for r in rows) + 0.6
    keep[max(0, int(lo * RATE)):int(hi * RATE)] = False
    diff = np.abs(old[:n] - new[:n])
    level = np.sqrt(np.mean(old[:n][keep] ** 2))
    assert np.sqrt(np.mean(diff[keep] ** 2)) < 0.05 * level
    changed = ~keep
    assert np.sqrt(np.mean(diff[changed] ** 2)) > 0.05 * level  # the edit is audible


def test_a_source_text_edit_is_translated_again(fleet, parent):
    api, root = fleet
    view, files = parent
    rows = _report(files)["segments"]
    edited = rows[2]
    _, new = _redub(api, view["job_id"], [{"index": edited["index"],
                                          "source_text": "The kitchen is very warm today."}],
                    root / "source-edit")
    report = _report(new)
    assert report["revoiced"] == [edited["index"]] and report["reused"] == len(rows) - 1
    row = next(r for r in report["segments"] if r["index"] == edited["index"])
    assert row["source_text"] == "The kitchen is very warm today."
    assert row["target_text"] and row["target_text"] != edited["target_text"]
    assert row["translation_engine"] not in ("", "user")
    transcript = json.loads(new["transcript.json"].read_text(encoding="utf-8"))
    assert any(s["text"] == "The kitchen is very warm today." for s in transcript["segments"])
