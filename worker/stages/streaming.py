"""Stage overlap: translate and voice finished sentences while recognition of later ones goes on.

Recognition yields segments one by one; `SentenceStream` collects them into sentence units
(a unit ends where a segment ends a sentence) and hands each complete unit to a background
thread that translates it; with a separate `voice` step, a second thread voices translated units
meanwhile (translation of the next sentence and synthesis of this one run on different cores).
Without overlap the same functions run after recognition, so both modes share one code path.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from worker.stages.translate import ends_sentence
from worker.stages.types import Segment, SynthesizedSegment, TranslatedSegment

logger = logging.getLogger(__name__)

UnitFn = Callable[[Sequence[Segment]], tuple[list[TranslatedSegment], list[SynthesizedSegment]]]
TranslateFn = Callable[[Sequence[Segment]], list[TranslatedSegment]]
VoiceFn = Callable[[list[TranslatedSegment]], list[SynthesizedSegment]]
MAX_UNIT_SEGMENTS = 6  # a run-on "sentence" is cut so voicing never waits on it for long

_DONE = object()


@dataclass
class StreamResult:
    """Everything the units produced, in source order."""

    translated: list[TranslatedSegment] = field(default_factory=list)
    synthesized: list[SynthesizedSegment] = field(default_factory=list)

    def add(self, translated: list[TranslatedSegment], synthesized: list[SynthesizedSegment]) -> None:
        """Append one unit's results."""
        self.translated.extend(translated)
        self.synthesized.extend(synthesized)


class SentenceStream:
    """Buffers recognised segments into sentence units and processes them (optionally in threads).

    `process_unit` either does everything for a unit (returns translated and synthesized lines),
    or, when `voice` is given, only translates (returns the translated lines) and `voice` voices
    them: with overlap the two steps run in two threads joined by a queue.
    """

    def __init__(self, process_unit, overlap: bool = True, voice: VoiceFn | None = None):
        self.process_unit = process_unit
        self.voice = voice
        self.overlap = overlap
        self.result = StreamResult()
        self._pending: list[Segment] = []
        self._units: list[list[Segment]] = []
        self._queue: queue.Queue = queue.Queue()
        self._voice_queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._stopped = False
        self._threads: list[threading.Thread] = []
        if overlap:
            self._start(self._consume, "dub-units")
            if voice is not None:
                self._start(self._consume_voice, "dub-voice")

    def _start(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def push(self, segment: Segment) -> None:
        """Add a recognised segment; a completed sentence unit is queued at once."""
        self.raise_if_failed()
        self._pending.append(segment)
        if ends_sentence(segment.text) or len(self._pending) >= MAX_UNIT_SEGMENTS:
            self._emit()

    def close(self) -> StreamResult:
        """Flush the last unit, wait for all units and return the results (re-raising errors)."""
        if self._pending:
            self._emit()
        if self._threads:
            self._queue.put(_DONE)
            for thread in self._threads:
                thread.join()
        else:
            for unit in self._units:
                self.result.add(*self._whole(unit))
        self.raise_if_failed()
        return self.result

    def abandon(self) -> None:
        """Stop the background threads without waiting for queued units."""
        self._stopped = True
        if self._threads:
            self._queue.put(_DONE)
            self._voice_queue.put(_DONE)
            for thread in self._threads:
                thread.join(timeout=30)

    def raise_if_failed(self) -> None:
        """Re-raise an exception from a background thread in the caller's thread."""
        if self._error is not None:
            raise self._error

    def _whole(self, unit: Sequence[Segment]):
        """Translate and voice one unit in this thread."""
        if self.voice is None:
            return self.process_unit(unit)
        translated = self.process_unit(unit)
        return translated, self.voice(translated)

    def _emit(self) -> None:
        unit, self._pending = self._pending, []
        if self._threads:
            self._queue.put(unit)
        else:
            self._units.append(unit)

    def _failed(self, exc: BaseException) -> None:
        logger.debug("unit failed: %r", exc)  # re-raised in the job's thread by raise_if_failed()
        self._error = exc

    def _consume(self) -> None:
        """Translate (and, without a voice thread, voice) queued units in order."""
        while True:
            unit = self._queue.get()
            if unit is _DONE:
                if self.voice is not None:
                    self._voice_queue.put(_DONE)
                return
            if self._error is not None or self._stopped:
                continue  # drain after a failure; the caller re-raises
            try:
                if self.voice is None:
                    self.result.add(*self.process_unit(unit))
                else:
                    self._voice_queue.put(self.process_unit(unit))
            except BaseException as exc:
                self._failed(exc)

    def _consume_voice(self) -> None:
        """Voice translated units in order, while the next ones are being translated."""
        while True:
            translated = self._voice_queue.get()
            if translated is _DONE:
                return
            if self._error is not None or self._stopped:
                continue
            try:
                self.result.add(translated, self.voice(translated))
            except BaseException as exc:
                self._failed(exc)
