"""Repair words an LLM left untranslated, with Apertium's dictionaries.

A small LLM sometimes copies a rarer source word into its answer ("frío y selfish"). A word of
the answer that also occurs in the source (not as a capitalised name there) and that the target
language's Apertium analyser does not know is such a leftover; it is replaced by Apertium's
translation of that word. Only where Apertium covers the pair; otherwise answers pass unchanged.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from pathlib import Path

from worker.stages.translate_apertium import ISO3_TO_1, ApertiumEngine, apertium_mode

logger = logging.getLogger(__name__)

APERTIUM_DIR = Path("/usr/share/apertium")
_WORD_RE = re.compile(r"[^\W\d_]{3,}")
_ANALYSIS_RE = re.compile(r"\^([^/$]*)/([^$]*)\$")


@functools.lru_cache(maxsize=16)
def analyser(lang: str) -> Path | None:
    """The Apertium morphological analyser of `lang` (any installed pair's), or None."""
    codes = [iso3 for iso3, iso1 in ISO3_TO_1.items() if iso1 == lang] + [lang]
    for code in codes:
        found = sorted(APERTIUM_DIR.glob(f"*/{code}-*.automorf.bin"))
        if found:
            return found[0]
    return None


def unknown_words(words: list[str], lang: str) -> set[str]:
    """The words the analyser of `lang` does not know (all of them if it cannot run)."""
    path = analyser(lang)
    if path is None or not words or not shutil.which("lt-proc"):
        return set()
    try:
        out = subprocess.run(["lt-proc", str(path)], input="\n".join(words) + "\n",
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {m.group(1) for m in _ANALYSIS_RE.finditer(out.stdout) if m.group(2).startswith("*")}


def leftovers(source: str, output: str, target: str) -> list[str]:
    """Words of `output` copied from `source` that are not words of the target language."""
    # any capitalised source word may be a name, even a sentence's first (names there are
    # common; a capitalised leftover like "Selfish" is rare): those are never replaced
    names = {w.lower() for w in _WORD_RE.findall(source) if w[0].isupper()}
    source_words = {w.lower() for w in _WORD_RE.findall(source)}
    copied = [w for w in dict.fromkeys(_WORD_RE.findall(output))
              if w.lower() in source_words and w.lower() not in names]
    unknown = unknown_words(copied, target)
    return [w for w in copied if w in unknown]


def repair(source: str, output: str, source_lang: str, target_lang: str) -> tuple[str, list[str]]:
    """`output` with leftover source words translated by Apertium; and what was replaced."""
    mode = apertium_mode(source_lang, target_lang)
    if mode is None:
        return output, []
    words = leftovers(source, output, target_lang)
    if not words:
        return output, []
    done = []
    for word, replacement in zip(words, ApertiumEngine().translate_texts(words, source_lang,
                                                                         target_lang)):
        if word[:1].islower():  # Apertium capitalises a line's first word
            replacement = replacement[:1].lower() + replacement[1:]
        if replacement and replacement.lower() != word.lower() and " " not in replacement:
            output = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", lambda _m, r=replacement: r, output)
            done.append(f"{word}→{replacement}")
    if done:
        logger.info("repaired untranslated words: %s", ", ".join(done))
    return output, done
