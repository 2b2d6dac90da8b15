"""Fit by rewriting: a dubbed line too long for its slot gets a shorter translation first.

After voicing, each clip is compared with the room it has (from its onset to the next line, as
the fit stage will place it). A clip that would need more than `TRIGGER_SPEED` speed-up is sent
back to the translation engine with a syllable budget: the room times the voice's speaking rate
measured on that very clip (syllables per second). The shorter line is re-voiced and kept if its
clip is shorter; the fit stage then speeds up only what is still long and cuts only as a last
resort. Lines that were shortened say so in dub_report.json (`shortened`).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from worker.stages.fit import FitOptions, clip_seconds, rooms
from worker.stages.mt_guard import problem
from worker.stages.types import SynthesizedSegment, TranslatedSegment

logger = logging.getLogger(__name__)

TRIGGER_SPEED = 1.08  # shorten a line whose clip would need more speed-up than this
MIN_ROOM = 0.4  # seconds; below this a rewrite cannot help
_VOWEL_GROUP = re.compile(r"[aeiouyáéíóúüàèìòùâêîôûäëïöãõœæ]+")
_WORD = re.compile(r"[^\W\d_]+|\d+")

Voice = Callable[[list[TranslatedSegment]], list[SynthesizedSegment]]


def syllables(text: str) -> int:
    """Approximate syllable count (vowel groups per word; a number counts two per digit)."""
    count = 0
    for word in _WORD.findall(text.lower()):
        count += 2 * len(word) if word.isdigit() else max(1, len(_VOWEL_GROUP.findall(word)))
    return count


@dataclass(frozen=True)
class Candidate:
    """A line whose clip is too long for its room."""

    segment: TranslatedSegment
    clip: float
    room: float
    budget: int


def too_long(timeline: Sequence[TranslatedSegment], synthesized: Sequence[SynthesizedSegment],
             duration: float, options: FitOptions,
             onsets: Mapping[int, float] | None = None) -> list[Candidate]:
    """Lines whose clip needs more than TRIGGER_SPEED, with a syllable budget for each."""
    room_of = rooms(timeline, duration, options, onsets)
    synth = {s.index: s for s in synthesized}
    out = []
    for seg in timeline:
        s, room = synth.get(seg.index), room_of.get(seg.index, 0.0)
        if s is None or s.wav_path is None or room < MIN_ROOM:
            continue
        clip = clip_seconds(s, options)
        count = syllables(seg.text)
        if clip <= room * TRIGGER_SPEED or clip <= 0 or count < 3:
            continue
        budget = max(2, math.floor(room * count / clip))
        if budget < count:
            out.append(Candidate(seg, clip, room, budget))
    return out


def shorten_to_fit(translator, timeline: Sequence[TranslatedSegment],
                   synthesized: Sequence[SynthesizedSegment], duration: float,
                   options: FitOptions, onsets: Mapping[int, float] | None, source: str,
                   target: str, voice: Voice) -> tuple[list[TranslatedSegment],
                                                      list[SynthesizedSegment], int]:
    """Rewrite, re-voice and swap in the lines that are too long; returns the count swapped."""
    candidates = too_long(timeline, synthesized, duration, options, onsets)
    if not candidates:
        return list(timeline), list(synthesized), 0
    shorter = translator.shorten([(c.segment.source_text, c.segment.text, c.budget)
                                  for c in candidates], source, target)
    if shorter is None:
        return list(timeline), list(synthesized), 0
    rewritten = [_rewritten(c, text, source, target) for c, text in zip(candidates, shorter)]
    rewritten = [(c, seg) for c, seg in zip(candidates, rewritten) if seg is not None]
    voiced = voice([seg for _, seg in rewritten]) if rewritten else []
    new_text, new_synth = {}, {}
    for (cand, seg), clip in zip(rewritten, voiced):
        if clip.wav_path is not None and clip_seconds(clip, options) < cand.clip:
            new_text[seg.index], new_synth[seg.index] = seg, clip
    logger.info("shortened %d of %d over-long lines", len(new_text), len(candidates))
    return ([new_text.get(s.index, s) for s in timeline],
            [new_synth.get(s.index, s) for s in synthesized], len(new_text))


def _rewritten(cand: Candidate, text: str, source: str, target: str) -> TranslatedSegment | None:
    """The shortened segment, or None if the rewrite is no shorter or fails the output checks."""
    old, new = syllables(cand.segment.text), syllables(text)
    if not text or new >= old:
        return None
    why = problem(cand.segment.source_text, text, source, target)
    if why not in (None, "too_short", "added_sentence"):
        logger.info("segment %d: shortened line rejected (%s)", cand.segment.index, why)
        return None
    note = f"shortened: {old}→{new} syllables for {cand.room:.2f} s"
    prior = cand.segment.note
    return replace(cand.segment, text=text, note=f"{prior}; {note}" if prior else note)
