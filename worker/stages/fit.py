"""Timing fit and mix: place each dubbed clip at its line's start and mix it over the original.

Placement is absolute (sample index = round(start × rate)), so there is no cumulative drift.
The start is the line's speech onset when one is given (`worker.stages.onset`: where the speaker
really starts, not the recogniser's early segment start), else the segment start; each clip is
used without the TTS engine's own leading/trailing silence, so the voice itself lands there.
A clip longer than its slot first borrows the silence up to the next line's start (less `gap`),
then is sped up (pitch kept, ffmpeg atempo) only as much as needed, up to `max_speed`; what still
does not fit is cut with a fade and flagged `overflow`. Clips never overlap the next line.
The voice track and the mix are float32 at `FitOptions.sample_rate` (48 kHz by default, the rate
the muxer encodes), and exactly as long as the source.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from worker.stages import audio as A
from worker.stages.types import PlacedSegment, SynthesizedSegment, TranslatedSegment

logger = logging.getLogger(__name__)

_EPS = 1e-6


@dataclass(frozen=True)
class FitOptions:
    """How clips are fitted into their slots."""

    sample_rate: int = 48000
    max_speed: float = 1.35
    min_speed: float = 1.0  # < 1.0 lets short clips be slowed to fill their slot
    gap: float = 0.05  # silence kept before the next segment
    fade: float = 0.03  # fade-out where an overflowing clip is cut
    trim_silence_db: float = -50.0  # leading/trailing TTS silence below this is dropped,
    trim_below_peak_db: float = 40.0  # and so is what lies this far below the clip's loudest


@dataclass(frozen=True)
class MixOptions:
    """How the dubbed voice is mixed with the original audio."""

    keep_original: bool = True
    duck_db: float = -15.0  # original's level under dubbed speech
    ramp: float = 0.2  # seconds the ducking takes to engage / release
    voice_lufs: float = -16.0  # the voice is levelled to this before mixing
    target_lufs: float = -16.0  # integrated loudness of the final mix
    ceiling_db: float = -1.0  # sample peak ceiling


@dataclass(frozen=True)
class SlotPlan:
    """How one clip fits: tempo factor, where it ends, and what had to be done."""

    speed: float
    placed_end: float
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class FitResult:
    """The placed segments and the voice-only track."""

    placed: tuple[PlacedSegment, ...]
    voice: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Track length in seconds."""
        return len(self.voice) / self.sample_rate


def plan_slot(start: float, end: float, limit: float, duration: float,
              options: FitOptions = FitOptions()) -> SlotPlan:
    """Fit a clip of `duration` s into [start, end], allowed to run until `limit` (next segment)."""
    slot = max(0.0, end - start)
    room = max(0.0, limit - start)
    if duration <= min(slot, room) + _EPS:
        slow = options.min_speed < 1.0 and slot > 0
        speed = max(options.min_speed, duration / slot) if slow else 1.0
        return SlotPlan(speed, start + duration / speed)
    borrowed = ("borrowed_gap",) if room > slot + _EPS else ()
    if duration <= room + _EPS:
        return SlotPlan(1.0, start + duration, borrowed)
    speed = min(options.max_speed, duration / room) if room > 0 else options.max_speed
    flags = borrowed + (("sped_up",) if speed > 1.0 + _EPS else ())
    fitted = duration / speed
    if fitted > room + _EPS:
        return SlotPlan(speed, start + room, flags + ("overflow",))
    return SlotPlan(speed, start + fitted, flags)


def slot_limits(timeline: Sequence[TranslatedSegment], duration: float, gap: float) -> list[float]:
    """For each segment (sorted by start) the latest time its clip may run to."""
    limits = []
    for i, seg in enumerate(timeline):
        nxt = timeline[i + 1].start - gap if i + 1 < len(timeline) else duration
        limits.append(min(nxt, duration))
    return limits


def fit_segments(synthesized: Sequence[SynthesizedSegment], timeline: Sequence[TranslatedSegment],
                 duration: float, options: FitOptions = FitOptions(),
                 onsets: Mapping[int, float] | None = None) -> FitResult:
    """Place every synthesized clip on a voice track as long as the source (`duration` s).

    `onsets` maps a segment index to where its line starts (its speech onset); a clip starts
    there instead of at the segment start, and the previous clip may run until it (less `gap`).
    An onset after the segment's end or before the previous segment's end is ignored.
    """
    sr = options.sample_rate
    track = np.zeros(int(round(duration * sr)), np.float32)
    by_index = {s.index: s for s in synthesized}
    placed = []
    for seg, moved, limit in _layout(timeline, duration, options, onsets):
        placed.append(_place(by_index.get(seg.index), moved, limit, track, options, seg.start))
    return FitResult(tuple(placed), track, sr)


