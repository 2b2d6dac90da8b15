"""The `translate` job kind: a subtitle file (SRT, WebVTT) or plain text in, the same translated out.

Subtitles keep their cue timings: cues are grouped into sentences (a sentence often spans several
cues), each sentence is translated whole, and the result is shared over its cues in proportion to
their length, exactly as transcript segments are. Plain text is one cue per line, each line
translated on its own. Bad input fails the job permanently with a readable reason.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from shared.protocol import Stage
from worker.context import JobContext, JobResult, OutputFile
from worker.errors import BadMedia
from worker.stages.subtitles import Cue, parse_srt, parse_vtt, write_srt, write_vtt
from worker.stages.translate import choose_engine
from worker.stages.types import Segment

logger = logging.getLogger(__name__)

MAX_INPUT_BYTES = 5 * 1024 * 1024
MAX_CUES = 20_000
MAX_CUE_LINES = 50
SRT, VTT, TEXT = "srt", "vtt", "txt"
_TIMING_LINE = re.compile(r"^\s*[\d:.,]+\s+-->\s+[\d:.,]+", re.MULTILINE)
_CONTENT_TYPES = {SRT: "application/x-subrip", VTT: "text/vtt", TEXT: "text/plain; charset=utf-8"}

# A few very common words per language: enough to tell the source of a subtitle file apart when
# the job says `auto` (the engines need a named source language).
_STOPWORDS = {
    "en": "the and is are you that to of it in this was for with have not what".split(),
    "es": "el la los las que de y es en un una por para con no lo se del al".split(),
    "fr": "le la les et est que de des un une pour avec pas ce qui dans il".split(),
    "pt": "o a os as que de e um uma para com não do da em se por".split(),
    "it": "il la che di e un una per con non è sono gli del della in".split(),
    "de": "der die das und ist nicht ein eine zu mit den von sie es ich".split(),
    "ca": "el la els les que de i és un una per amb no del al en".split(),
}


@dataclass(frozen=True)
class Document:
    """A parsed input: its format and cues (text documents: one cue per line, no timings)."""

    kind: str
    cues: tuple[Cue, ...]


def decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 text; anything else is not a subtitle file."""
    if len(raw) > MAX_INPUT_BYTES:
        raise BadMedia(f"the input is larger than {MAX_INPUT_BYTES // 1024 // 1024} MB: "
                       "not a subtitle or text file")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadMedia("the input is not a subtitle or text file (not UTF-8 text)") from None
    if "\x00" in text:
        raise BadMedia("the input is not a subtitle or text file (binary data)")
    return text


def parse_document(raw: bytes) -> Document:
    """Detect the format (WebVTT header, SRT timing lines, else plain text) and parse it."""
    text = decode_text(raw).replace("\r\n", "\n").replace("\r", "\n")
    if text.lstrip().startswith("WEBVTT"):
        kind, cues = VTT, _parse(parse_vtt, text.lstrip())
    elif _TIMING_LINE.search(text):
        kind, cues = SRT, _parse(parse_srt, text)
    else:
        lines = [line.strip() for line in text.split("\n")]
        kind, cues = TEXT, [Cue(float(i), float(i + 1), line) for i, line in enumerate(lines) if line]
    cues = [c for c in cues if c.text.strip()] if kind != TEXT else cues
    if not cues:
        raise BadMedia("the input has no text to translate (no cues)")
    if len(cues) > MAX_CUES:
        raise BadMedia(f"the input has more than {MAX_CUES} cues")
    if kind != TEXT:
        check_timings(cues)
    return Document(kind, tuple(cues))


def _parse(parser, text: str) -> list[Cue]:
    """Run a subtitle parser; a malformed timestamp is a readable failure."""
    try:
        return parser(text)
    except ValueError as exc:
        if "'-" in str(exc):
            raise BadMedia(f"a cue has a negative time: {exc}") from None
        raise BadMedia(f"the subtitle file is malformed: {exc}") from None


def check_timings(cues: Sequence[Cue]) -> None:
    """Cues must have non-negative times, end after they start, and come in order without overlap."""
    previous_end = 0.0
    for number, cue in enumerate(cues, 1):
        if cue.start < 0 or cue.end < 0:
            raise BadMedia(f"cue {number} has a negative time")
        if cue.end <= cue.start:
            raise BadMedia(f"cue {number} ends before it starts")
        if cue.start < previous_end - 1e-3:
            raise BadMedia(f"cue {number} overlaps the cue before it (or the cues are out of order)")
        previous_end = cue.end


def guess_language(cues: Sequence[Cue], candidates: Sequence[str] = tuple(_STOPWORDS)) -> str:
    """The most likely language of the cues by common-word counts (English when nothing matches)."""
    words = re.findall(r"[^\W\d_]+", " ".join(c.text for c in cues[:500]).lower())
    scores = {lang: sum(1 for w in words if w in set(_STOPWORDS[lang])) for lang in candidates
              if lang in _STOPWORDS}
    best = max(scores, key=scores.get, default="en")
    return best if scores.get(best) else "en"


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
        engine = choose_engine(source, target, _preferred_engine(job.options))
        texts = self._translate(ctx, engine, document, source, target)
        outputs = self._write(ctx.work_dir, document, texts, target)
        ctx.progress(100.0)
        return JobResult(outputs=outputs, main=outputs[0].name, detected_language=source,
                         info={"engine": engine.name, "cues": len(document.cues)})

    @staticmethod
    def _translate(ctx: JobContext, engine, document: Document, source: str, target: str) -> list[str]:
        """Translated text per cue."""
        if document.kind == TEXT and hasattr(engine, "engine"):
            # Lines of a text file are independent: translate each as its own unit.
            return engine.engine.translate_texts([c.text for c in document.cues], source, target)
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
