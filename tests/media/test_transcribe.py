"""Speech recognition on real human speech (LibriVox) with the offline whisper models."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest

from worker.errors import JobCancelled, UnsupportedJob
from worker.stages.probe import decode_audio
from worker.stages.transcribe import Transcriber, transcribe, translate_to_english
from worker.stages.types import DecodedAudio, Segment, Transcript

pytestmark = pytest.mark.media

_SPELLINGS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; hyphenated words split; common abbreviations spelt."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return [_SPELLINGS.get(w, w) for w in words]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Total word errors over total reference words for (reference, hypothesis) pairs."""
    errors = sum(edit_distance(normalize(ref), normalize(hyp)) for ref, hyp in pairs)
    return errors / sum(len(normalize(ref)) for ref, _ in pairs)


def test_wer_helper():
    assert word_error_rate([("Mister Smith, ill-disposed", "mr smith ill disposed")]) == 0
    assert word_error_rate([("a b c d", "a x c")]) == 0.5


@dataclass
class Run:
    """One model's pass over the LibriVox clips."""

    model: str
    clips: list[tuple[DecodedAudio, str]]
    transcripts: list[Transcript]
    progress: list[list[tuple[Segment, float]]]
    seconds: float

    @property
    def real_time_factor(self) -> float:
        return self.seconds / sum(audio.duration for audio, _ in self.clips)


@pytest.fixture(scope="module")
def decoded_clips(librivox_clips, tmp_path_factory) -> list[tuple[DecodedAudio, str]]:
    out = tmp_path_factory.mktemp("librivox16k")
    return [(decode_audio(path, out / path.name), ref) for path, ref in librivox_clips]


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def run(request, decoded_clips) -> Run:
    transcriber = Transcriber(request.param)
    transcripts, progress = [], []
    started = time.perf_counter()
    for audio, _ in decoded_clips:
        seen: list[tuple[Segment, float]] = []
        transcripts.append(transcriber.transcribe(
            audio, "en", on_segment=lambda seg, done, seen=seen: seen.append((seg, done))))
        progress.append(seen)
    return Run(request.param, decoded_clips, transcripts, progress,
               time.perf_counter() - started)


def test_word_error_rate(run, record_property):
    pairs = [(ref, " ".join(s.text for s in t.segments))
             for (_, ref), t in zip(run.clips, run.transcripts)]
    wer = word_error_rate(pairs)
    record_property(f"wer_{run.model}", round(wer, 4))
    record_property(f"rtf_{run.model}", round(run.real_time_factor, 3))
    print(f"{run.model}: WER {wer:.3f}, real-time factor {run.real_time_factor:.3f}")
    assert wer <= 0.10
    assert all(t.model == run.model and t.language == "en" for t in run.transcripts)


def test_word_timestamps_monotonic_and_inside_clip(run):
    for (audio, _), transcript in zip(run.clips, run.transcripts):
        words = [w for s in transcript.segments for w in s.words]
        assert words, "word timestamps were requested"
        assert all(0.0 <= w.start <= w.end <= audio.duration for w in words)
        assert all(a.end <= b.start for a, b in zip(words, words[1:]))
        for segment in transcript.segments:
            assert 0.0 <= segment.start <= segment.end <= audio.duration


def test_segments_streamed_with_progress(run):
    for transcript, seen in zip(run.transcripts, run.progress):
        assert [seg for seg, _ in seen] == list(transcript.segments)
        done = [seconds for _, seconds in seen]
        assert done == sorted(done) and done[-1] <= transcript.duration
        assert [s.index for s in transcript.segments] == list(range(len(transcript.segments)))


def test_model_loaded_once_per_process():
    assert Transcriber("tiny.en").model is Transcriber("tiny.en").model
    assert Transcriber("base").model is Transcriber("base").model


def test_detects_english(decoded_clips):
    language, probability = Transcriber("base").detect_language(decoded_clips[1][0])
    assert language == "en" and probability > 0.8
    assert Transcriber("tiny.en").detect_language(decoded_clips[1][0]) == ("en", 1.0)


@pytest.fixture(scope="module")
def spanish(spanish_speech, tmp_path_factory) -> DecodedAudio:
    return decode_audio(spanish_speech, tmp_path_factory.mktemp("es") / "es16k.wav")


def test_detects_spanish(spanish):
    assert Transcriber("base").detect_language(spanish)[0] == "es"
    transcript = transcribe(spanish, "auto", model="base")
    assert transcript.language == "es"
    text = " ".join(s.text for s in transcript.segments).lower()
    assert "casa" in text and "mercado" in text


def test_translate_spanish_speech_to_english(spanish):
    transcript = translate_to_english(spanish, model="base")
    text = " ".join(s.text for s in transcript.segments).lower()
    assert transcript.language == "es"
    assert any(word in text for word in ("house", "market", "garden", "morning"))


def test_silence_gives_empty_transcript(media_dir, tmp_path):
    audio = decode_audio(media_dir / "silence.wav", tmp_path / "silence16k.wav")
    for model, language in (("base", "auto"), ("tiny.en", "en")):
        transcript = transcribe(audio, language, model=model)
        assert transcript.segments == () and transcript.duration == pytest.approx(3.0)


def test_check_is_called_between_segments(decoded_clips):
    calls = []
    transcript = transcribe(decoded_clips[0][0], "en", model="tiny.en",
                            check=lambda: calls.append(1))
    assert len(calls) >= len(transcript.segments) + 1


def test_check_can_cancel(decoded_clips):
    def cancel():
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        transcribe(decoded_clips[0][0], "en", model="tiny.en", check=cancel)


def test_english_only_model_rejects_other_languages(decoded_clips):
    with pytest.raises(UnsupportedJob, match="English-only"):
        transcribe(decoded_clips[0][0], "es", model="tiny.en")
    with pytest.raises(UnsupportedJob, match="English-only"):
        translate_to_english(decoded_clips[0][0], model="tiny.en")


def test_model_not_installed_offline(decoded_clips):
    with pytest.raises(UnsupportedJob, match=r"model 'large-v3' is not installed offline; run "
                                             r"`worker models install large-v3`"):
        transcribe(decoded_clips[0][0], "en", model="large-v3")