def _layout(timeline: Sequence[TranslatedSegment], duration: float, options: FitOptions,
            onsets: Mapping[int, float] | None):
    """(segment, segment moved to its onset, latest end) for each line in time order."""
    ordered = sorted(timeline, key=lambda s: (s.start, s.index))
    starts = [_start(seg, (onsets or {}).get(seg.index), ordered[i - 1].end if i else 0.0)
              for i, seg in enumerate(ordered)]
    shifted = [replace(seg, start=start) for seg, start in zip(ordered, starts)]
    return list(zip(ordered, shifted, slot_limits(shifted, duration, options.gap)))


def rooms(timeline: Sequence[TranslatedSegment], duration: float,
          options: FitOptions = FitOptions(),
          onsets: Mapping[int, float] | None = None) -> dict[int, float]:
    """Seconds each line's clip may last at normal speed (from its onset to the next line)."""
    return {seg.index: max(0.0, limit - moved.start)
            for seg, moved, limit in _layout(timeline, duration, options, onsets)}


def clip_seconds(synth: SynthesizedSegment, options: FitOptions = FitOptions()) -> float:
    """How long a synthesized clip lasts as placed (without the engine's edge silence)."""
    if synth.wav_path is None:
        return 0.0
    clip = _load_clip(synth.wav_path, options.sample_rate, options.trim_silence_db,
                      options.trim_below_peak_db)
    return len(clip) / options.sample_rate


def _start(seg: TranslatedSegment, onset: float | None, prev_end: float) -> float:
    """Where a line's clip starts: its onset if within [previous end, own end), else its start."""
    if onset is None or not min(prev_end, seg.start) <= onset < max(seg.end, seg.start + _EPS):
        return seg.start
    return float(onset)


def _place(synth: SynthesizedSegment | None, seg: TranslatedSegment, limit: float,
           track: np.ndarray, options: FitOptions, slot_start: float) -> PlacedSegment:
    """Fit one clip and add it into the track at `seg.start` (the line's onset).

    `slot_start` is the recogniser's segment start, kept for the report. `synth_duration`
    reports the clip as used: without the TTS engine's leading/trailing silence.
    """
    if synth is None or synth.wav_path is None:
        flags = synth.flags if synth else ("missing",)
        return PlacedSegment(seg.index, slot_start, seg.end, seg.start, seg.start, 0.0, 1.0,
                             synth.engine if synth else "", tuple(flags))
    sr = options.sample_rate
    first = int(round(seg.start * sr))
    if first >= len(track):
        logger.warning("segment %d starts after the end of the source; not placed", seg.index)
        return PlacedSegment(seg.index, slot_start, seg.end, seg.start, seg.start,
                             synth.duration, 1.0, synth.engine,
                             tuple(synth.flags) + ("out_of_range",))
    clip = _load_clip(synth.wav_path, sr, options.trim_silence_db, options.trim_below_peak_db)
    plan = plan_slot(seg.start, seg.end, limit, len(clip) / sr, options)
    fitted = _stretch_to(clip, sr, plan, seg.start, options.fade)
    fitted = fitted[:len(track) - first]
    track[first:first + len(fitted)] += fitted
    flags = tuple(synth.flags) + plan.flags + (() if len(clip) else ("silent_audio",))
    if plan.flags:
        logger.info("segment %d: %s (speed %.2f)", seg.index, ",".join(plan.flags), plan.speed)
    return PlacedSegment(seg.index, slot_start, seg.end, first / sr, (first + len(fitted)) / sr,
                         len(clip) / sr, round(plan.speed, 4), synth.engine, flags)


def _load_clip(path: Path, sample_rate: int, threshold_db: float,
               below_peak_db: float = 40.0) -> np.ndarray:
    """Read a TTS clip as mono at the track rate, without its leading/trailing silence."""
    audio, sr = A.read_wav(path)
    audio = A.resample(audio, sr, sample_rate)
    return A.trim_silence(audio, sample_rate, threshold_db, below_peak_db)


def _stretch_to(clip: np.ndarray, sr: int, plan: SlotPlan, start: float, fade: float) -> np.ndarray:
    """Apply the plan's tempo and cut to its exact length (faded where it overflowed)."""
    out = A.time_stretch(clip, sr, plan.speed)
    n = int(round((plan.placed_end - start) * sr))
    cut = len(out) > n + int(0.01 * sr)
    out = A.fit_length(out, n)
    return A.fade_edges(out, sr, fade_out=fade if cut else 0.005)


