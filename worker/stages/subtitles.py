"""Subtitles: SRT and WebVTT writers (wrapped, at most two lines a cue) and simple parsers.

Segments are anything with `start`, `end` (seconds) and `text` (Segment, TranslatedSegment, Cue).
A segment whose text needs more than `max_lines` lines becomes several cues, its time shared in
proportion to their length.
"""
from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.stages.text import greedy_pack

MAX_LINE = 42
MAX_LINES = 2


class Timed(Protocol):
    """A piece of text with a time span."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; `text` holds its lines joined by newlines."""

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


def parse_timestamp(text: str) -> float:
    """'01:02:03,456', '01:02:03.456' or '02:03.456' -> seconds."""
    match = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})", text.strip())
    if not match:
        raise ValueError(f"bad timestamp {text!r}")
    hours, minutes, secs, frac = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(frac.ljust(3, "0")) / 1000


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


_TIMING = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)")


def _parse_blocks(text: str, vtt: bool) -> list[Cue]:
    """Cues from blank-line separated blocks holding a timing line."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = block.split("\n")
        at = next((i for i, line in enumerate(lines) if _TIMING.match(line)), None)
        if at is None:
            continue  # header, NOTE, STYLE, or junk
        start, end = _TIMING.match(lines[at]).groups()
        body = "\n".join(lines[at + 1:])
        body = html.unescape(body) if vtt else body
        cues.append(Cue(parse_timestamp(start), parse_timestamp(end), body))
    return cues


def parse_srt(text: str) -> list[Cue]:
    """Cues of an SRT document."""
    return _parse_blocks(text.lstrip("\ufeff"), vtt=False)


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT document (cue settings ignored, entities unescaped)."""
    text = text.lstrip("\ufeff")
    if not text.startswith("WEBVTT"):
        raise ValueError("not a WebVTT document")
    return _parse_blocks(text, vtt=True)
