"""espeak-ng through its command line: every language, robotic; the last resort."""
from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from pathlib import Path

from worker.stages.audio import duration_of
from worker.stages.tts_engines.base import EngineUnavailable, TTSError, normalize_lang

logger = logging.getLogger(__name__)

# ISO 639-1 codes whose espeak-ng voice has another name
_VOICE = {"en": "en-us", "zh": "cmn", "pt": "pt-br", "fr": "fr-fr", "yue": "yue"}


@functools.lru_cache(maxsize=1)
def espeak_voices() -> frozenset[str]:
    """Voice names espeak-ng knows (empty if it is not installed)."""
    exe = shutil.which("espeak-ng")
    if not exe:
        return frozenset()
    out = subprocess.run([exe, "--voices"], capture_output=True, text=True, check=False).stdout
    return frozenset(line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1)


class EspeakEngine:
    """espeak-ng subprocess; 22.05 kHz."""

    name = "espeak"
    max_chars = 1000

    def __init__(self, rate_wpm: int = 165):
        self.rate_wpm = rate_wpm

    @property
    def languages(self) -> frozenset[str]:
        """Every installed espeak-ng voice name."""
        return espeak_voices()

    def espeak_voice(self, lang: str) -> str | None:
        """The espeak-ng voice for an ISO code, or None."""
        code = normalize_lang(lang)
        for name in (_VOICE.get(code, code), code, lang.lower()):
            if name in espeak_voices():
                return name
        return None

    def supports(self, lang: str) -> bool:
        """Whether espeak-ng has a voice for `lang`."""
        return self.espeak_voice(lang) is not None

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Run espeak-ng with the text on stdin; return the wav's duration."""
        exe = shutil.which("espeak-ng")
        if not exe:
            raise EngineUnavailable("espeak-ng is not installed")
        name = voice or self.espeak_voice(lang)
        if name is None:
            raise TTSError(f"espeak-ng has no voice for {lang!r}")
        cmd = [exe, "-v", name, "-s", str(self.rate_wpm), "-b", "1", "-w", str(out_wav), "--stdin"]
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
        if proc.returncode != 0 or not Path(out_wav).exists():
            stderr = proc.stderr.decode("utf-8", "replace").strip()[-300:]
            raise TTSError(f"espeak-ng failed (exit {proc.returncode}): {stderr}")
        return duration_of(out_wav)
