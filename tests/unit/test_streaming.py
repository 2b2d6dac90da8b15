"""SentenceStream with separate translate and voice steps: two threads, results in order."""
from __future__ import annotations

import threading
import time

import pytest

from worker.stages.streaming import SentenceStream
from worker.stages.types import Segment, SynthesizedSegment, TranslatedSegment


def _segments(n: int) -> list[Segment]:
    return [Segment(i, float(i), i + 0.9, f"Sentence {i}.") for i in range(n)]


class Steps:
    """Translate and voice steps that record which thread ran them and when."""

    def __init__(self, fail_voice_at: int | None = None):
        self.fail_voice_at = fail_voice_at
        self.threads: dict[str, set[str]] = {"translate": set(), "voice": set()}
        self.concurrent = False
        self._voicing = threading.Event()

    def translate(self, unit):
        self.threads["translate"].add(threading.current_thread().name)
        time.sleep(0.02)
        if self._voicing.is_set():
            self.concurrent = True
        return [TranslatedSegment(s.index, s.start, s.end, s.text, s.text.upper()) for s in unit]

    def voice(self, translated):
        self.threads["voice"].add(threading.current_thread().name)
        if self.fail_voice_at is not None and translated[0].index == self.fail_voice_at:
            raise RuntimeError("voice failed")
        self._voicing.set()
        time.sleep(0.02)
        self._voicing.clear()
        return [SynthesizedSegment(s.index, None, 0.5, "fake") for s in translated]


@pytest.mark.parametrize("overlap", [True, False])
def test_units_are_translated_then_voiced_in_order(overlap):
    steps = Steps()
    stream = SentenceStream(steps.translate, overlap=overlap, voice=steps.voice)
    for segment in _segments(12):
        stream.push(segment)
    result = stream.close()
    assert [s.index for s in result.translated] == list(range(12))
    assert [s.index for s in result.synthesized] == list(range(12))
    assert all(s.text.startswith("SENTENCE") for s in result.translated)
    if overlap:  # two different background threads, working at the same time
        assert steps.threads["translate"] == {"dub-units"}
        assert steps.threads["voice"] == {"dub-voice"}
        assert steps.concurrent
    else:
        assert steps.threads["translate"] == steps.threads["voice"] == {
            threading.current_thread().name}


def test_a_voice_failure_is_raised_in_the_callers_thread():
    steps = Steps(fail_voice_at=3)
    stream = SentenceStream(steps.translate, overlap=True, voice=steps.voice)
    with pytest.raises(RuntimeError, match="voice failed"):
        for segment in _segments(8):
            stream.push(segment)
        stream.close()
