"""Speech recognition with faster-whisper: streamed segments, word timings, cancellation checks."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from worker.errors import UnsupportedJob
from worker.models import resolve_asr_model
from worker.stages.probe import load_samples
from worker.stages.types import DecodedAudio, Segment, Transcript, Word

logger = logging.getLogger(__name__)

AUTO = "auto"
OnSegment = Callable[[Segment, float], None]
Check = Callable[[], None]

_models: dict[tuple[str, str, str], object] = {}
_models_lock = threading.Lock()


@dataclass(frozen=True)
class TranscribeOptions:
    """Decoding options passed to faster-whisper."""

    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = True
    # Conditioning on the previous window's text makes whisper loop on long audio
    # (https://github.com/SYSTRAN/faster-whisper/issues/506).
    condition_on_previous_text: bool = False


def choose_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    """Pick (device, compute_type): CUDA float16 when a GPU is visible, else CPU int8."""
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
        if compute_type not in ctranslate2.get_supported_compute_types(device):
            compute_type = "float32"
    return device, compute_type


def load_model(name: str, device: str = "auto", compute_type: str = "auto",
               allow_download: bool = False):
    """Return a WhisperModel, loaded once per process for each (model, device, compute type)."""
    device, compute_type = choose_device(device, compute_type)
    path = resolve_asr_model(name, allow_download=allow_download)
    key = (path, device, compute_type)
    with _models_lock:
        if key not in _models:
            from faster_whisper import WhisperModel

            logger.info("loading whisper model %s on %s (%s)", name, device, compute_type)
            _models[key] = WhisperModel(path, device=device, compute_type=compute_type,
                                        cpu_threads=os.cpu_count() or 0)
        return _models[key]


def _clamp(value: float, low: float, high: float) -> float:
    """Limit value to [low, high] as a plain float."""
    return float(min(max(value, low), high))


def _words(raw_words: Iterable | None, duration: float) -> tuple[Word, ...]:
    """Convert faster-whisper words, keeping their times ordered and inside the audio."""
    words, last_end = [], 0.0
    for raw in raw_words or ():
        start = _clamp(raw.start, last_end, duration)
        end = _clamp(raw.end, start, duration)
        if raw.word.strip():
            words.append(Word(start=start, end=end, text=raw.word.strip(),
                              probability=float(raw.probability)))
            last_end = end
    return tuple(words)


def _segment(index: int, raw, duration: float) -> Segment:
    """Convert one faster-whisper segment."""
    start = _clamp(raw.start, 0.0, duration)
    return Segment(index=index, start=start, end=_clamp(raw.end, start, duration),
                   text=raw.text.strip(), words=_words(raw.words, duration),
                   avg_logprob=float(raw.avg_logprob), no_speech_prob=float(raw.no_speech_prob))


class Transcriber:
    """A faster-whisper model (shared per process) with dubfleet's defaults."""

    def __init__(self, model: str = "base", device: str = "auto", compute_type: str = "auto",
                 allow_download: bool = False, options: TranscribeOptions | None = None):
        self.model_name = model
        self.device, self.compute_type = choose_device(device, compute_type)
        self.model = load_model(model, self.device, self.compute_type, allow_download)
        self.options = options or TranscribeOptions()

    @property
    def multilingual(self) -> bool:
        """True if the model recognises more than English."""
        return bool(self.model.model.is_multilingual)

    def detect_language(self, audio: DecodedAudio) -> tuple[str, float]:
        """Return (language, probability) from the first 30 s of speech; 'en' for .en models."""
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(load_samples(audio),
                                                              vad_filter=self.options.vad_filter)
        return language, float(probability)

    def transcribe(self, audio: DecodedAudio, language: str = AUTO,
                   on_segment: OnSegment | None = None, check: Check | None = None) -> Transcript:
        """Transcribe `audio`; `language` is an ISO 639-1 code or 'auto' to detect it."""
        return self._run(audio, self._language(language), "transcribe", on_segment, check)

    def translate_to_english(self, audio: DecodedAudio, language: str = AUTO,
                             on_segment: OnSegment | None = None,
                             check: Check | None = None) -> Transcript:
        """Recognise `audio` straight into English text (whisper task=translate).

        The transcript's `language` is the spoken (source) language; its text is English.
        """
        if not self.multilingual:
            raise UnsupportedJob(f"model '{self.model_name}' is English-only; translating speech "
                                 "to English needs a multilingual model such as 'base'")
        return self._run(audio, self._language(language), "translate", on_segment, check)

    def _language(self, language: str | None) -> str | None:
        """Validate the requested language against the model; None means detect."""
        if not language or language == AUTO:
            return None
        if language not in self.model.supported_languages:
            raise UnsupportedJob(f"model '{self.model_name}' cannot recognise language "
                                 f"'{language}'" + ("" if self.multilingual else
                                                    " (it is English-only)"))
        return language

    def _run(self, audio: DecodedAudio, language: str | None, task: str,
             on_segment: OnSegment | None, check: Check | None) -> Transcript:
        """Run whisper lazily, handing each segment on as soon as it is decoded."""
        if check:
            check()
        opts = self.options
        raw_segments, info = self.model.transcribe(
            load_samples(audio), language=language, task=task, beam_size=opts.beam_size,
            vad_filter=opts.vad_filter, word_timestamps=opts.word_timestamps,
            condition_on_previous_text=opts.condition_on_previous_text)
        segments: list[Segment] = []
        for raw in raw_segments:
            segment = _segment(len(segments), raw, audio.duration)
            if segment.text:
                segments.append(segment)
                if on_segment:
                    on_segment(segment, segment.end)
            if check:
                check()
        logger.info("transcribed %.1f s (%s, %d segments)", audio.duration, info.language,
                    len(segments))
        return Transcript(language=info.language,
                          language_probability=float(info.language_probability),
                          duration=audio.duration, segments=tuple(segments), model=self.model_name)


def transcribe(audio: DecodedAudio, language: str = AUTO, model: str = "base",
               on_segment: OnSegment | None = None, check: Check | None = None,
               device: str = "auto") -> Transcript:
    """Transcribe `audio` with a shared model (see `Transcriber.transcribe`)."""
    return Transcriber(model, device=device).transcribe(audio, language, on_segment, check)


def translate_to_english(audio: DecodedAudio, model: str = "base", language: str = AUTO,
                         on_segment: OnSegment | None = None,
                         check: Check | None = None) -> Transcript:
    """Recognise `audio` into English text (see `Transcriber.translate_to_english`)."""
    return Transcriber(model).translate_to_english(audio, language, on_segment, check)
