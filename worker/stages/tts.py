"""Text-to-speech stage: voice every translated segment, isolating failures per segment.

A segment is tried on the first engine of the chain that speaks the language, retried once,
then handed to the next engine; if every engine fails it is left silent and flagged
`tts_failed` — one bad segment never aborts the job.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from worker.errors import JobCancelled, LeaseLost, ShutdownRequested
from worker.stages.audio import load_audio, read_wav, resample, write_wav
from worker.stages.tts_engines import (
    CoquiEngine,
    EngineUnavailable,
    EspeakEngine,
    KokoroEngine,
    PiperEngine,
    TTSEngine,
    TTSError,
    coqui_model_dir,
    split_text,
)
from worker.stages.types import SynthesizedSegment, TranslatedSegment

logger = logging.getLogger(__name__)

__all__ = [
    "TTSEngine", "TTSError", "choose_voice", "default_chain", "get_engine", "speaker_reference",
    "synthesize_segments", "voice_text",
]

_FACTORIES: dict[str, Callable[[], TTSEngine]] = {
    "coqui": CoquiEngine, "kokoro": KokoroEngine, "piper": PiperEngine, "espeak": EspeakEngine,
}
_engines: dict[str, TTSEngine] = {}
_engines_lock = threading.Lock()
_STOP = (JobCancelled, LeaseLost, ShutdownRequested)
CHUNK_PAUSE_S = 0.12
MIN_CHARS_PER_S = 2.5  # slower than this (even for CJK) is a babbling model, not speech


def get_engine(name: str) -> TTSEngine:
    """The process-wide instance of a named engine (created once, model loaded on first use)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown TTS engine {name!r}; known: {sorted(_FACTORIES)}")
    # the Coqui engine depends on which model folder is configured, so it is keyed by it
    key = f"coqui:{coqui_model_dir()}" if name == "coqui" else name
    with _engines_lock:
        if key not in _engines:
            _engines[key] = _FACTORIES[name]()
        return _engines[key]


def default_chain(lang: str,
                  names: Sequence[str] = ("coqui", "kokoro", "piper", "espeak")) -> list[TTSEngine]:
    """Engines for `lang`, best first: Coqui (only with a local model), Kokoro, Piper, espeak-ng."""
    chain = []
    for name in names:
        if name == "coqui" and coqui_model_dir() is None:
            continue
        engine = get_engine(name)
        if engine.supports(lang):
            chain.append(engine)
    return chain


def synthesize_segments(
    segments: Sequence[TranslatedSegment],
    lang: str,
    engines_chain: Sequence[TTSEngine],
    out_dir: Path,
    *,
    voices: Mapping[str, str] | None = None,
    speaker_wav: Path | None = None,
    retries: int = 1,
    check: Callable[[], None] | None = None,
    on_done: Callable[[SynthesizedSegment, int, int], None] | None = None,
) -> list[SynthesizedSegment]:
    """Voice each segment into out_dir/seg_NNNNN.wav; failures become flagged silent segments.

    `voices` maps an engine name to its voice; `check()` runs before every segment (it raises to
    stop the job); `on_done(result, done, total)` runs after every segment.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    chain = [engine for engine in engines_chain if engine.supports(lang)]
    voicing = _Voicing(lang, chain, out_dir, voices or {}, speaker_wav, retries)
    results = []
    for done, segment in enumerate(segments, start=1):
        if check is not None:
            check()
        results.append(voicing.segment(segment))
        if on_done is not None:
            on_done(results[-1], done, len(segments))
    return results


@dataclass
class _Voicing:
    """One job's TTS settings, and the engines found unusable during it."""

    lang: str
    chain: list[TTSEngine]
    out_dir: Path
    voices: Mapping[str, str]
    speaker_wav: Path | None
    retries: int
    dead: set[str] = field(default_factory=set)

    def segment(self, segment: TranslatedSegment) -> SynthesizedSegment:
        """Try each engine (with retries) for one segment; never raises for a synthesis failure."""
        text = " ".join(segment.text.split())
        if not text:
            return SynthesizedSegment(segment.index, None, 0.0, engine="", flags=("empty",))
        out_wav = self.out_dir / f"seg_{segment.index:05d}.wav"
        errors: list[str] = []
        for position, engine in enumerate(self.chain):
            for attempt in range(1 + self.retries):
                if engine.name in self.dead:
                    break
                voiced = self._attempt(engine, text, out_wav, errors, segment.index)
                if voiced is not None:
                    flags = ("tts_fallback",) if position else ("tts_retried",) if errors else ()
                    duration, rate = voiced
                    return SynthesizedSegment(segment.index, out_wav, duration, engine.name, rate,
                                              flags, "; ".join(errors) or None)
        out_wav.unlink(missing_ok=True)
        logger.error("segment %d left silent: no TTS engine could voice it", segment.index)
        return SynthesizedSegment(segment.index, None, 0.0, engine="", flags=("tts_failed",),
                                  error="; ".join(errors) or f"no TTS engine speaks {self.lang!r}")

    def _attempt(self, engine: TTSEngine, text: str, out_wav: Path, errors: list[str],
                 index: int) -> tuple[float, int] | None:
        """One try: (duration, rate), or None with the failure appended to `errors`."""
        try:
            return voice_text(engine, text, self.lang, out_wav, self.voices.get(engine.name),
                              self.speaker_wav)
        except _STOP:
            raise
        except EngineUnavailable as exc:
            self.dead.add(engine.name)
            errors.append(f"{engine.name}: {exc}")
            logger.warning("TTS engine %s unavailable for this job: %s", engine.name, exc)
        except Exception as exc:  # isolate: any engine failure is this segment's problem only
            errors.append(f"{engine.name}: {type(exc).__name__}: {exc}")
            logger.warning("segment %d: %s failed: %s", index, engine.name, exc)
        return None


