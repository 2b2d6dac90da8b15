"""A dub's own subtitles (the `subtitles` part of a multipart submit), checked before anything
is stored: size, format (SRT or WebVTT: a dub needs timings), cue timings, and language.

The language comes from the `subtitles_language` field (or option), else from a file name like
`talk.es.srt`, else from common words (source or target language). Subtitles in the target
language are voiced as they are (no recognition, no translation); in the source language they
replace recognition and are translated. What was decided is recorded in the job's options:
`subtitles_language` and `subtitles` ("source" or "target").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Mapping

from shared.languages import AUTO
from shared.protocol import JobKind
from shared.subtitles import SubtitleError, parse_document, subtitles_language

from .errors import ValidationFailed
from .validation import NewJob, parse_language

logger = logging.getLogger(__name__)

FIELD = "subtitles"
LANGUAGE_FIELD = "subtitles_language"
SOURCE, TARGET = "source", "target"
_RESERVED_OPTIONS = (FIELD, LANGUAGE_FIELD)


@dataclass(frozen=True)
class SubtitlesPart:
    """The raw `subtitles` part of a submission."""

    data: bytes
    filename: str


def read_part(stream: BinaryIO, filename: str, limit: int) -> SubtitlesPart:
    """Read the part into memory, at most `limit` bytes (422 beyond: it is a field, not the
    upload); an empty part is a 422 too."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValidationFailed(f"the subtitles file is larger than {limit // 1024} KB "
                               "(MAX_SUBTITLES_KB)", field=FIELD)
    if not data.strip():
        raise ValidationFailed("the subtitles file is empty", field=FIELD)
    return SubtitlesPart(data, filename or "")


def _named_language(fields: Mapping[str, Any], options: Mapping[str, Any]) -> str | None:
    """The `subtitles_language` field, else the option of that name (None when neither)."""
    value = fields.get(LANGUAGE_FIELD) or options.get(LANGUAGE_FIELD)
    return parse_language(value, LANGUAGE_FIELD, False) if value else None


def refuse_stray_fields(fields: Mapping[str, Any], new: NewJob) -> None:
    """Without a subtitles part, the subtitles field and options must not be set."""
    if fields.get(LANGUAGE_FIELD):
        raise ValidationFailed(f"{LANGUAGE_FIELD} needs a '{FIELD}' file part "
                               "(multipart submit)", field=LANGUAGE_FIELD)
    taken = [name for name in _RESERVED_OPTIONS if name in new.options]
    if taken:
        raise ValidationFailed(f"options {taken} are set by the coordinator from a '{FIELD}' "
                               "file part", field="options")


def _role(language: str, new: NewJob) -> str:
    """Whether subtitles in `language` stand for the source or the target text (422 if neither)."""
    if language == new.target_language:
        return TARGET
    if new.source_language in (AUTO, language):
        return SOURCE
    raise ValidationFailed(f"the subtitles are in '{language}', but the job dubs "
                           f"'{new.source_language}' into '{new.target_language}': send subtitles "
                           f"in the source or the target language", field=LANGUAGE_FIELD)


def check(part: SubtitlesPart, new: NewJob, fields: Mapping[str, Any]) -> NewJob:
    """Validate a dub's subtitles; return the job with `subtitles_language` and `subtitles`
    (source/target) in its options. Every problem is a 422 with the reason."""
    if new.kind != JobKind.DUB.value:
        raise ValidationFailed(f"a '{FIELD}' file is accepted for dub jobs only (this job is "
                               f"'{new.kind}')", field=FIELD)
    if new.source_url:
        raise ValidationFailed(f"a '{FIELD}' file needs the video in the same multipart submit",
                               field=FIELD)
    try:
        document = parse_document(part.data, allow_text=False)
    except SubtitleError as exc:
        raise ValidationFailed(f"subtitles: {exc}", field=FIELD) from None
    options = {k: v for k, v in new.options.items() if k not in _RESERVED_OPTIONS}
    language = _named_language(fields, new.options) or subtitles_language(
        document.cues, part.filename, new.source_language, new.target_language)
    if language is None:
        raise ValidationFailed("could not tell the language of the subtitles: send "
                               f"{LANGUAGE_FIELD} (e.g. 'es') or name the file like talk.es.srt",
                               field=LANGUAGE_FIELD)
    role = _role(language, new)
    logger.info("dub subtitles: %s %s, %d cues, %s text", document.kind, language,
                len(document.cues), role)
    return replace(new, options={**options, LANGUAGE_FIELD: language, FIELD: role})
