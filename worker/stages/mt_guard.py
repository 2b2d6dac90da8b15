"""Checks on every machine translation, with one retry and a fallback engine; context in order.

An LLM can answer with nothing, repeat the source, drift into another language, run on, or drop a
number. Each output is checked (`problem`); a failing one is asked again once without context,
and if it still fails it is taken from the fallback engine (Apertium where it covers the pair).
Every result says which engine produced it and why (`Rendered.note`), for dub_report.json.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from worker.stages.mt_repair import repair
from worker.stages.translate_llm import LLMEngine, Request, glossary_hits, substitute_terms

logger = logging.getLogger(__name__)

MIN_RATIO, MAX_RATIO = 0.4, 2.6  # output/source characters, for sources of 20+ characters
# Common function words; enough to tell these languages apart in a sentence or two.
STOPWORDS = {
    "en": set("the and is are you that to of it in this was for with have not what be we "
              "they he she on at by from will would can there their our your let".split()),
    "es": set("el la los las que de y a es en un una por para con no lo se del al su sus como "
              "pero más muy este esta hay son está también mi ya le les yo".split()),
    "fr": set("le la les et est que de des un une pour avec pas ce qui dans il elle nous vous "
              "sur au aux du mais je ne mon ma ton sa ses".split()),
    "pt": set("o a os as que de e um uma para com não do da em se por dos das na no mais "
              "você é".split()),
    "it": set("il la che di e un una per con non è sono gli del della in le lo ma anche più "
              "questo".split()),
    "de": set("der die das und ist nicht ein eine zu mit den von sie es ich wir auf für dem "
              "auch sich".split()),
    "ca": set("el la els les que de i és un una per amb no del al en amb però més".split()),
    "nl": set("de het een en is van dat niet op te zijn met voor ook maar".split()),
}
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NUMBER_RE = re.compile(r"\d(?:[\d.,]*\d)?")
# "." closing an abbreviation: a word of at most 2 letters ("Dr.", "M.", "a. m.") or one with
# inner dots ("a.m."); such a "." does not end a sentence.
_ABBREVIATION_END = re.compile(r"(?:\b[^\W\d_]{1,2}|\.[^\W\d_])\.$")


@dataclass(frozen=True)
class Rendered:
    """One translated text, the engine that produced it and why (empty when nothing happened)."""

    text: str
    engine: str
    note: str = ""


def language_scores(text: str) -> dict[str, float]:
    """Share of the words of `text` that are common words of each known language."""
    words = [w.lower() for w in _WORD_RE.findall(text)]
    if not words:
        return {}
    return {lang: sum(w in stop for w in words) / len(words) for lang, stop in STOPWORDS.items()}


def likely_language(text: str, min_words: int = 4) -> str | None:
    """The language whose common words dominate `text`, or None when too short to tell."""
    scores = language_scores(text)
    if len(_WORD_RE.findall(text)) < min_words or not scores:
        return None
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    return best if top >= 0.12 and top >= 1.5 * second else None


def _normal(text: str) -> str:
    return " ".join(_WORD_RE.findall(text.lower()))


def problem(source: str, output: str, source_lang: str, target_lang: str,
            glossary: Mapping[str, str] | None = None) -> str | None:
    """Why `output` is not an acceptable translation of `source`, or None if it is."""
    if not _WORD_RE.search(source):
        return None  # nothing to translate (music notes, numbers only)
    if not _WORD_RE.search(output):
        return "empty"
    if len(source) >= 12 and _normal(output) == _normal(source):
        return "untranslated"
    if sentences(output) > max(1, sentences(source)):
        return "added_sentence"  # typically a context sentence translated along with the line
    language = likely_language(output)
    if language is not None and language != target_lang:
        return "still_source_language" if language == source_lang else "wrong_language"
    if len(source) >= 20 and not MIN_RATIO <= len(output) / len(source) <= MAX_RATIO:
        return "too_long" if len(output) > len(source) else "too_short"
    if not _numbers_kept(source, output):
        return "number_lost"
    for term, value in glossary_hits(source, glossary or {}).items():
        if value.lower() not in output.lower():
            return "glossary_ignored"
    return None


def sentences(text: str) -> int:
    """How many sentences `text` holds (abbreviations like "Dr." or "a.m." do not end one)."""
    text, count = text.strip(), 0
    for match in re.finditer(r"[.!?…]+(?=\s+[¡¿\"«(]?[^\W\d_]|\s*$)", text):
        before = text[:match.end()] if match.group(0) == "." else ""
        if not (before and _ABBREVIATION_END.search(before)):
            count += 1
    return max(count, 1 if _WORD_RE.search(text) else 0)


def _numbers_kept(source: str, output: str) -> bool:
    """Every number of the source is a whole number of the output, separators aside ("1,000" =
    "1.000" = "1000", "2.5" = "2,5"; a lost "1" is not found inside "13")."""
    def numbers(text: str) -> list[str]:
        return [re.sub(r"[.,]", "", n) for n in _NUMBER_RE.findall(text)]

    have = numbers(output)
    for group in numbers(source):
        if group not in have:
            return False
        have.remove(group)
    return True


def apply_glossary(text: str, glossary: Mapping[str, str]) -> str:
    """Replace glossary terms in a source text by their translations (for rule-based engines,
    which pass unknown words through unchanged)."""
    return substitute_terms(text, glossary)


# Characters of context pairs at most (≈ 1,000 tokens: the prompt stays well inside the model's
# 2,048-token context with the rules, examples and the line itself).
MAX_CONTEXT_CHARS = 3600


class GuardedEngine:
    """The LLM with output checks, one retry and a fallback engine (a `TextEngine`)."""

    def __init__(self, primary: LLMEngine, fallback=None, glossary: Mapping[str, str] | None = None,
                 context: int = 2, window: int = 8):
        self.primary = primary
        self.fallback = fallback
        self.glossary = dict(glossary or {})
        self.name = primary.name
        self.context = context  # earlier (source, translation) pairs shown with each text (min)
        self.window = window  # a context window restarts every `window` lines (see `recent`)
        self.history: list[tuple[str, str]] = []  # this job's translations so far, in order

    def supports(self, source: str, target: str) -> bool:
        """True where the primary engine covers the pair."""
        return self.primary.supports(source, target)

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Plain `TextEngine` call: the texts only."""
        return [r.text for r in self.render([Request(t) for t in texts], source, target)]

    def shorten(self, items: Sequence[tuple[str, str, int]], source: str,
                target: str) -> list[str]:
        """Shorter versions sized to syllable budgets (see LLMEngine.shorten)."""
        return self.primary.shorten(items, source, target)

    def render(self, requests: Sequence[Request], source: str, target: str) -> list[Rendered]:
        """Translate in order, each text after the previous ones (its context), checking every
        output: a failure is retried once without context, then taken from the fallback."""
        results = []
        for request in requests:
            context = Request(request.text, tuple(self.recent()))
            [out] = self.primary.translate_requests([context], source, target, self.glossary)
            why = problem(request.text, out, source, target, self.glossary)
            if why is None:
                result = Rendered(out, self.name)
            else:
                [again] = self.primary.translate_requests([context], source, target,
                                                          self.glossary, strict=True)
                if problem(request.text, again, source, target, self.glossary) is None:
                    result = Rendered(again, self.name, f"retried: {why}")
                else:
                    result = self._fall_back(request.text, out, why, source, target)
            result = self._repaired(request.text, result, source, target)
            self.history.append((request.text, result.text))
            results.append(result)
        return results

    def recent(self) -> list[tuple[str, str]]:
        """The context for the next line: every pair since the current window began.

        Windows begin every `window` lines and always hold at least `context` pairs, so within a
        window each prompt extends the previous one (its answer included) and llama.cpp, which
        keeps the evaluated prefix, evaluates only the new line. A window too long for the
        model's context falls back to the last `context` pairs.
        """
        if self.context <= 0:
            return []
        count = len(self.history)
        start = max(0, count - self.context)
        if self.window > 0:
            start = min(start, max(0, (count - self.context) // self.window * self.window))
        recent = self.history[start:]
        if sum(len(a) + len(b) for a, b in recent) > MAX_CONTEXT_CHARS:
            recent = self.history[max(0, count - self.context):]
        return recent

    def _repaired(self, text: str, result: Rendered, source: str, target: str) -> Rendered:
        """The LLM's answer with source words it left untranslated put into the target."""
        if result.engine != self.name:
            return result
        fixed, words = repair(text, result.text, source, target)
        if not words:
            return result
        note = f"repaired: {', '.join(words)}"
        return Rendered(fixed, result.engine, f"{result.note}; {note}" if result.note else note)

    def _fall_back(self, text: str, attempt: str, why: str, source: str,
                   target: str) -> Rendered:
        """The fallback engine's translation, or the LLM's answer if there is no fallback."""
        if self.fallback is None or not self.fallback.supports(source, target):
            logger.warning("llm output failed its check (%s) and no fallback covers %s→%s",
                           why, source, target)
            return Rendered(attempt or text, self.name, f"unchecked: {why}, no fallback engine")
        logger.info("llm output failed its check twice (%s); using %s", why, self.fallback.name)
        out = self.fallback.translate_texts([apply_glossary(text, self.glossary)], source, target)
        return Rendered(out[0], self.fallback.name, f"fallback: llm {why}")
