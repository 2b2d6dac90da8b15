"""dub_report rows: the translation engine and note of each line and the flags derived from the
note (mt_fallback, mt_retried, shortened), merged with the TTS and fit flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.stages.outputs import _mt_flags, dub_report, write_report
from worker.stages.types import PlacedSegment, SynthesizedSegment, TranslatedSegment


def tseg(index, note="", engine="llm", start=None):
    start = float(index) * 2 if start is None else start
    return TranslatedSegment(index=index, start=start, end=start + 1.5,
                             source_text=f"source {index}", text=f"texto {index}",
                             engine=engine, note=note)


def synth(index, flags=()):
    return SynthesizedSegment(index=index, wav_path=Path(f"/tmp/{index}.wav"), duration=1.2,
                              engine="kokoro", flags=tuple(flags))


def placed(index, flags=()):
    start = float(index) * 2
    return PlacedSegment(index=index, slot_start=start, slot_end=start + 1.5,
                         placed_start=start, placed_end=start + 1.2, synth_duration=1.2,
                         speed=1.0, engine="kokoro", flags=tuple(flags))


NOTES = [
    ("", "llm", []),
    ("retried: empty", "llm", ["mt_retried"]),
    ("fallback: llm wrong_language", "apertium", ["mt_fallback"]),
    ("unchecked: empty, no fallback engine", "llm", ["mt_fallback"]),
    ("shortened: 20→9 syllables for 2.00 s", "llm", ["shortened"]),
    ("retried: too_long; shortened: 14→8 syllables for 1.20 s", "llm",
     ["mt_retried", "shortened"]),
    ("fallback: llm number_lost; shortened: 12→7 syllables for 1.00 s", "apertium",
     ["mt_fallback", "shortened"]),
    ("repaired: selfish→egoísta", "llm", []),
    ("retried: empty; repaired: selfish→egoísta", "llm", ["mt_retried"]),
]


@pytest.mark.parametrize("note,engine,flags", NOTES)
def test_row_carries_engine_note_and_flags(note, engine, flags):
    seg = tseg(0, note, engine)
    report = dub_report([seg], [synth(0)], [placed(0)], {"segments": 1}, {"job_id": "j"})
    [row] = report["segments"]
    assert row["translation_engine"] == engine
    assert row["translation_note"] == (note or None)
    assert row["flags"] == sorted(flags)


@pytest.mark.parametrize("note,engine,flags", NOTES)
def test_mt_flags(note, engine, flags):
    assert sorted(_mt_flags(tseg(0, note, engine))) == sorted(flags)


def test_flags_merge_tts_fit_and_mt_flags_sorted_and_unique():
    seg = tseg(0, "fallback: llm empty; shortened: 9→5 syllables for 0.80 s", "apertium")
    report = dub_report([seg], [synth(0, ["trimmed"])], [placed(0, ["sped_up", "trimmed"])],
                        {}, {})
    assert report["segments"][0]["flags"] == ["mt_fallback", "shortened", "sped_up", "trimmed"]


def test_rows_for_several_lines_in_time_order():
    timeline = [tseg(2, "retried: empty", start=4.0), tseg(0, start=0.0),
                tseg(1, "fallback: llm too_long", "apertium", start=2.0)]
    report = dub_report(timeline, [synth(i) for i in range(3)], [placed(i) for i in range(3)],
                        {"segments": 3}, {"job_id": "abc", "target_language": "es"})
    rows = report["segments"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["translation_engine"] for r in rows] == ["llm", "apertium", "llm"]
    assert [r["translation_note"] for r in rows] == [None, "fallback: llm too_long",
                                                     "retried: empty"]
    assert [r["flags"] for r in rows] == [[], ["mt_fallback"], ["mt_retried"]]
    assert [r["target_text"] for r in rows] == ["texto 0", "texto 1", "texto 2"]
    assert report["job_id"] == "abc" and report["summary"]["segments"] == 3
    assert report["summary"]["translation"] == {
        "engines": {"apertium": 1, "llm": 2}, "retried": 1, "fallback": 1, "repaired": 0,
        "shortened": report["summary"]["translation"]["shortened"]}


def test_unvoiced_line_still_reports_its_translation():
    report = dub_report([tseg(0, "unchecked: empty, no fallback engine")], [], [], {}, {})
    [row] = report["segments"]
    assert row["translation_engine"] == "llm" and row["flags"] == ["mt_fallback"]
    assert row["engine"] == "" and row["synth_duration"] == 0.0 and row["placed_start"] is None


def test_segment_without_engine_or_note():
    seg = TranslatedSegment(index=0, start=0.0, end=1.0, source_text="hi", text="hola")
    [row] = dub_report([seg], [], [], {}, {})["segments"]
    assert row["translation_engine"] == "" and row["translation_note"] is None
    assert row["flags"] == []


def test_report_with_notes_is_written_as_json(tmp_path):
    report = dub_report([tseg(0, "repaired: selfish→egoísta")], [synth(0)], [placed(0)], {}, {})
    out = write_report(tmp_path, report)
    data = json.loads(out.path.read_text(encoding="utf-8"))
    assert data["segments"][0]["translation_note"] == "repaired: selfish→egoísta"
    assert "selfish→egoísta" in out.path.read_text(encoding="utf-8")  # not \u-escaped
