"""Coqui TTS (coqui-tts) from a local model folder: XTTS v2 voice cloning, or any saved Coqui model.

Nothing is ever downloaded: the folder comes from the `model_dir` argument or
DUBFLEET_COQUI_MODEL_DIR and must hold a `config.json` and the weights (for XTTS: `model.pth`,
`vocab.json`, `speakers_xtts.pth`; for other models: one `.pth` checkpoint).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from worker.stages.audio import write_wav
from worker.stages.tts_engines.base import LazyModel, TTSError, normalize_lang

logger = logging.getLogger(__name__)

ENV_MODEL_DIR = "DUBFLEET_COQUI_MODEL_DIR"
_CHECKPOINT_NAMES = ("model.pth", "best_model.pth", "model_file.pth", "model.pth.tar")
# XTTS names Chinese "zh-cn"; everything else is ISO 639-1
_XTTS_LANG = {"zh": "zh-cn"}


def coqui_model_dir(model_dir: Path | str | None = None) -> Path | None:
    """The configured local Coqui model folder (argument, else env), if it has a config.json."""
    candidate = model_dir or os.environ.get(ENV_MODEL_DIR)
    if not candidate:
        return None
    path = Path(candidate).expanduser()
    return path if (path / "config.json").is_file() else None


def find_checkpoint(model_dir: Path) -> Path:
    """The weights file of a non-XTTS model folder."""
    for name in _CHECKPOINT_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    found = sorted(model_dir.glob("*.pth"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise TTSError(f"no Coqui checkpoint (.pth) in {model_dir}")
    return found[-1]


def _is_xtts(config_path: Path) -> bool:
    """Whether a config.json describes an XTTS model."""
    return "xtts" in str(json.loads(config_path.read_text()).get("model", "")).lower()


class CoquiEngine:
    """A local Coqui TTS model; clones the source speaker with XTTS when a speaker wav is given."""

    name = "coqui"

    def __init__(self, model_dir: Path | str | None = None,
                 languages: tuple[str, ...] | None = None, device: str | None = None,
                 max_chars: int | None = None):
        self.model_dir = coqui_model_dir(model_dir)
        self.is_xtts = bool(self.model_dir) and _is_xtts(self.model_dir / "config.json")
        self.max_chars = max_chars or (200 if self.is_xtts else 400)
        self._configured_languages = languages
        self.device = device
        self._tts = LazyModel(self._load)

    def _load(self):
        """Load the model through Coqui's own path-based API (TTS(model_path=, config_path=))."""
        if self.model_dir is None:
            raise TTSError(f"no local Coqui model: set {ENV_MODEL_DIR} to a folder with "
                           "config.json")
        from TTS.api import TTS

        config = self.model_dir / "config.json"
        weights = self.model_dir if self.is_xtts else find_checkpoint(self.model_dir)
        tts = TTS(model_path=str(weights), config_path=str(config), progress_bar=False)
        device = self.device or _default_device()
        logger.info("loaded Coqui model %s on %s", self.model_dir, device)
        return tts.to(device)

    @property
    def languages(self) -> frozenset[str]:
        """Configured languages, else the model's own list, else any (empty set)."""
        if self._configured_languages is not None:
            return frozenset(normalize_lang(lang) for lang in self._configured_languages)
        if self.model_dir is None:
            return frozenset()
        config = json.loads((self.model_dir / "config.json").read_text())
        listed = config.get("languages") or []
        return frozenset(normalize_lang(lang) for lang in listed if isinstance(lang, str))

    def supports(self, lang: str) -> bool:
        """Whether a model is configured and speaks `lang` (models without a list: any)."""
        if self.model_dir is None:
            return False
        return not self.languages or normalize_lang(lang) in self.languages

    def synthesize(self, text: str, lang: str, out_wav: Path, voice: str | None = None,
                   speaker_wav: Path | None = None) -> float:
        """Speak text (cloning speaker_wav where the model can); return the duration."""
        tts = self._tts.get()
        args = self._voice_args(tts, lang, voice, speaker_wav)
        wav = tts.tts(text=text, split_sentences=False, **args)
        audio = np.asarray(wav, dtype=np.float32).ravel()
        if audio.size == 0:
            raise TTSError("Coqui produced no audio")
        sr = int(tts.synthesizer.output_sample_rate)
        write_wav(out_wav, audio, sr)
        return audio.size / sr

    def _voice_args(self, tts, lang: str, voice: str | None, speaker_wav: Path | None) -> dict:
        """Language and speaker arguments the loaded model accepts."""
        args: dict = {}
        if tts.is_multi_lingual:
            code = normalize_lang(lang)
            args["language"] = _XTTS_LANG.get(code, code) if self.is_xtts else code
        if speaker_wav is not None and (self.is_xtts or tts.synthesizer.encoder_checkpoint):
            args["speaker_wav"] = str(speaker_wav)
        elif tts.is_multi_speaker:
            speakers = tts.speakers or []
            if not voice and not speakers:
                raise TTSError("this Coqui model needs a speaker wav or a speaker name")
            args["speaker"] = voice or speakers[0]
        return args


def _default_device() -> str:
    """cuda when torch sees a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
