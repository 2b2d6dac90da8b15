"""Subtitle parsing shared by the coordinator (checks at submit) and the worker (pipelines).

Pure functions only: decode a file's bytes, parse SRT / WebVTT (or plain text, one cue a line),
check cue timings, and tell which language a file is in (an explicit code, a `talk.es.srt` file
name, or common words). Every problem with a file raises `SubtitleError` (a ValueError) with a
readable reason; the worker turns it into a permanent job failure, the coordinator into a 422.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Sequence

from shared.languages import is_known

MAX_INPUT_BYTES = 5 * 1024 * 1024
MAX_CUES = 20_000
SRT, VTT, TEXT = "srt", "vtt", "txt"
_TIMING = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)")
_TIMING_LINE = re.compile(r"^\s*-?[\d:.,]+\s+-->\s+-?[\d:.,]+", re.MULTILINE)

# A few very common words per language: enough to tell a subtitle file's language apart when
# nobody named it (the translation engines need a named source language).
STOPWORDS: dict[str, tuple[str, ...]] = {
    "en": tuple("the and is are you that to of it in this was for with have not what".split()),
    "es": tuple("el la los las que de y es en un una por para con no lo se del al".split()),
    "fr": tuple("le la les et est que de des un une pour avec pas ce qui dans il".split()),
    "pt": tuple("o a os as que de e um uma para com não do da em se por".split()),
    "it": tuple("il la che di e un una per con non è sono gli del della in".split()),
    "de": tuple("der die das und ist nicht ein eine zu mit den von sie es ich".split()),
    "ca": tuple("el la els les que de i és un una per amb no del al en".split()),
}


class SubtitleError(ValueError):
    """A subtitle (or text) file that cannot be used; the message says why."""


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; `text` holds its lines joined by newlines."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Document:
    """A parsed file: its format and cues (text documents: one cue per line, no timings)."""

    kind: str
    cues: tuple[Cue, ...]


def parse_timestamp(text: str) -> float:
    """'01:02:03,456', '01:02:03.456' or '02:03.456' -> seconds."""
    match = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})", text.strip())
    if not match:
        raise ValueError(f"bad timestamp {text!r}")
    hours, minutes, secs, frac = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(secs) + int(frac.ljust(3, "0")) / 1000


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
    """Cues of an SRT document (ValueError on a malformed timestamp)."""
    return _parse_blocks(text.lstrip("\ufeff"), vtt=False)


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT document (cue settings ignored, entities unescaped)."""
    text = text.lstrip("\ufeff")
    if not text.startswith("WEBVTT"):
        raise ValueError("not a WebVTT document")
    return _parse_blocks(text, vtt=True)


