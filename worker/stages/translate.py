"""Translate transcript segments, sentence by sentence, keeping each segment's timing.

Whisper cuts segments at pauses, not at sentence ends; translating half-sentences gives poor
text. Segments are grouped into sentence units, each unit is translated whole, and the result is
re-split over the unit's segments in proportion to their source length.
"""
from __future__ import annotations

import logging
import re
from typing import Callable, Protocol, Sequence

from worker.errors import UnsupportedJob
from worker.stages.translate_apertium import ApertiumEngine
from worker.stages.translate_argos import ArgosEngine
from worker.stages.mt_guard import GuardedEngine, Rendered, apply_glossary
from worker.stages.translate_llm import LLMEngine, Request
from worker.stages.types import DecodedAudio, Segment, TranslatedSegment, Translation

logger = logging.getLogger(__name__)

__all__ = ["Translator", "TextTranslator", "TextEngine", "IdentityEngine", "ArgosEngine",
           "ApertiumEngine", "WhisperTranslateEngine", "choose_engine", "group_sentences",
           "split_proportionally"]

Check = Callable[[], None]
ENGINES = ("llm", "argos", "apertium", "whisper", "identity")
NO_SPACE_LANGUAGES = frozenset({"ja", "zh", "yue", "th", "lo", "km", "my", "bo"})
MAX_GROUP_SEGMENTS = 6
MAX_GROUP_CHARS = 400
MAX_GAP_SECONDS = 2.0
BATCH_UNITS = 16
CONTEXT_BEFORE = 2  # earlier sentences (with their translations) given to the LLM as context
CONTEXT_WINDOW = 4  # ...and all since the window began: prompts extend one another (KV reuse)
_SENTENCE_END_RE = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")


class TextEngine(Protocol):
    """Translates plain texts (one sentence unit each)."""

    name: str

    def supports(self, source: str, target: str) -> bool:
        """True if this engine can translate source→target here."""

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text."""


class Translator(Protocol):
    """Translates transcript segments into a Translation with the same segments and timings."""

    name: str

    def translate(self, segments: Sequence[Segment], source_lang: str, target_lang: str,
                  check: Check | None = None) -> Translation:
        """Translate `segments`; `check` is called between batches (cancellation)."""


class IdentityEngine:
    """Source and target are the same language: the text passes through."""

    name = "identity"

    def supports(self, source: str, target: str) -> bool:
        """True when no translation is needed."""
        return source == target

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Return the texts unchanged."""
        return list(texts)


def ends_sentence(text: str) -> bool:
    """True if `text` ends with sentence-final punctuation (closing quotes allowed)."""
    return bool(_SENTENCE_END_RE.search(text.strip()))


def _unit_full(unit: list[Segment], following: Segment) -> bool:
    """True if `following` must start a new unit even though `unit` is mid-sentence."""
    gap = following.start - unit[-1].end
    chars = sum(len(s.text) for s in unit)
    return gap > MAX_GAP_SECONDS or len(unit) >= MAX_GROUP_SEGMENTS or chars > MAX_GROUP_CHARS


