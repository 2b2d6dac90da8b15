"""Where the speaker really starts each line: the first word's timestamp, refined by energy.

faster-whisper's segment starts (and often its first word's start, which swallows the silence
before it) come 0.2-0.8 s, sometimes seconds, before the speaker opens his mouth. For each line
the 16 kHz source audio around it is cut into 10 ms frames; the noise floor is the quiet around
the line (10th percentile of frame levels, including up to a second before the search window),
the speech level the line's loud frames (90th percentile). Candidates are stretches of at least
30 ms above max(floor + 12 dB, speech - 20 dB) that follow at least 200 ms below it and begin
inside the search window: from 0.5 s before the first word (never before the previous line's
end, so never speech carried over from before it) to the end of the second word (or of the
first). A candidate after the first word's end must follow at least 0.6 s of quiet (overriding
the word timing needs a real silence). Of several, the one after the longest pause wins
(counted up to 0.6 s; ties go to the earliest): a line starts after the silence before it,
while the recogniser's timing may still hold the previous line's last word. Without a
candidate, or without contrast between floor and speech (continuous speech), the first word's
start is used, else the segment start. The onset never goes before the previous line's end nor
past this line's end.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from worker.stages.types import TranslatedSegment, Word

FRAME_S = 0.01
_EPS = 1e-6


@dataclass(frozen=True)
class OnsetOptions:
    """How onsets are searched for."""

    before: float = 0.5  # the search starts this long before the first word (never before the
    #                      previous line's end)
    context: float = 1.0  # audio before the search window that also counts for the noise floor
    rise_db: float = 12.0  # speech frames are at least this far above the noise floor...
    below_speech_db: float = 20.0  # ...and at most this far below the line's speech level
    min_contrast_db: float = 12.0  # speech level - floor below this: no onset can be told apart
    sustain: float = 0.03  # a stretch must stay above the threshold this long
    pause: float = 0.2  # ...and follow at least this much quiet (else it is inside speech);
    long_pause: float = 0.6  # of several, the one after the longest pause (up to this) wins;
    #                          after the first word's end, only one after this much quiet
    level_span: float = 2.0  # seconds after the anchor used for the speech level


@dataclass(frozen=True)
class Onset:
    """A line's start as recognised and as placed, and how the placement was found."""

    index: int
    recognised: float  # the recogniser's segment start
    word: float | None  # the first word's start (None without word timestamps)
    onset: float  # where the dubbed line starts
    method: str  # "energy", "word" or "segment"

    @property
    def shift(self) -> float:
        """Seconds the line moved from the recogniser's start (positive: later)."""
        return self.onset - self.recognised


