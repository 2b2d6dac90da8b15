"""The summary artifact of a media job (`summary.json` / `summary.md`): title, key points, chapters.

Written by the worker (`worker.stages.summary`; also `summary.<target>.json` / `.md` for a job
with a translation), edited by the owner through the coordinator (`PUT /jobs/<id>/summary`, with
`?language=<target>` for the translation, stores `summary[.<target>].edited.json` / `.md`); both
sides use these types, the Markdown rendering and the validation here, so the two files never
disagree on their shape.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

ROUTE = "/jobs/<job_id>/summary"  # PUT: the owner's edit (coordinator.api.summary)
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
EDITED_JSON = "summary.edited.json"
EDITED_MD = "summary.edited.md"
FORMAT_VERSION = 1
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")
_TRANSLATED_JSON = re.compile(r"^summary\.([a-z]{2,3})\.json$")


@dataclass(frozen=True)
class SummaryFiles:
    """The artifact names of one summary: the worker's JSON and Markdown, and the owner's edit.

    The source summary is `summary.json`; a translated one `summary.<lang>.json`, edited as
    `summary.<lang>.edited.json`."""

    json: str
    md: str
    edited_json: str
    edited_md: str

    @classmethod
    def of(cls, language: str = "") -> "SummaryFiles":
        """The names of the source summary (no language) or of the one in `language`."""
        base = f"summary.{language}" if language else "summary"
        return cls(f"{base}.json", f"{base}.md", f"{base}.edited.json", f"{base}.edited.md")


def translated_language(name: str) -> str | None:
    """The language of a translated summary's artifact name (`summary.es.json` -> "es")."""
    match = _TRANSLATED_JSON.fullmatch(name)
    return match.group(1) if match else None


class SummaryError(ValueError):
    """A summary object has a missing or invalid field (`field` names it)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SummaryLimits:
    """How large an edited summary may be (the coordinator's MAX_SUMMARY_* settings)."""

    max_points: int = 20
    max_chapters: int = 200
    max_chars: int = 1000


@dataclass(frozen=True)
class KeyPoint:
    """One key point and where in the media it is said (seconds)."""

    text: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"text": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass(frozen=True)
class Chapter:
    """A stretch of the media about one topic: [start, end) seconds and a title."""

    start: float
    end: float
    title: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"start": round(self.start, 3), "end": round(self.end, 3), "title": self.title}


@dataclass(frozen=True)
class Summary:
    """Title, key points (in spoken order) and chapters covering the whole duration."""

    title: str
    key_points: tuple[KeyPoint, ...]
    chapters: tuple[Chapter, ...]
    language: str = ""
    duration: float = 0.0
    method: str = "extractive"  # extractive | abstractive | edited
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`summary.json`)."""
        return {"version": FORMAT_VERSION, "title": self.title, "language": self.language,
                "duration": round(self.duration, 3), "method": self.method,
                "key_points": [p.to_dict() for p in self.key_points],
                "chapters": [c.to_dict() for c in self.chapters], "notes": list(self.notes)}


def clock(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _md(text: str) -> str:
    """Text safe inside a Markdown line (no markup, links or HTML from transcript or edits)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def to_markdown(summary: Summary) -> str:
    """The Markdown export (`summary.md`)."""
    lines = [f"# {_md(summary.title)}", "", "## Key points", ""]
    lines += [f"- {_md(p.text)} ({clock(p.start)})" for p in summary.key_points]
    lines += ["", "## Chapters", ""]
    lines += [f"- {clock(c.start)}–{clock(c.end)} {_md(c.title)}" for c in summary.chapters]
    if summary.notes:
        lines += ["", *[f"_{_md(note)}_" for note in summary.notes]]
    return "\n".join(lines) + "\n"


# --- validation (an edited summary from a client) ----------------------------------------------

def _text(value: Any, where: str, limits: SummaryLimits) -> str:
    """A non-empty single-line string within the length limit."""
    if not isinstance(value, str) or not value.strip():
        raise SummaryError(f"{where} must be a non-empty string", where)
    text = " ".join(value.split())
    if len(text) > limits.max_chars:
        raise SummaryError(f"{where} is longer than {limits.max_chars} characters", where)
    return text


def _seconds(value: Any, where: str) -> float:
    """A finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e7:
        raise SummaryError(f"{where} must be a number of seconds", where)
    return float(value)


def _items(body: Mapping[str, Any], name: str, most: int) -> list[Any]:
    """A list field of at most `most` items."""
    items = body.get(name)
    if not isinstance(items, list):
        raise SummaryError(f"{name} must be a list", name)
    if len(items) > most:
        raise SummaryError(f"{name} may have at most {most} items", name)
    return items


def _object(item: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise SummaryError(f"{where} must be an object", where)
    return item


def _point(item: Any, where: str, limits: SummaryLimits) -> KeyPoint:
    item = _object(item, where)
    start = _seconds(item.get("start", 0), f"{where}.start")
    end = _seconds(item.get("end", start), f"{where}.end")
    return KeyPoint(_text(item.get("text"), f"{where}.text", limits), start, max(start, end))


def _chapter(item: Any, where: str, limits: SummaryLimits) -> Chapter:
    item = _object(item, where)
    start, end = _seconds(item.get("start"), f"{where}.start"), _seconds(item.get("end"), f"{where}.end")
    if end < start:
        raise SummaryError(f"{where} ends before it starts", where)
    return Chapter(start, end, _text(item.get("title"), f"{where}.title", limits))


def _ordered(chapters: list[Chapter]) -> None:
    """Chapters follow each other without overlapping."""
    for i, (a, b) in enumerate(zip(chapters, chapters[1:]), start=1):
        if b.start < a.end - 1e-3:
            raise SummaryError(f"chapters[{i}] starts before the previous one ends", f"chapters[{i}]")


def parse_summary(body: Mapping[str, Any], limits: SummaryLimits,
                  method: str = "edited") -> Summary:
    """Validate a summary object (an edit, or a stored file); SummaryError names the bad field."""
    title = _text(body.get("title"), "title", limits)
    points = [_point(p, f"key_points[{i}]", limits)
              for i, p in enumerate(_items(body, "key_points", limits.max_points))]
    chapters = [_chapter(c, f"chapters[{i}]", limits)
                for i, c in enumerate(_items(body, "chapters", limits.max_chapters))]
    _ordered(chapters)
    language = body.get("language") or ""
    if not isinstance(language, str) or len(language) > 16:
        raise SummaryError("language must be a short language code", "language")
    duration = chapters[-1].end if chapters else 0.0
    return Summary(title, tuple(points), tuple(chapters), language, duration, method)
