"""Stage overlap: translate and voice finished sentences while recognition of later ones goes on.

Recognition yields segments one by one; `SentenceStream` collects them into sentence units
(a unit ends where a segment ends a sentence) and hands each complete unit to a background
thread that translates and synthesizes it. Without overlap the same unit function runs after
recognition, so both modes share one code path.
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
    """Buffers recognised segments into sentence units and processes them (optionally in a thread)."""

    def __init__(self, process_unit: UnitFn, overlap: bool = True):
        self.process_unit = process_unit
        self.overlap = overlap
        self.result = StreamResult()
        self._pending: list[Segment] = []
        self._units: list[list[Segment]] = []
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        if overlap:
            self._thread = threading.Thread(target=self._consume, name="dub-units", daemon=True)
            self._thread.start()

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
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
        else:
            for unit in self._units:
                self.result.add(*self.process_unit(unit))
        self.raise_if_failed()
        return self.result

    def abandon(self) -> None:
        """Stop the background thread without waiting for queued units."""
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join(timeout=30)

    def raise_if_failed(self) -> None:
        """Re-raise an exception from the background thread in the caller's thread."""
        if self._error is not None:
            raise self._error

    def _emit(self) -> None:
        unit, self._pending = self._pending, []
        if self._thread is not None:
            self._queue.put(unit)
        else:
            self._units.append(unit)

    def _consume(self) -> None:
        while True:
            unit = self._queue.get()
            if unit is _DONE:
                return
            if self._error is not None or self._stopped:
                continue  # drain after a failure; the caller re-raises
            try:
                self.result.add(*self.process_unit(unit))
            except BaseException as exc:  # re-raised in the job's thread by raise_if_failed()
                logger.debug("unit failed: %r", exc)
                self._error = exc