def group_sentences(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Group consecutive segments into sentence units (capped in length and across long pauses)."""
    units: list[list[Segment]] = []
    current: list[Segment] = []
    for segment in segments:
        if current and _unit_full(current, segment):
            units.append(current)
            current = []
        current.append(segment)
        if ends_sentence(segment.text):
            units.append(current)
            current = []
    if current:
        units.append(current)
    return units


def _weight(text: str, by_chars: bool) -> int:
    """Length of a source segment: words, or characters for languages without spaces."""
    return len(text.replace(" ", "")) if by_chars else len(text.split())


def _cuts(weights: list[int], count: int) -> list[int]:
    """Token boundaries proportional to `weights`, giving each weighted part a token if possible."""
    total = sum(weights) or 1
    positive = sum(1 for w in weights if w > 0)
    bounds, acc = [0], 0
    for i, weight in enumerate(weights[:-1]):
        acc += weight
        cut = max(round(acc / total * count), bounds[-1])
        if count >= positive:
            needed_after = sum(1 for w in weights[i + 1:] if w > 0)
            cut = min(max(cut, bounds[-1] + (weight > 0)), count - needed_after)
        bounds.append(cut)
    return bounds + [count]


def split_proportionally(text: str, weights: list[int], by_chars: bool = False) -> list[str]:
    """Split `text` into len(weights) contiguous parts sized in proportion to `weights`."""
    if len(weights) <= 1:
        return [text.strip()] * len(weights)
    tokens = list(text.strip()) if by_chars else text.split()
    bounds = _cuts(weights, len(tokens))
    joiner = "" if by_chars else " "
    return [joiner.join(tokens[a:b]).strip() for a, b in zip(bounds, bounds[1:])]


class TextTranslator:
    """Sentence-aware segment translation through a text engine.

    The guarded LLM translates units in order, each with the job's preceding sentences and their
    translations as context (earlier calls count too: a dub translated unit by unit keeps it).
    A glossary goes to the LLM in its prompt and is substituted into the source for other engines.
    """

    def __init__(self, engine: TextEngine, glossary: dict[str, str] | None = None):
        self.engine = engine
        self.name = engine.name
        self.glossary = dict(glossary or {})

    def translate(self, segments: Sequence[Segment], source_lang: str, target_lang: str,
                  check: Check | None = None) -> Translation:
        """Translate sentence units in batches and re-split them over their segments."""
        units = group_sentences(segments)
        texts = [" ".join(s.text.strip() for s in unit if s.text.strip()) for unit in units]
        out: list[TranslatedSegment] = []
        for start in range(0, len(units), BATCH_UNITS):
            if check:
                check()
            rendered = self.render(texts, start, min(start + BATCH_UNITS, len(units)),
                                   source_lang, target_lang)
            for unit, result in zip(units[start:start + BATCH_UNITS], rendered):
                out += self._resplit(unit, result, source_lang, target_lang)
        return Translation(source_language=source_lang, target_language=target_lang,
                           segments=tuple(out), engine=self.name)

    def render(self, texts: list[str], start: int, stop: int, source: str,
               target: str) -> list[Rendered]:
        """Translate texts[start:stop] (the guarded LLM sees the job's earlier sentences)."""
        if isinstance(self.engine, GuardedEngine):
            return self.engine.render([Request(t) for t in texts[start:stop]], source, target)
        batch = [apply_glossary(t, self.glossary) for t in texts[start:stop]]
        return [Rendered(t, self.name) for t in self.engine.translate_texts(batch, source, target)]

    def shorten(self, items: Sequence[tuple[str, str, int]], source: str,
                target: str) -> list[str] | None:
        """Shorter translations sized to syllable budgets, or None if the engine cannot."""
        shorten = getattr(self.engine, "shorten", None)
        return shorten(items, source, target) if shorten else None

    def _resplit(self, unit: list[Segment], rendered: Rendered, source: str,
                 target: str) -> list[TranslatedSegment]:
        """Spread a unit's translation over its segments."""
        weights = [_weight(s.text, source in NO_SPACE_LANGUAGES) for s in unit]
        parts = split_proportionally(rendered.text, weights, by_chars=target in NO_SPACE_LANGUAGES)
        return [TranslatedSegment(index=s.index, start=s.start, end=s.end, source_text=s.text,
                                  text=part, engine=rendered.engine, note=rendered.note)
                for s, part in zip(unit, parts)]


def _overlap(a: Segment, b: Segment) -> float:
    """Seconds two segments overlap (negative: distance apart)."""
    return min(a.end, b.end) - max(a.start, b.start)


class WhisperTranslateEngine:
    """Any language → English straight from the audio (whisper task=translate)."""

    name = "whisper-translate"

    def __init__(self, audio: DecodedAudio, model: str = "base"):
        self.audio = audio
        self.model = model

    def supports(self, source: str, target: str) -> bool:
        """True for any source when the target is English."""
        return target == "en"

    def translate(self, segments: Sequence[Segment], source_lang: str, target_lang: str,
                  check: Check | None = None) -> Translation:
        """Recognise the audio into English and lay the text onto the source segments by time."""
        if target_lang != "en":
            raise UnsupportedJob("whisper translate only translates into English")
        from worker.stages.transcribe import Transcriber

        english = Transcriber(self.model).translate_to_english(
            self.audio, language=source_lang or "auto", check=check)
        slots = list(segments) or list(english.segments)
        texts: list[list[str]] = [[] for _ in slots]
        for piece in english.segments:
            best = max(range(len(slots)), key=lambda i: _overlap(slots[i], piece))
            texts[best].append(piece.text)
        translated = tuple(
            TranslatedSegment(index=s.index, start=s.start, end=s.end, source_text=s.text,
                              text=" ".join(t), engine=self.name) for s, t in zip(slots, texts))
        source = english.language if source_lang in ("", "auto") else source_lang
        return Translation(source_language=source, target_language="en", segments=translated,
                           engine=self.name)


def _whisper_engine(audio: DecodedAudio | None, asr_model: str) -> WhisperTranslateEngine | None:
    """A whisper translate engine if audio and a multilingual model are available."""
    from worker.models import is_multilingual, offline_asr_models

    if audio is None:
        return None
    model = asr_model if is_multilingual(asr_model) else "base"
    return WhisperTranslateEngine(audio, model) if model in offline_asr_models() else None


def _fallback_engine(source: str, target: str) -> TextEngine | None:
    """The engine the LLM falls back to: Apertium where it covers the pair, else Argos."""
    for engine in (ApertiumEngine(), ArgosEngine()):
        if engine.supports(source, target):
            return engine
    return None


def _llm(source: str, target: str, glossary: dict[str, str] | None) -> TextTranslator:
    guarded = GuardedEngine(LLMEngine(), _fallback_engine(source, target), glossary,
                            context=CONTEXT_BEFORE, window=CONTEXT_WINDOW)
    return TextTranslator(guarded, glossary)


def _preferred(preferred: str, source: str, target: str, audio: DecodedAudio | None,
               asr_model: str, glossary: dict[str, str] | None = None) -> Translator:
    """Return the engine the job asked for, or explain why it cannot run here."""
    name = preferred.lower().removesuffix("-translate")
    if name not in ENGINES:
        raise UnsupportedJob(f"unknown translation engine '{preferred}' "
                             f"(known: {', '.join(ENGINES)})")
    if name == "whisper":
        engine = _whisper_engine(audio, asr_model)
        if engine is None or target != "en":
            raise UnsupportedJob("whisper translate needs the source audio, a multilingual "
                                 "model and English as the target")
        return engine
    if name == "llm":
        if not LLMEngine().supports(source, target):
            raise UnsupportedJob(f"the LLM engine does not cover {source}→{target} on this "
                                 "worker (is the model installed? `worker models list`)")
        return _llm(source, target, glossary)
    text_engine = {"argos": ArgosEngine, "apertium": ApertiumEngine,
                   "identity": IdentityEngine}[name]()
    if not text_engine.supports(source, target):
        raise UnsupportedJob(f"translation engine '{name}' does not cover {source}→{target} "
                             "on this worker")
    return TextTranslator(text_engine, glossary)


def choose_engine(source: str, target: str, preferred: str | None = None,
                  audio: DecodedAudio | None = None, asr_model: str = "base",
                  glossary: dict[str, str] | None = None) -> Translator:
    """Pick a translator: identity, the LLM (guarded, Apertium fallback), Argos, Apertium, then
    whisper (→en), unless the job names one."""
    if source == target:
        return TextTranslator(IdentityEngine())
    if preferred:
        return _preferred(preferred, source, target, audio, asr_model, glossary)
    if source != "auto" and LLMEngine().supports(source, target):
        return _llm(source, target, glossary)
    for engine in (ArgosEngine(), ApertiumEngine()):
        if source != "auto" and engine.supports(source, target):
            return TextTranslator(engine, glossary)
    whisper = _whisper_engine(audio, asr_model) if target == "en" else None
    if whisper is not None:
        return whisper
    raise UnsupportedJob(f"no translation engine covers {source}→{target} on this worker; "
                         "install an Argos package with `worker models import FILE.argosmodel` "
                         "(or `worker models install` on an online machine)")