def voice_text(engine: TTSEngine, text: str, lang: str, out_wav: Path, voice: str | None = None,
               speaker_wav: Path | None = None) -> tuple[float, int]:
    """Speak text with one engine, split under its max_chars; return (duration, sample rate)."""
    chunks = split_text(text, engine.max_chars)
    if len(chunks) == 1:
        engine.synthesize(chunks[0], lang, out_wav, voice=voice, speaker_wav=speaker_wav)
    else:
        _voice_chunks(engine, chunks, lang, out_wav, voice, speaker_wav)
    info = sf.info(str(out_wav))
    duration = info.frames / info.samplerate
    _check_plausible(text, duration)
    return duration, info.samplerate


def _voice_chunks(engine: TTSEngine, chunks: list[str], lang: str, out_wav: Path, voice: str | None,
                  speaker_wav: Path | None) -> None:
    """Speak each chunk to a part file and join them with short pauses."""
    pieces, rate = [], None
    for i, chunk in enumerate(chunks):
        part = out_wav.with_name(f"{out_wav.stem}.part{i}.wav")
        try:
            engine.synthesize(chunk, lang, part, voice=voice, speaker_wav=speaker_wav)
            audio, sr = read_wav(part)
        finally:
            part.unlink(missing_ok=True)
        rate = rate or sr
        pieces += [resample(audio, sr, rate), np.zeros(int(CHUNK_PAUSE_S * rate), np.float32)]
    write_wav(out_wav, np.concatenate(pieces[:-1]), rate)


def _check_plausible(text: str, duration: float) -> None:
    """Reject empty output and babbling far longer than the text could take to say."""
    if duration < 0.05:
        raise TTSError(f"engine produced {duration:.3f} s of audio")
    limit = 2.0 + len(text) / MIN_CHARS_PER_S
    if duration > limit:
        raise TTSError(f"engine produced {duration:.1f} s for {len(text)} characters "
                       f"(limit {limit:.1f} s)")


def speaker_reference(source_media: Path, segments: Sequence[TranslatedSegment], out_wav: Path,
                      seconds: float = 8.0, sample_rate: int = 22050) -> Path | None:
    """Cut a few seconds of the source speech (longest segments first) for voice cloning."""
    spoken = sorted((s for s in segments if s.end > s.start), key=lambda s: s.start - s.end)
    if not spoken:
        return None
    audio = load_audio(source_media, sample_rate, channels=1)
    pieces, total = [], 0.0
    for seg in spoken:
        stop = min(seg.end, seg.start + 10.0)
        piece = audio[int(seg.start * sample_rate):int(stop * sample_rate)]
        pieces.append(piece)
        total += len(piece) / sample_rate
        if total >= seconds:
            break
    joined = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if len(joined) < sample_rate:
        return None
    return write_wav(out_wav, joined, sample_rate)


def choose_voice(engine: TTSEngine, lang: str, requested: str | None, source_wav: Path,
                 spans: Sequence[tuple[float, float]] = ()) -> tuple[str | None, dict]:
    """The voice for a job's first engine and the report's account of it.

    Returns (voice to pass the engine or None for its default, {"voice", "voice_reason"}). The
    job's `voice` option wins; an engine with both a male and a female voice for `lang` (Kokoro's
    native es/it/pt voices) gets the one matching the source speaker's median pitch.
    """
    if requested:
        return requested, {"voice": requested, "voice_reason": "job option voice"}
    pick = getattr(engine, "voice_for", None)
    male, female = (pick(lang, "male"), pick(lang, "female")) if pick else (None, None)
    if male and female:
        from worker.stages.pitch import MALE_BELOW_HZ, speaker_pitch

        try:
            f0 = speaker_pitch(source_wav, spans)
        except Exception as exc:  # a voice choice must never fail the dub
            logger.warning("could not measure the source pitch: %s", exc)
            f0 = None
        if f0 is None:
            return female, {"voice": female, "voice_reason": "source pitch not measurable"}
        gender, voice = ("male", male) if f0 < MALE_BELOW_HZ else ("female", female)
        why = f"source median pitch {f0:.0f} Hz → {gender}"
        return voice, {"voice": voice, "voice_reason": why}
    default = getattr(engine, "default_voice_for", None)
    if default is None:
        return None, {"voice": None, "voice_reason": f"{engine.name} default"}
    voice, why = default(lang)
    return None, {"voice": voice, "voice_reason": why}
