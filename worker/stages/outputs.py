"""Write the text artifacts of a media job: JSON transcript, SRT/VTT subtitles, dub report."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

from worker.context import OutputFile
from worker.stages.onset import Onset, onset_summary
from worker.stages.subtitles import write_srt, write_vtt
from worker.stages.types import (
    PlacedSegment, SynthesizedSegment, Transcript, Translation, TranslatedSegment,
)

JSON = "application/json"
SRT = "application/x-subrip"
VTT = "text/vtt"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def transcript_dict(transcript: Transcript, translation: Translation | None = None) -> dict:
    """The JSON transcript: language, segments with words, and the translation if any."""
    segments = [{
        "index": s.index, "start": _round(s.start), "end": _round(s.end), "text": s.text,
        "avg_logprob": _round(s.avg_logprob), "no_speech_prob": _round(s.no_speech_prob),
        "words": [{"start": _round(w.start), "end": _round(w.end), "word": w.text,
                   "probability": _round(w.probability)} for w in s.words],
    } for s in transcript.segments]
    data = {"language": transcript.language,
            "language_probability": _round(transcript.language_probability),
            "duration": _round(transcript.duration), "model": transcript.model,
            "segments": segments, "translation": None}
    if translation is not None:
        data["translation"] = {
            "engine": translation.engine, "source_language": translation.source_language,
            "target_language": translation.target_language,
            "segments": [{"index": t.index, "start": _round(t.start), "end": _round(t.end),
                          "source_text": t.source_text, "text": t.text, "engine": t.engine}
                         for t in translation.segments]}
    return data


def write_transcript(out_dir: Path, transcript: Transcript,
                     translation: Translation | None = None) -> OutputFile:
    """Write transcript.json."""
    path = out_dir / "transcript.json"
    path.write_text(json.dumps(transcript_dict(transcript, translation), ensure_ascii=False,
                               indent=2), encoding="utf-8")
    return OutputFile("transcript.json", path, JSON)


def write_subtitles(out_dir: Path, segments: Sequence, language: str) -> list[OutputFile]:
    """Write subtitles.<lang>.srt and .vtt for timed segments."""
    lang = language or "und"
    srt = write_srt(segments, out_dir / f"subtitles.{lang}.srt")
    vtt = write_vtt(segments, out_dir / f"subtitles.{lang}.vtt")
    return [OutputFile(srt.name, srt, SRT), OutputFile(vtt.name, vtt, VTT)]


def dub_report(timeline: Sequence[TranslatedSegment], synthesized: Sequence[SynthesizedSegment],
               placed: Sequence[PlacedSegment], summary: dict, meta: dict,
               onsets: Mapping[int, Onset] | None = None) -> dict:
    """Per-segment timing report: texts, slot, onset, synthesized length, speed, engine, flags.

    `slot_start` is the recogniser's segment start; `onset` is where the line was placed
    (`onset_method`: "energy" = speech onset found in the source audio, "word" = the first
    word's timestamp, "segment" = the segment start) and `onset_shift` how far it moved.
    """
    synth = {s.index: s for s in synthesized}
    place = {p.index: p for p in placed}
    onsets = onsets or {}
    rows = []
    for seg in sorted(timeline, key=lambda s: s.start):
        s, p, o = synth.get(seg.index), place.get(seg.index), onsets.get(seg.index)
        rows.append({
            "index": seg.index, "source_text": seg.source_text, "target_text": seg.text,
            "slot_start": _round(seg.start), "slot_end": _round(seg.end),
            "word_start": _round(o.word) if o else None,
            "onset": _round(o.onset) if o else _round(seg.start),
            "onset_method": o.method if o else "segment",
            "onset_shift": _round(o.shift) if o else 0.0,
            "placed_start": _round(p.placed_start) if p else None,
            "placed_end": _round(p.placed_end) if p else None,
            "synth_duration": _round(s.duration) if s else 0.0,
            "speed": round(p.speed, 4) if p else 1.0,
            "engine": (s.engine if s else "") or "",
            "translation_engine": seg.engine, "translation_note": seg.note or None,
            "flags": sorted(set((s.flags if s else ()) + (p.flags if p else ())
                                + _mt_flags(seg))),
            "error": s.error if s else None,
        })
    if onsets:
        summary = {**summary, "onsets": onset_summary(onsets)}
    return {**meta, "summary": {**summary, "translation": translation_summary(rows)},
            "segments": rows}


def translation_summary(rows: Sequence[dict]) -> dict:
    """How the lines were translated: lines per engine, and how many were retried, taken from
    the fallback engine, repaired or shortened."""
    notes = [row.get("translation_note") or "" for row in rows]
    engines: dict[str, int] = {}
    for row in rows:
        engines[row["translation_engine"] or "none"] = engines.get(
            row["translation_engine"] or "none", 0) + 1
    return {"engines": engines,
            **{key: sum(word in note for note in notes)
               for key, word in (("retried", "retried:"), ("fallback", "fallback:"),
                                 ("repaired", "repaired:"), ("shortened", "shortened:"))}}


def _mt_flags(seg: TranslatedSegment) -> tuple[str, ...]:
    """Report flags for how a line's translation came about (mt_guard notes, shortening)."""
    note = seg.note or ""
    flags = ("mt_fallback",) if note.startswith(("fallback", "unchecked")) else ()
    flags += ("mt_retried",) if note.startswith("retried") else ()
    return flags + (("shortened",) if "shortened" in note else ())


def write_report(out_dir: Path, report: dict) -> OutputFile:
    """Write dub_report.json."""
    path = out_dir / "dub_report.json"
    path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return OutputFile("dub_report.json", path, JSON)


def as_plain(obj) -> dict:
    """A dataclass as a JSON-ready dict (paths as strings)."""
    return json.loads(json.dumps(asdict(obj), default=str))
