"""The TTS engine interface and what all engines share: errors, language codes, text splitting."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from worker.stages.text import greedy_pack


class TTSError(RuntimeError):
    """Synthesis of one piece of text failed."""


class EngineUnavailable(TTSError):
    """The engine cannot run in this process at all (missing package or model)."""


@runtime_checkable
class TTSEngine(Protocol):
    """A text-to-speech engine: writes a mono wav for one piece of text."""

    name: str
    max_chars: int

    @property
    def languages(self) -> frozenset[str]:
        """ISO 639-1 codes this engine speaks well (empty: any language)."""

    def supports(self, lang: str) -> bool:
        """Whether this engine can speak `lang`."""

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Write `text` spoken in `lang` to `out_wav`; return its duration in seconds."""


_ISO3 = {
    "eng": "en", "spa": "es", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "ita": "it",
    "por": "pt", "rus": "ru", "jpn": "ja", "zho": "zh", "chi": "zh", "cmn": "zh", "kor": "ko",
    "ara": "ar", "hin": "hi", "nld": "nl", "dut": "nl", "pol": "pl", "tur": "tr", "ces": "cs",
    "cze": "cs", "hun": "hu", "cat": "ca", "ukr": "uk", "swe": "sv",
}


def normalize_lang(lang: str) -> str:
    """'es-ES', 'spa', 'ES' -> 'es'."""
    code = re.split(r"[-_]", (lang or "").strip().lower(), maxsplit=1)[0]
    return _ISO3.get(code, code)


class LazyModel:
    """Loads a model once per owner on first use (thread-safe); remembers a load failure."""

    def __init__(self, loader: Callable[[], Any]):
        self._loader = loader
        self._lock = threading.Lock()
        self._value: Any = None
        self._error: BaseException | None = None

    def get(self) -> Any:
        """The loaded model; raises EngineUnavailable if loading failed (now or before)."""
        with self._lock:
            if self._value is None and self._error is None:
                try:
                    self._value = self._loader()
                except Exception as exc:  # any loader failure makes the engine unusable
                    self._error = exc
            if self._error is not None:
                reason = f"{type(self._error).__name__}: {self._error}"
                raise EngineUnavailable(reason) from self._error
            return self._value


_SPLITTERS = (
    r"(?<=[.!?…;])\s+|(?<=[。！？])",  # sentences
    r"(?<=[,:])\s+|(?<=[、，])",  # clauses
    r"\s+",  # words
)


def split_text(text: str, max_chars: int) -> list[str]:
    """Chunks of at most max_chars, split at sentence, then comma, then word boundaries."""
    text = " ".join(text.split())
    if not text:
        return []
    return _pack(_pieces(text, max_chars, 0), max_chars)


def _pieces(text: str, max_chars: int, level: int) -> list[str]:
    """Recursively split text until every piece fits."""
    if len(text) <= max_chars:
        return [text]
    if level == len(_SPLITTERS):
        return [text[i:i + max_chars] for i in range(0, len(text), max_chars)]
    parts = [p.strip() for p in re.split(_SPLITTERS[level], text) if p and p.strip()]
    return [piece for part in parts for piece in _pieces(part, max_chars, level + 1)]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join neighbouring pieces while they fit."""
    return greedy_pack(pieces, max_chars)
