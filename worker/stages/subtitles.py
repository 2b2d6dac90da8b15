"""Subtitles: SRT and WebVTT writers (wrapped, at most two lines a cue); the parsers live in
`shared.subtitles` (the coordinator checks files at submit) and are re-exported here.

Segments are anything with `start`, `end` (seconds) and `text` (Segment, TranslatedSegment, Cue).
A segment whose text needs more than `max_lines` lines becomes several cues, its time shared in
proportion to their length.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from shared.subtitles import Cue, parse_srt, parse_timestamp, parse_vtt
from worker.stages.text import greedy_pack

__all__ = ["Cue", "Timed", "build_cues", "format_timestamp", "parse_srt", "parse_timestamp",
           "parse_vtt", "to_srt", "to_vtt", "wrap_text", "write_srt", "write_vtt"]

MAX_LINE = 42
MAX_LINES = 2


class Timed(Protocol):
    """A piece of text with a time span."""

    start: float
    end: float
    text: str


def format_timestamp(seconds: float, decimal: str = ",") -> str:
    """00:01:02,345 (SRT) or 00:01:02.345 (VTT, decimal='.'); hours grow past 99 if needed."""
    ms = max(0, int(round(seconds * 1000)))
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def wrap_text(text: str, max_line: int = MAX_LINE) -> list[str]:
    """Greedy word wrap; words longer than a line (or unspaced scripts) are cut."""
    words = [w[i:i + max_line] for w in text.split() for i in range(0, len(w), max_line)]
    return greedy_pack(words, max_line)


def build_cues(segments: Iterable[Timed], max_line: int = MAX_LINE,
               max_lines: int = MAX_LINES) -> list[Cue]:
    """Wrapped cues in time order; empty segments skipped, long ones split by time."""
    cues: list[Cue] = []
    for seg in sorted(segments, key=lambda s: (s.start, s.end)):
        lines = wrap_text(" ".join(seg.text.split()), max_line)
        if lines and seg.end > seg.start:
            cues.extend(_split_cue(seg.start, seg.end, lines, max_lines))
    return cues


def _split_cue(start: float, end: float, lines: list[str], max_lines: int) -> list[Cue]:
    """Group lines into cues of max_lines, sharing [start, end] in proportion to characters."""
    count = math.ceil(len(lines) / max_lines)
    per = math.ceil(len(lines) / count)  # balance lines across the cues
    groups = [lines[i:i + per] for i in range(0, len(lines), per)]
    total = sum(len(" ".join(g)) for g in groups)
    cues, t = [], start
    for i, group in enumerate(groups):
        share = (end - start) * len(" ".join(group)) / total
        stop = end if i == len(groups) - 1 else round(t + share, 3)  # cue times are whole ms
        cues.append(Cue(t, stop, "\n".join(group)))
        t = stop
    return cues


def to_srt(segments: Iterable[Timed], max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> str:
    """SRT text for the segments."""
    blocks = [
        f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n"
        for i, c in enumerate(build_cues(segments, max_line, max_lines), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Timed], max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> str:
    """WebVTT text for the segments (cue text escaped)."""
    blocks = [
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n"
        f"{_vtt_escape(c.text)}\n"
        for c in build_cues(segments, max_line, max_lines)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def _vtt_escape(text: str) -> str:
    """Escape &, < and > (and so any '-->') as WebVTT requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_srt(segments: Iterable[Timed], path: Path, **wrap) -> Path:
    """Write an SRT file (UTF-8)."""
    Path(path).write_text(to_srt(segments, **wrap), encoding="utf-8")
    return Path(path)


def write_vtt(segments: Iterable[Timed], path: Path, **wrap) -> Path:
    """Write a WebVTT file (UTF-8)."""
    Path(path).write_text(to_vtt(segments, **wrap), encoding="utf-8")
    return Path(path)
