"""Text-to-speech engines behind one interface (`TTSEngine`); each loads its model lazily once."""
from worker.stages.tts_engines.base import (
    EngineUnavailable,
    TTSEngine,
    TTSError,
    normalize_lang,
    split_text,
)
from worker.stages.tts_engines.coqui import CoquiEngine, coqui_model_dir
from worker.stages.tts_engines.espeak import EspeakEngine
from worker.stages.tts_engines.kokoro import KokoroEngine
from worker.stages.tts_engines.piper import PiperEngine

__all__ = [
    "CoquiEngine", "EngineUnavailable", "EspeakEngine", "KokoroEngine", "PiperEngine", "TTSEngine",
    "TTSError", "coqui_model_dir", "normalize_lang", "split_text",
]