def decode_text(raw: bytes, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """UTF-8 (with or without BOM) or UTF-16 text; anything else is not a subtitle file."""
    if len(raw) > max_bytes:
        raise SubtitleError(f"the input is larger than {max_bytes // 1024 // 1024} MB: "
                            "not a subtitle or text file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise SubtitleError("the input is not a subtitle or text file (bad UTF-16)") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubtitleError("the input is not a subtitle or text file (not UTF-8 text)") from None
    if "\x00" in text:
        raise SubtitleError("the input is not a subtitle or text file (binary data)")
    return text


def parse_document(raw: bytes, allow_text: bool = True) -> Document:
    """Detect the format (WebVTT header, SRT timing lines, else plain text) and parse it.

    Without `allow_text` a file with no timing lines is refused (a dub needs timings).
    """
    text = decode_text(raw).replace("\r\n", "\n").replace("\r", "\n")
    if text.lstrip().startswith("WEBVTT"):
        kind, cues = VTT, _parse(parse_vtt, text.lstrip())
    elif _TIMING_LINE.search(text):
        kind, cues = SRT, _parse(parse_srt, text)
    else:
        lines = [line.strip() for line in text.split("\n")]
        kind, cues = TEXT, [Cue(float(i), float(i + 1), line) for i, line in enumerate(lines) if line]
        if cues and not allow_text:
            raise SubtitleError("the file is not SRT or WebVTT (no cue timings such as "
                                "'00:00:01,000 --> 00:00:02,500')")
    cues = [c for c in cues if c.text.strip()] if kind != TEXT else cues
    if not cues:
        raise SubtitleError("the input has no text to translate (no cues)")
    if len(cues) > MAX_CUES:
        raise SubtitleError(f"the input has more than {MAX_CUES} cues")
    if kind != TEXT:
        check_timings(cues)
    return Document(kind, tuple(cues))


def _parse(parser, text: str) -> list[Cue]:
    """Run a subtitle parser; a malformed timestamp is a readable failure."""
    try:
        return parser(text)
    except ValueError as exc:
        if "'-" in str(exc):
            raise SubtitleError(f"a cue has a negative time: {exc}") from None
        raise SubtitleError(f"the subtitle file is malformed: {exc}") from None


def check_timings(cues: Sequence[Cue]) -> None:
    """Cues must have non-negative times, end after they start, and come in order without overlap."""
    previous_end = 0.0
    for number, cue in enumerate(cues, 1):
        if cue.start < 0 or cue.end < 0:
            raise SubtitleError(f"cue {number} has a negative time")
        if cue.end <= cue.start:
            raise SubtitleError(f"cue {number} ends before it starts")
        if cue.start < previous_end - 1e-3:
            raise SubtitleError(f"cue {number} overlaps the cue before it (or the cues are out "
                                "of order)")
        previous_end = cue.end


def _word_scores(cues: Sequence[Cue], candidates: Sequence[str]) -> dict[str, int]:
    """Common-word hits per candidate language (languages without a word list are left out)."""
    words = re.findall(r"[^\W\d_]+", " ".join(c.text for c in cues[:500]).lower())
    return {lang: sum(1 for w in words if w in set(STOPWORDS[lang])) for lang in candidates
            if lang in STOPWORDS}


def guess_language(cues: Sequence[Cue], candidates: Sequence[str] = tuple(STOPWORDS)) -> str:
    """The most likely language of the cues by common-word counts (English when nothing matches)."""
    scores = _word_scores(cues, candidates)
    best = max(scores, key=scores.get, default="en")
    return best if scores.get(best) else "en"


def pick_language(cues: Sequence[Cue], candidates: Sequence[str],
                  prefer: str | None = None) -> str | None:
    """The candidate with the most common-word hits (at least 2, and strictly more than any
    other candidate, except that `prefer` wins a tie); None when the words do not tell.

    A candidate without a word list can still win when it is the only other choice and the
    cues match none of the listed candidates' words (e.g. "ja" against "en").
    """
    candidates = list(dict.fromkeys(candidates))
    scores = _word_scores(cues, candidates)
    best = max(scores.values(), default=0)
    leaders = [lang for lang, score in scores.items() if score == best]
    if best >= 2 and (len(leaders) == 1 or prefer in leaders):
        return leaders[0] if len(leaders) == 1 else prefer
    unlisted = [lang for lang in candidates if lang not in STOPWORDS]
    if len(unlisted) == 1 and len(candidates) == 2 and scores and not best:
        return unlisted[0]
    return None


def language_from_filename(name: str | None) -> str | None:
    """The language code of a name like `talk.es.srt` or `talk.pt-BR.vtt` (None without one)."""
    if not name:
        return None
    parts = PurePath(str(name).replace("\\", "/")).name.lower().split(".")
    if len(parts) < 3:
        return None
    code = parts[-2].replace("_", "-").split("-")[0]
    return code if is_known(code) else None


def subtitles_language(cues: Sequence[Cue], filename: str | None, source: str,
                       target: str) -> str | None:
    """The language of a dub's subtitles when nobody named it: from the file name, else the
    common words, choosing between the job's source (when known) and target language, or among
    every language with a word list when the source is `auto` (where the target wins a tie:
    related languages share many common words). None when it cannot be told."""
    named = language_from_filename(filename)
    if named:
        return named
    if source and source != "auto":
        return pick_language(cues, [source, target])
    return pick_language(cues, [target, *STOPWORDS], prefer=target)
