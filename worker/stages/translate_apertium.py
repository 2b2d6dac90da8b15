"""Apertium (rule-based, offline) translation through the `apertium` command."""
from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from pathlib import Path

from worker.errors import JobFailed, UnsupportedJob

logger = logging.getLogger(__name__)

MODES_DIR = Path("/usr/share/apertium/modes")
# ISO 639-3 (Apertium's names for most pairs) -> ISO 639-1 (dubfleet's language codes).
ISO3_TO_1 = {
    "afr": "af", "ara": "ar", "arg": "an", "ast": "ast", "bel": "be", "bos": "bs", "bre": "br",
    "bul": "bg", "cat": "ca", "ces": "cs", "cym": "cy", "dan": "da", "deu": "de", "ell": "el",
    "eng": "en", "epo": "eo", "est": "et", "eus": "eu", "fao": "fo", "fin": "fi", "fra": "fr",
    "gla": "gd", "gle": "ga", "glg": "gl", "hbs": "sh", "heb": "he", "hin": "hi", "hrv": "hr",
    "hun": "hu", "ind": "id", "isl": "is", "ita": "it", "kaz": "kk", "kir": "ky", "lav": "lv",
    "lit": "lt", "mkd": "mk", "mlt": "mt", "msa": "ms", "nld": "nl", "nno": "nn", "nob": "no",
    "oci": "oc", "pol": "pl", "por": "pt", "ron": "ro", "rus": "ru", "slk": "sk", "slv": "sl",
    "spa": "es", "sqi": "sq", "srp": "sr", "swe": "sv", "tat": "tt", "tur": "tr", "ukr": "uk",
    "urd": "ur", "uzb": "uz",
}
_DELIMITER = "[[dubfleet-{}]]"
_DELIMITER_RE = re.compile(r"^\s*\[\[dubfleet-(\d+)\]\]\s*$")
# Apertium marks words it could not generate with '#' and untranslated lemmas with '@'.
_MARKS_RE = re.compile(r"(?<!\w)[#@*](?=\w)")


def to_iso1(code: str) -> str:
    """Map an Apertium language name (eng, spa, en_US variants) to an ISO 639-1 code."""
    base = code.split("_")[0]
    return ISO3_TO_1.get(base, base)


@functools.lru_cache(maxsize=1)
def _modes() -> dict[tuple[str, str], str]:
    """Map ISO 639-1 (src, dst) pairs to Apertium modes, preferring plain (non-variant) modes."""
    names = sorted(p.stem for p in MODES_DIR.glob("*.mode")) if MODES_DIR.is_dir() else []
    if not names and shutil.which("apertium"):
        names = _modes_from_cli()
    pairs: dict[tuple[str, str], str] = {}
    for name in sorted(names, key=lambda n: ("_" in n, n)):
        parts = name.split("-")
        if len(parts) == 2:
            pairs.setdefault((to_iso1(parts[0]), to_iso1(parts[1])), name)
    return pairs


def _modes_from_cli() -> list[str]:
    """Ask `apertium -l` for the installed modes."""
    try:
        out = subprocess.run(["apertium", "-l"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def apertium_pairs() -> list[tuple[str, str]]:
    """Installed Apertium language pairs as ISO 639-1 (src, dst) tuples."""
    if not shutil.which("apertium"):
        return []
    return sorted(_modes())


def apertium_mode(source: str, target: str) -> str | None:
    """Return the Apertium mode for source→target, or None."""
    return _modes().get((source, target)) if shutil.which("apertium") else None


def _clean(text: str) -> str:
    """Strip Apertium's unknown/generation marks and collapse whitespace."""
    return " ".join(_MARKS_RE.sub("", text).split())


def run_apertium(mode: str, text: str, timeout: float = 120.0) -> str:
    """Translate `text` with one `apertium -u MODE` process."""
    try:
        out = subprocess.run(["apertium", "-u", mode], input=text, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise JobFailed(f"apertium {mode} timed out after {timeout:.0f} s") from exc
    if out.returncode != 0:
        raise JobFailed(f"apertium {mode} failed: {out.stderr.strip()[:300]}")
    return out.stdout


def _split_batch(output: str, count: int) -> list[str] | None:
    """Split batched output back into `count` texts, or None if the delimiters were disturbed."""
    chunks: list[list[str]] = [[]]
    for line in output.splitlines():
        match = _DELIMITER_RE.match(line)
        if match and int(match.group(1)) == len(chunks):
            chunks.append([])
        else:
            chunks[-1].append(line)
    if len(chunks) != count:
        return None
    return [_clean(" ".join(lines)) for lines in chunks]


class ApertiumEngine:
    """Text translation with Apertium; many texts go through one process."""

    name = "apertium"

    def supports(self, source: str, target: str) -> bool:
        """True if an Apertium mode covers source→target."""
        return apertium_mode(source, target) is not None

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text; all in one `apertium` call separated by delimiter lines."""
        mode = apertium_mode(source, target)
        if mode is None:
            raise UnsupportedJob(f"no Apertium pair {source}→{target} is installed")
        if not texts:
            return []
        lines = [" ".join(t.split()) for t in texts]
        batch = "".join(f"{_DELIMITER.format(i)}\n{line}\n" if i else f"{line}\n"
                        for i, line in enumerate(lines))
        result = _split_batch(run_apertium(mode, batch), len(lines))
        if result is None:  # a delimiter was altered: fall back to one process per text
            logger.warning("apertium changed the batch delimiters; translating one by one")
            result = [_clean(run_apertium(mode, line)) for line in lines]
        return result
