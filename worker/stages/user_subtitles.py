"""A dub with the user's own subtitles: their timings and text replace recognition.

Subtitles in the job's target language are voiced as they are (no recognition, no translation:
each cue becomes one dubbed line, engine "user"); subtitles in the source language replace
recognition and go through the same translate + voice path as recognised sentences. Each line
is placed at its cue's start, refined against the source audio's energy like a recognised line
without word timings (`worker.stages.onset`). The coordinator checked the file at submit; a bad
file reaching the worker anyway fails the job permanently with the reason.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from shared.languages import is_known
from shared.protocol import Stage
from shared.subtitles import Cue, SubtitleError, parse_document, subtitles_language
from worker.context import JobContext, OutputFile
from worker.errors import BadMedia, JobFailed
from worker.stages import outputs
from worker.stages.streaming import SentenceStream
from worker.stages.types import (
    Segment, SynthesizedSegment, Transcript, Translation, TranslatedSegment,
)

if TYPE_CHECKING:
    from worker.stages.pipeline import _Dubber

logger = logging.getLogger(__name__)

SOURCE, TARGET = "source", "target"
USER_ENGINE = "user"
_TAGS = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>…</i>, <font …>, WebVTT voice tags, {\an8}

DubResult = tuple[Transcript, Translation, list[SynthesizedSegment]]


@dataclass(frozen=True)
class UserSubtitles:
    """The job's subtitles, parsed: their language, whether they are the source or the target
    text, and the cues kept (cues starting after the media's end are dropped)."""

    language: str
    role: str
    format: str
    cues: tuple[Cue, ...]
    dropped: int = 0


def clean_text(text: str) -> str:
    """A cue's text as one line to voice: formatting tags dropped, whitespace collapsed."""
    return " ".join(_TAGS.sub(" ", text).split())


def _language(ctx: JobContext, cues: Sequence[Cue]) -> str:
    """The language the coordinator recorded, else one told from the words (or a failure)."""
    job = ctx.job
    named = str((job.options or {}).get("subtitles_language") or "").strip().lower()
    if named:
        if not is_known(named):
            raise BadMedia(f"the subtitles' language {named[:16]!r} is not a known language code")
        return named
    guessed = subtitles_language(cues, None, job.source_language, job.target_language)
    if guessed is None:
        raise BadMedia("could not tell the language of the subtitles; submit the job again "
                       "with subtitles_language")
    return guessed


def load(ctx: JobContext, duration: float) -> UserSubtitles | None:
    """The job's own subtitles (None when it has none), parsed and checked against the media."""
    path = getattr(ctx, "subtitles_path", None)
    if path is None:
        if getattr(ctx.job, "subtitles_sha256", None):
            raise JobFailed("the job has subtitles but they were not downloaded")
        return None
    try:
        document = parse_document(Path(path).read_bytes(), allow_text=False)
    except SubtitleError as exc:
        raise BadMedia(f"the subtitles cannot be used: {exc}") from None
    cues = [Cue(c.start, c.end, clean_text(c.text)) for c in document.cues]
    cues = [c for c in cues if c.text]
    kept = [c for c in cues if duration <= 0 or c.start < duration]
    if not kept:
        raise BadMedia(f"the subtitles cannot be used: no cue with text starts before the end of "
                       f"the media ({duration:.1f} s)")
    if len(kept) < len(cues):
        logger.warning("job %s: %d subtitle cue(s) start after the media ends (%.1f s); dropped",
                       ctx.job.job_id, len(cues) - len(kept), duration)
    language = _language(ctx, kept)
    role = TARGET if language == ctx.job.target_language else SOURCE
    logger.info("job %s: using the job's %s subtitles (%s, %d cues) as the %s text",
                ctx.job.job_id, language, document.kind, len(kept), role)
    return UserSubtitles(language, role, document.kind, tuple(kept), len(cues) - len(kept))


def as_segments(cues: Sequence[Cue]) -> list[Segment]:
    """Cues as transcript segments (no word timings: onsets come from the cue and the audio)."""
    return [Segment(index=i, start=c.start, end=c.end, text=c.text) for i, c in enumerate(cues)]


def transcript_dict(transcript: Transcript, translation: Translation | None,
                    user: UserSubtitles) -> dict:
    """The usual transcript JSON, saying that the text came from the user's subtitles."""
    data = outputs.transcript_dict(transcript, translation)
    data["language"] = transcript.language or None
    data["model"] = None
    data["text_source"] = "user_subtitles"
    data["user_subtitles"] = {"language": user.language, "used_as": user.role,
                              "format": user.format, "cues": len(user.cues),
                              "dropped_after_end": user.dropped}
    return data


def write_transcript(out_dir: Path, transcript: Transcript, translation: Translation | None,
                     user: UserSubtitles) -> OutputFile:
    """Write transcript.json for a dub voiced from the user's subtitles."""
    path = out_dir / "transcript.json"
    path.write_text(json.dumps(transcript_dict(transcript, translation, user),
                               ensure_ascii=False, indent=2), encoding="utf-8")
    return OutputFile("transcript.json", path, outputs.JSON)


def voice(dubber: "_Dubber", user: UserSubtitles) -> DubResult:
    """Dub from the user's subtitles instead of recognition; returns what recognise_and_voice
    returns (transcript, translation, synthesized segments)."""
    ctx, state = dubber.ctx, dubber.state
    state.subtitles, state.overlapped = user.role, False
    dubber.progress.update("asr", 1.0, f"using the job's {user.language} subtitles "
                                       f"({len(user.cues)} cues)")
    t0 = time.monotonic()
    if user.role == TARGET:
        result = _voice_target(dubber, user)
    else:
        result = _translate_and_voice(dubber, user)
    transcript, translation, _ = result
    state.timings["subtitles_translate_voice"] = round(time.monotonic() - t0, 3)
    state.keep(ctx, [write_transcript(state.out, transcript, translation, user),
                     *outputs.write_subtitles(state.out, translation.segments,
                                              translation.target_language)])
    return result


def _translate_and_voice(dubber: "_Dubber", user: UserSubtitles) -> DubResult:
    """Source-language subtitles: the cues are the transcript; translate and voice them through
    the dubber's own sentence units (a text engine only: the text is the user's, not the audio's)."""
    ctx, state, target = dubber.ctx, dubber.state, dubber.ctx.job.target_language
    segments = as_segments(user.cues)
    transcript = Transcript(language=user.language, language_probability=1.0,
                            duration=state.duration, segments=tuple(segments), model="")
    state.keep(ctx, [write_transcript(state.out, transcript, None, user),
                     *outputs.write_subtitles(state.out, segments, user.language)])
    dubber.source = user.language
    dubber.translator = dubber.pipeline._translator(dubber.opts, user.language, target, None)
    ctx.stage(Stage.SYNTHESIZING, f"translating and voicing {len(segments)} subtitle cues")
    stream = SentenceStream(dubber._unit, overlap=False)
    for segment in segments:
        stream.push(segment)
    done = stream.close()
    translation = Translation(user.language, target,
                              tuple(sorted(done.translated, key=lambda s: s.index)),
                              dubber.translator.name)
    return transcript, translation, sorted(done.synthesized, key=lambda s: s.index)


def _voice_target(dubber: "_Dubber", user: UserSubtitles) -> DubResult:
    """Target-language subtitles: no recognition, no translation; every cue is voiced as is."""
    ctx, state, target = dubber.ctx, dubber.state, dubber.ctx.job.target_language
    source = ctx.job.source_language if ctx.job.source_language not in ("", "auto") else ""
    transcript = Transcript(language=source, language_probability=0.0,
                            duration=state.duration, segments=(), model="")

    def unit(segments: Sequence[Segment]):
        lines = [TranslatedSegment(index=s.index, start=s.start, end=s.end, source_text="",
                                   text=s.text, engine=USER_ENGINE) for s in segments]
        return lines, dubber._voice_unit(lines)

    ctx.stage(Stage.SYNTHESIZING, f"voicing {len(user.cues)} subtitle cues")
    stream = SentenceStream(unit, overlap=False)
    for segment in as_segments(user.cues):
        stream.push(segment)
    done = stream.close()
    translation = Translation(source, target,
                              tuple(sorted(done.translated, key=lambda s: s.index)), USER_ENGINE)
    return transcript, translation, sorted(done.synthesized, key=lambda s: s.index)
