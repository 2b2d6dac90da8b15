"""The `translate` job kind: a subtitle file (SRT, WebVTT) or plain text in, the same translated out.

Subtitles keep their cue timings: cues are grouped into sentences (a sentence often spans several
cues), each sentence is translated whole, and the result is shared over its cues in proportion to
their length, exactly as transcript segments are. Plain text is one cue per line, each line
translated on its own. Bad input fails the job permanently with a readable reason. The parsing
itself lives in `shared.subtitles` (re-exported here with its errors as `BadMedia`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from shared import subtitles
from shared.glossary import parse_glossary
from shared.protocol import Stage
from shared.subtitles import (MAX_CUES, MAX_INPUT_BYTES, SRT, TEXT, VTT, Cue, Document,
                              SubtitleError, guess_language)
from worker.context import JobContext, JobResult, OutputFile
from worker.errors import BadMedia
from worker.stages.subtitles import write_srt, write_vtt
from worker.stages.translate import choose_engine
from worker.stages.types import Segment

logger = logging.getLogger(__name__)

__all__ = ["MAX_CUES", "MAX_INPUT_BYTES", "SRT", "TEXT", "VTT", "Cue", "Document",
           "TranslatePipeline", "check_timings", "decode_text", "guess_language", "parse_document"]

MAX_CUE_LINES = 50
_CONTENT_TYPES = {SRT: "application/x-subrip", VTT: "text/vtt", TEXT: "text/plain; charset=utf-8"}


def decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 text; anything else is not a subtitle file."""
    try:
        return subtitles.decode_text(raw)
    except SubtitleError as exc:
        raise BadMedia(str(exc)) from None


def parse_document(raw: bytes, allow_text: bool = True) -> Document:
    """Detect the format (WebVTT header, SRT timing lines, else plain text) and parse it;
    a bad file fails the job permanently with the reason."""
    try:
        return subtitles.parse_document(raw, allow_text=allow_text)
    except SubtitleError as exc:
        raise BadMedia(str(exc)) from None


def check_timings(cues: Sequence[Cue]) -> None:
    """Cues must have non-negative times, end after they start, and come in order without overlap."""
    try:
        subtitles.check_timings(cues)
    except SubtitleError as exc:
        raise BadMedia(str(exc)) from None


def _as_segments(cues: Sequence[Cue]) -> list[Segment]:
    """Cues as transcript segments (lines of a cue joined by a space)."""
    return [Segment(index=i, start=c.start, end=c.end, text=" ".join(c.text.split()))
            for i, c in enumerate(cues)]


class TranslatePipeline:
    """Runs `translate` jobs (no audio models: only the translation engines)."""

    def run(self, ctx: JobContext, input_path: Path) -> JobResult:
        """Parse, translate, write the same format (SRT and VTT both for subtitles)."""
        document = parse_document(Path(input_path).read_bytes())
        job = ctx.job
        source = job.source_language
        if source in ("", "auto"):
            source = guess_language(document.cues)
            logger.info("job %s: source language guessed as %s", job.job_id, source)
        target = job.target_language
        ctx.stage(Stage.TRANSLATING, f"{len(document.cues)} cues, {source}→{target}")
        try:
            glossary = parse_glossary((job.options or {}).get("glossary"))
        except ValueError as exc:
            raise BadMedia(f"bad job options: {exc}") from None
        engine = choose_engine(source, target, _preferred_engine(job.options), glossary=glossary)
        texts = self._translate(ctx, engine, document, source, target)
        outputs = self._write(ctx.work_dir, document, texts, target)
        ctx.progress(100.0)
        return JobResult(outputs=outputs, main=outputs[0].name, detected_language=source,
                         info={"engine": engine.name, "cues": len(document.cues)})

    @staticmethod
    def _translate(ctx: JobContext, engine, document: Document, source: str, target: str) -> list[str]:
        """Translated text per cue."""
        if document.kind == TEXT and hasattr(engine, "render"):
            # Lines of a text file are independent: translate each as its own unit (the
            # neighbouring lines are still context for the LLM, and the glossary applies).
            lines = [c.text for c in document.cues]
            return [r.text for r in engine.render(lines, 0, len(lines), source, target)]
        translation = engine.translate(_as_segments(document.cues), source, target, check=ctx.check)
        return [seg.text for seg in translation.segments]

    @staticmethod
    def _write(work_dir: Path, document: Document, texts: list[str], target: str) -> tuple[OutputFile, ...]:
        """The translated document (main) and, for subtitles, the other subtitle format."""
        work_dir.mkdir(parents=True, exist_ok=True)
        if document.kind == TEXT:
            path = work_dir / f"translation.{target}.txt"
            path.write_text("\n".join(texts) + "\n", encoding="utf-8")
            return (OutputFile(path.name, path, _CONTENT_TYPES[TEXT]),)
        cues = [Cue(c.start, c.end, t) for c, t in zip(document.cues, texts)]
        # One output cue per input cue, whatever its length: the timings stay the user's.
        srt = write_srt(cues, work_dir / f"subtitles.{target}.srt", max_lines=MAX_CUE_LINES)
        vtt = write_vtt(cues, work_dir / f"subtitles.{target}.vtt", max_lines=MAX_CUE_LINES)
        files = {SRT: OutputFile(srt.name, srt, _CONTENT_TYPES[SRT]),
                 VTT: OutputFile(vtt.name, vtt, _CONTENT_TYPES[VTT])}
        main = files.pop(document.kind)
        return (main, *files.values())


def _preferred_engine(options: dict | None) -> str | None:
    """The job's `translation_engine` option, if it names one."""
    value = (options or {}).get("translation_engine")
    return str(value) if value else None