def duck_envelope(placed: Sequence[PlacedSegment], n: int, sample_rate: int, duck_db: float,
                  ramp: float) -> np.ndarray:
    """Gain for the original: duck_db under each placed clip, linear ramps of `ramp` s around it."""
    gain = np.ones(n, np.float32)
    low = np.float32(10.0 ** (duck_db / 20.0))
    r = max(1, int(ramp * sample_rate))
    down = np.linspace(1.0, low, r, dtype=np.float32)
    for p in placed:
        a, b = int(round(p.placed_start * sample_rate)), int(round(p.placed_end * sample_rate))
        if b <= a:
            continue
        _apply_min(gain, a - r, down)
        gain[max(0, a):min(n, b)] = np.minimum(gain[max(0, a):min(n, b)], low)
        _apply_min(gain, b, down[::-1])
    return gain


def _apply_min(gain: np.ndarray, at: int, values: np.ndarray) -> None:
    """gain[at:at+len(values)] = min(gain, values), clipped to the array."""
    lo, hi = max(0, at), min(len(gain), at + len(values))
    if hi > lo:
        gain[lo:hi] = np.minimum(gain[lo:hi], values[lo - at:hi - at])


@dataclass(frozen=True)
class MixLevels:
    """The gains a mix applied: the voice's levelling gain and the final loudness passes'.

    A re-dub applies its parent's levels, so every line it did not re-voice sounds identical."""

    voice_gain: float
    mix_gains: tuple[float, ...]


def mix_tracks(voice: np.ndarray, original: np.ndarray | None, sample_rate: int,
               placed: Sequence[PlacedSegment], options: MixOptions = MixOptions(),
               reuse_original: bool = False) -> np.ndarray:
    """Mix the voice over the ducked original (or alone), normalise loudness, limit peaks.

    The result has the voice's length and the original's channel count (mono without one).
    Works in place on one copy of the original (on the original itself with reuse_original) to
    keep long inputs within memory.
    """
    return mix_with_levels(voice, original, sample_rate, placed, options, reuse_original)[0]


def mix_with_levels(voice: np.ndarray, original: np.ndarray | None, sample_rate: int,
                    placed: Sequence[PlacedSegment], options: MixOptions = MixOptions(),
                    reuse_original: bool = False,
                    levels: MixLevels | None = None) -> tuple[np.ndarray, MixLevels]:
    """`mix_tracks`, also returning the gains used; with `levels`, those gains are applied
    instead of being measured."""
    n = len(voice)
    voice_gain = (levels.voice_gain if levels is not None
                  else A.loudness_gain(voice, sample_rate, options.voice_lufs))
    voice = (voice * np.float32(voice_gain)).astype(np.float32, copy=False)
    if options.keep_original and original is not None:
        mix = A.fit_length(original, n)
        mix = mix if reuse_original and mix.dtype == np.float32 else np.array(mix, dtype=np.float32)
        gain = duck_envelope(placed, n, sample_rate, options.duck_db, options.ramp)
        mix *= gain[:, None] if mix.ndim == 2 else gain
        del gain
        mix += voice[:, None] if mix.ndim == 2 else voice
    else:
        mix = voice
    gains = []
    for step in range(2):  # limiting lowers loudness a little: one more pass corrects for it
        gain = (levels.mix_gains[step] if levels is not None and len(levels.mix_gains) > step
                else A.loudness_gain(mix, sample_rate, options.target_lufs))
        gains.append(float(gain))
        mix *= np.float32(gain)
        mix = A.limit_peaks(mix, sample_rate, options.ceiling_db, in_place=True)
    return mix, MixLevels(float(voice_gain), tuple(gains))


def mix_dub(fit: FitResult, source_media: Path | None, out_wav: Path,
            options: MixOptions = MixOptions()) -> Path:
    """Decode the source's audio (if kept), mix it with the fitted voice and write a wav."""
    return mix_dub_levels(fit, source_media, out_wav, options)[0]


def mix_dub_levels(fit: FitResult, source_media: Path | None, out_wav: Path,
                   options: MixOptions = MixOptions(),
                   levels: MixLevels | None = None) -> tuple[Path, MixLevels]:
    """`mix_dub`, also returning the gains used (with `levels`: those gains, re-applied)."""
    original = None
    if options.keep_original and source_media is not None and A.has_audio(source_media):
        original = A.load_audio(source_media, fit.sample_rate)
    mixed, used = mix_with_levels(fit.voice, original, fit.sample_rate, fit.placed, options,
                                  reuse_original=True, levels=levels)
    return A.write_wav(out_wav, mixed, fit.sample_rate), used


def fit_summary(placed: Sequence[PlacedSegment]) -> dict:
    """Counts and extremes for the job's timing report."""
    flags = Counter(flag for p in placed for flag in p.flags)
    speeds = [p.speed for p in placed if p.synth_duration > 0]
    return {
        "segments": len(placed),
        "voiced": len(speeds),
        "flags": dict(sorted(flags.items())),
        "max_speed": max(speeds, default=1.0),
        "mean_speed": round(sum(speeds) / len(speeds), 4) if speeds else 1.0,
    }
