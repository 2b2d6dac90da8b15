"""Data passed between media stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class MediaInfo:
    """What probing found in the input file."""

    path: Path
    container: str
    duration: float
    has_video: bool
    has_audio: bool
    audio_codec: str | None = None
    video_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class DecodedAudio:
    """The input's first audio stream decoded to mono float32 PCM (a 16 kHz wav on disk)."""

    wav_path: Path
    sample_rate: int
    duration: float


@dataclass(frozen=True)
class Word:
    """One recognised word with its timing (seconds)."""

    start: float
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    """One recognised stretch of speech."""

    index: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class Transcript:
    """Recognition result of a whole input."""

    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]
    model: str = ""


@dataclass(frozen=True)
class TranslatedSegment:
    """A segment's translation, keeping the source timing."""

    index: int
    start: float
    end: float
    source_text: str
    text: str
    engine: str = ""
    note: str = ""  # why another engine or a retry produced this line (mt_guard), or ""


@dataclass(frozen=True)
class Translation:
    """Translation of a transcript."""

    source_language: str
    target_language: str
    segments: tuple[TranslatedSegment, ...]
    engine: str = ""


@dataclass(frozen=True)
class SynthesizedSegment:
    """A segment voiced by a TTS engine (wav on disk), or left silent with flags."""

    index: int
    wav_path: Path | None
    duration: float
    engine: str
    sample_rate: int = 24000
    flags: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PlacedSegment:
    """Where a synthesized segment sits in the dubbed track and how it was fitted."""

    index: int
    slot_start: float
    slot_end: float
    placed_start: float
    placed_end: float
    synth_duration: float
    speed: float
    engine: str
    flags: tuple[str, ...] = field(default_factory=tuple)