def frame_levels(audio: np.ndarray, sample_rate: int, frame: float = FRAME_S) -> np.ndarray:
    """RMS level in dBFS of consecutive non-overlapping frames (-120 for digital silence)."""
    hop = max(1, int(round(frame * sample_rate)))
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0)
    frames = np.asarray(audio[:n * hop], dtype=np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return 20.0 * np.log10(np.maximum(rms, 1e-6))


def find_onset(levels: np.ndarray, t0: float, lo: float, anchor: float, level_end: float,
               options: OnsetOptions = OnsetOptions(), frame: float = FRAME_S,
               late: float | None = None) -> float | None:
    """The energy onset in [lo, anchor] of frame levels starting at time t0, or None.

    Frames before `lo` count for the noise floor and tell a stretch that starts at `lo` from one
    carried over from earlier speech (which is not an onset); `level_end` bounds the frames used
    for the speech level. A stretch that starts after `late` (the first word's end) must follow
    a long pause: moving a line past its first word needs a real silence before it.
    """
    if len(levels) == 0:
        return None
    first = max(0, int(np.floor((lo - t0) / frame + 1e-9)))
    last = min(len(levels) - 1, int(np.floor((anchor - t0) / frame + 1e-9)))
    stop = min(len(levels), max(last + 1, int(np.ceil((level_end - t0) / frame))))
    if last < first or stop <= first:
        return None
    floor = float(np.percentile(levels[:stop], 10))
    speech = float(np.percentile(levels[first:stop], 90))
    if speech - floor < options.min_contrast_db:
        return None
    threshold = max(floor + options.rise_db, speech - options.below_speech_db)
    speech_mask = _sustained(levels > threshold, max(1, int(round(options.sustain / frame))))
    quiet = max(1, int(round(options.pause / frame)))
    cap = max(quiet, int(round(options.long_pause / frame)))
    best, best_quiet = None, 0
    for i in range(first, last + 1):
        if not speech_mask[i] or speech_mask[max(0, i - quiet):i].any():
            continue  # not a stretch that starts after a pause (or carried over from before lo)
        hits = np.flatnonzero(speech_mask[max(0, i - cap):i])
        pause = cap if len(hits) == 0 else min(i, cap) - 1 - int(hits[-1])
        if late is not None and t0 + i * frame > late + _EPS and pause < cap:
            continue
        if pause > best_quiet:
            best, best_quiet = i, pause
    return None if best is None else t0 + best * frame


def _sustained(loud: np.ndarray, need: int) -> np.ndarray:
    """The loud frames that belong to runs of at least `need` frames (clicks dropped)."""
    out = np.zeros(len(loud), bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start >= need:
            out[start:stop] = True
    return out


def _anchor(words: Sequence[Word], start: float, end: float) -> float:
    """The latest time the line's speech may start: its second word's end, else the first's."""
    if len(words) >= 2:
        return min(end, max(words[1].end, words[1].start))
    if words:
        return min(end, max(words[0].end, words[0].start))
    return min(end, start + 1.0)


def line_onset(audio_path: Path, seg: TranslatedSegment, words: Sequence[Word], prev_end: float,
               options: OnsetOptions = OnsetOptions(), info=None) -> Onset:
    """Refine one line's start from its first word and the source audio (a mono wav)."""
    guess = words[0].start if words else seg.start
    low = max(0.0, prev_end)
    high = max(low, seg.end)
    guess = min(max(guess, low), high)
    fallback = Onset(seg.index, seg.start, words[0].start if words else None, guess,
                     "word" if words else "segment")
    lo = max(low, guess - options.before)
    anchor = max(guess, _anchor(words, guess, high)) + FRAME_S
    level_end = min(high, anchor + options.level_span)
    info = info or sf.info(str(audio_path))
    sr = info.samplerate
    t0 = max(0.0, lo - options.context)
    a, b = int(t0 * sr), int(np.ceil(max(level_end, anchor + 2 * options.sustain) * sr))
    if b <= a:
        return fallback
    audio, _ = sf.read(str(audio_path), start=a, stop=min(b, info.frames), dtype="float32",
                       always_2d=True)
    levels = frame_levels(audio.mean(axis=1), sr)
    late = max(words[0].end, guess) if words else None
    found = find_onset(levels, a / sr, lo, min(anchor, high), level_end, options, late=late)
    if found is None:
        return fallback
    onset = min(max(found, low), high)
    return Onset(seg.index, seg.start, fallback.word, onset, "energy")


def speech_onsets(timeline: Sequence[TranslatedSegment], words: Mapping[int, Sequence[Word]],
                  audio_path: Path, options: OnsetOptions = OnsetOptions()) -> dict[int, Onset]:
    """Each line's onset (by segment index); `words` maps an index to its recognised words."""
    info = sf.info(str(audio_path))
    onsets, prev_end = {}, 0.0
    for seg in sorted(timeline, key=lambda s: (s.start, s.index)):
        onsets[seg.index] = line_onset(audio_path, seg, tuple(words.get(seg.index, ())), prev_end,
                                       options, info)
        prev_end = max(prev_end, seg.end)
    return onsets


def onset_summary(onsets: Mapping[int, Onset]) -> dict:
    """How many lines each method placed and how far they moved from the recogniser's starts."""
    shifts = [o.shift for o in onsets.values()]
    methods: dict[str, int] = {}
    for o in onsets.values():
        methods[o.method] = methods.get(o.method, 0) + 1
    return {"methods": dict(sorted(methods.items())),
            "mean_shift": round(sum(shifts) / len(shifts), 3) if shifts else 0.0,
            "max_shift": round(max(shifts, key=abs), 3) if shifts else 0.0}
