"""Timing-fit decisions, ducking envelope and the loudness meter, on synthetic numbers."""
from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")
pytest.importorskip("soundfile")

from worker.stages.audio import integrated_loudness, limit_peaks, normalize_loudness  # noqa: E402
from worker.stages.fit import (  # noqa: E402
    FitOptions,
    duck_envelope,
    fit_summary,
    plan_slot,
    slot_limits,
)
from worker.stages.types import PlacedSegment, TranslatedSegment  # noqa: E402

OPTS = FitOptions()


def test_clip_that_fits_is_left_alone():
    plan = plan_slot(10.0, 12.0, 14.0, 1.5, OPTS)
    assert plan.speed == 1.0 and plan.placed_end == pytest.approx(11.5) and plan.flags == ()


def test_longer_clip_borrows_the_following_silence_before_speeding_up():
    plan = plan_slot(10.0, 12.0, 14.0, 3.0, OPTS)
    assert plan.speed == 1.0 and plan.placed_end == pytest.approx(13.0)
    assert plan.flags == ("borrowed_gap",)


def test_speed_up_only_as_much_as_needed():
    plan = plan_slot(10.0, 12.0, 13.0, 3.6, OPTS)
    assert plan.speed == pytest.approx(1.2) and plan.placed_end == pytest.approx(13.0)
    assert plan.flags == ("borrowed_gap", "sped_up")


def test_speed_is_capped_and_the_rest_overflows():
    plan = plan_slot(10.0, 12.0, 12.0, 4.0, OPTS)
    assert plan.speed == OPTS.max_speed and plan.placed_end == pytest.approx(12.0)
    assert plan.flags == ("sped_up", "overflow")


def test_custom_cap():
    plan = plan_slot(0.0, 1.0, 1.0, 1.8, FitOptions(max_speed=2.0))
    assert plan.speed == pytest.approx(1.8) and "overflow" not in plan.flags


def test_never_runs_into_the_next_segment_even_inside_its_own_slot():
    # source segments that overlap: the next segment's start wins over this slot's end
    plan = plan_slot(10.0, 13.0, 11.95, 2.5, OPTS)
    assert plan.placed_end <= 11.95 + 1e-9 and plan.speed > 1.0


def test_optional_slow_down_of_short_clips():
    plan = plan_slot(0.0, 2.0, 3.0, 1.5, FitOptions(min_speed=0.9))
    assert plan.speed == pytest.approx(0.9) and plan.placed_end == pytest.approx(1.5 / 0.9)
    assert plan_slot(0.0, 2.0, 3.0, 1.9, FitOptions(min_speed=0.9)).speed == pytest.approx(0.95)


def test_slot_limits_leave_a_gap_before_the_next_segment_and_stop_at_the_end():
    timeline = [TranslatedSegment(0, 0.0, 1.0, "", "a"), TranslatedSegment(1, 2.0, 3.0, "", "b")]
    assert slot_limits(timeline, 5.0, 0.05) == [pytest.approx(1.95), 5.0]
    assert slot_limits(timeline, 2.5, 0.05)[-1] == 2.5


def _placed(start: float, end: float, flags=()) -> PlacedSegment:
    return PlacedSegment(0, start, end, start, end, end - start, 1.0, "espeak", flags)


def test_duck_envelope_ramps_down_before_speech_and_back_up_after():
    sr = 1000
    gain = duck_envelope([_placed(1.0, 2.0)], 4000, sr, duck_db=-20.0, ramp=0.2)
    assert gain[0] == 1.0 and gain[-1] == 1.0
    assert np.allclose(gain[1000:2000], 0.1)
    assert 0.1 < gain[900] < 1.0 and 0.1 < gain[2100] < 1.0
    assert gain[790] == 1.0 and gain[2210] == 1.0
    assert np.all(np.diff(gain[700:1000]) <= 0) and np.all(np.diff(gain[2000:2300]) >= 0)


def test_fit_summary_counts_flags():
    placed = [_placed(0, 1, ("sped_up",)), _placed(1, 2, ("sped_up", "overflow")),
              PlacedSegment(2, 3, 4, 3, 3, 0.0, 1.0, "", ("tts_failed",))]
    summary = fit_summary(placed)
    assert summary["flags"] == {"overflow": 1, "sped_up": 2, "tts_failed": 1}
    assert summary["segments"] == 3 and summary["voiced"] == 2


def test_loudness_of_a_reference_sine():
    # BS.1770: a full-scale 997 Hz sine in one channel reads about -3.0 LUFS
    sr = 48000
    t = np.arange(sr * 5) / sr
    tone = np.sin(2 * np.pi * 997 * t).astype(np.float32)
    assert integrated_loudness(tone, sr) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(0.1 * tone, sr) == pytest.approx(-23.01, abs=0.05)
    stereo = np.stack([tone, tone], axis=1) * 0.1
    assert integrated_loudness(stereo, sr) == pytest.approx(-20.0, abs=0.05)


def test_silence_is_gated_out_and_normalisation_hits_the_target():
    sr = 16000
    rng = np.random.default_rng(1)
    noise = 0.05 * rng.standard_normal(sr * 4)
    audio = np.concatenate([np.zeros(sr * 3), noise]).astype(np.float32)
    loud = integrated_loudness(audio, sr)
    assert loud == pytest.approx(integrated_loudness(audio[sr * 3:], sr), abs=0.2)
    louder = normalize_loudness(audio, sr, -16.0)
    assert integrated_loudness(louder, sr) == pytest.approx(-16.0, abs=0.05)
    assert integrated_loudness(np.zeros(sr, np.float32), sr) == float("-inf")


def test_limiter_keeps_peaks_under_the_ceiling():
    sr = 16000
    audio = (0.5 * np.sin(2 * np.pi * 220 * np.arange(sr * 2) / sr)).astype(np.float32)
    audio[5000] = 3.0
    out = limit_peaks(audio, sr, ceiling_db=-1.0)
    assert np.abs(out).max() <= 10 ** (-1 / 20) + 1e-6
    far = np.abs(np.arange(len(out)) - 5000) > sr * 0.01  # away from the spike nothing changes
    assert np.array_equal(out[far], audio[far])
    assert np.array_equal(limit_peaks(audio[:4000], sr), audio[:4000])  # nothing over: untouched
