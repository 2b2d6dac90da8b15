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
        self.spans: dict[str, list[tuple[float, float]]] = {"translate": [], "voice": []}

    @property
    def concurrent(self) -> bool:
        """Whether some translate call and some voice call ran at the same time (their spans
        overlap: robust to when the scheduler lets either thread look)."""
        return any(t0 < v1 and v0 < t1 for t0, t1 in self.spans["translate"] for v0, v1 in self.spans["voice"])

    def translate(self, unit):
        self.threads["translate"].add(threading.current_thread().name)
        started = time.monotonic()
        time.sleep(0.02)
        self.spans["translate"].append((started, time.monotonic()))
        return [TranslatedSegment(s.index, s.start, s.end, s.text, s.text.upper()) for s in unit]

    def voice(self, translated):
        self.threads["voice"].add(threading.current_thread().name)
        if self.fail_voice_at is not None and translated[0].index == self.fail_voice_at:
            raise RuntimeError("voice failed")
        started = time.monotonic()
        time.sleep(0.02)
        self.spans["voice"].append((started, time.monotonic()))
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
        assert not steps.concurrent  # one thread: the spans follow each other


def test_a_voice_failure_is_raised_in_the_callers_thread():
    steps = Steps(fail_voice_at=3)
    stream = SentenceStream(steps.translate, overlap=True, voice=steps.voice)
    with pytest.raises(RuntimeError, match="voice failed"):
        for segment in _segments(8):
            stream.push(segment)
        stream.close()
