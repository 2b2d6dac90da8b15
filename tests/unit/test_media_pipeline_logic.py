"""Unit tests (fakes only) for the media pipeline's glue: options, progress, stage overlap."""
from __future__ import annotations

import threading

import pytest

from shared.protocol import ClaimedJob
from worker.errors import PermanentJobError
from worker.stages.pipeline import MediaOptions, Progress
from worker.stages.streaming import SentenceStream
from worker.stages.types import Segment, TranslatedSegment


def _job(**options) -> ClaimedJob:
    return ClaimedJob(job_id="j", kind="dub", lease_token="t", lease_expires_at=0, attempt=1,
                      max_attempts=3, heartbeat_interval=10, options=options)


def _seg(i: int, text: str) -> Segment:
    return Segment(index=i, start=i * 2.0, end=i * 2.0 + 1.5, text=text)


def test_options_defaults_and_parsing(monkeypatch):
    monkeypatch.delenv("DUBFLEET_ALLOW_DOWNLOADS", raising=False)
    opts = MediaOptions.from_job(_job(keep_original="false", max_speed=1.2,
                                      tts_engines=["espeak"], allow_downloads=True))
    assert opts.keep_original is False and opts.max_speed == 1.2
    assert opts.tts_engines == ("espeak",) and opts.asr_model == "base"
    assert opts.allow_downloads is False, "a job must not be able to switch on hub downloads"
    assert opts.overlap is None and MediaOptions.from_job(_job(overlap="no")).overlap is False


@pytest.mark.parametrize("options", [{"max_speed": 5}, {"keep_original": "maybe"},
                                     {"max_speed": "fast"},
                                     # names, never paths or option-like strings
                                     {"asr_model": "/etc/passwd"}, {"asr_model": "../models/x"},
                                     {"voice": "../../secret.wav"}, {"voice": "--help"},
                                     {"tts_engines": ["espeak", "/bin/sh"]},
                                     {"translation_engine": "a\nb"}])
def test_bad_options_fail_permanently(options):
    with pytest.raises(PermanentJobError, match="bad job options"):
        MediaOptions.from_job(_job(**options))


class _Ctx:
    def __init__(self):
        self.reports: list[tuple[float, float | None]] = []

    def progress(self, percent, message=None, eta_seconds=None):
        self.reports.append((percent, eta_seconds))


def test_progress_is_weighted_and_monotonic():
    ctx = _Ctx()
    progress = Progress(ctx, {"asr": 40.0, "voice": 60.0})
    progress.update("asr", 0.5)
    progress.update("asr", 0.25)  # never goes back
    progress.update("voice", 0.5)
    assert [round(p) for p, _ in ctx.reports] == [20, 20, 50]


def _unit_fn(seen: list, threads: set):
    def process(unit):
        threads.add(threading.current_thread().name)
        seen.append([s.index for s in unit])
        translated = [TranslatedSegment(s.index, s.start, s.end, s.text, s.text.upper())
                      for s in unit]
        return translated, []
    return process


@pytest.mark.parametrize("overlap", [True, False])
def test_sentence_stream_groups_units_in_order(overlap):
    seen, threads = [], set()
    stream = SentenceStream(_unit_fn(seen, threads), overlap=overlap)
    for i, text in enumerate(["Hello there,", "my friend.", "How are", "you?", "Trailing"]):
        stream.push(_seg(i, text))
    result = stream.close()
    assert seen == [[0, 1], [2, 3], [4]]
    assert [t.text for t in result.translated][:2] == ["HELLO THERE,", "MY FRIEND."]
    assert (threads == {"dub-units"}) is overlap


def test_sentence_stream_reraises_unit_errors_in_caller():
    def boom(unit):
        raise RuntimeError("translator crashed")

    stream = SentenceStream(boom, overlap=True)
    stream.push(_seg(0, "One sentence."))
    with pytest.raises(RuntimeError, match="translator crashed"):
        stream.close()
