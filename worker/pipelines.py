"""Registry of job kinds this worker can run: kind -> pipeline, created once and reused.

`echo` is always available. The media kinds come from `worker.stages.pipeline.media_pipeline`:

    def media_pipeline(kind: str) -> Pipeline   # kind in {"transcribe", "subtitle", "dub"}

called once per kind on the first job of that kind (so models load once and stay loaded). If that
module cannot be imported the media kinds are not advertised. It may also define
`available_kinds() -> Iterable[str]` to advertise only the media kinds it can actually run.
`translate` (subtitle and text files) needs only the translation engines, not the audio models.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

from shared.protocol import JobKind
from worker.context import Pipeline
from worker.echo import EchoPipeline
from worker.errors import UnsupportedJob

logger = logging.getLogger(__name__)

MEDIA_KINDS = (JobKind.TRANSCRIBE.value, JobKind.SUBTITLE.value, JobKind.DUB.value)
TEXT_KINDS = (JobKind.TRANSLATE.value,)
Factory = Callable[[], Pipeline]


class PipelineRegistry:
    """Maps job kinds to pipeline factories; builds each pipeline once, on first use."""

    def __init__(self, factories: dict[str, Factory]):
        self._factories = dict(factories)
        self._built: dict[str, Pipeline] = {}
        self._lock = threading.Lock()

    def kinds(self) -> tuple[str, ...]:
        """The kinds this registry can run, in a stable order."""
        return tuple(self._factories)

    def restrict(self, kinds: Iterable[str]) -> "PipelineRegistry":
        """A registry with only `kinds` (each must be available)."""
        return PipelineRegistry({k: self._factories[k] for k in kinds})

    def get(self, kind: str) -> Pipeline:
        """The pipeline for `kind`, built on first use; UnsupportedJob if unknown."""
        with self._lock:
            if kind not in self._built:
                factory = self._factories.get(kind)
                if factory is None:
                    raise UnsupportedJob(f"this worker cannot run {kind!r} jobs")
                logger.info("loading the %s pipeline", kind)
                self._built[kind] = factory()
            return self._built[kind]


def media_factories() -> dict[str, Factory]:
    """Factories for the media kinds, or {} when the media pipeline cannot be imported."""
    try:
        from worker.stages import pipeline as media
    except Exception as exc:  # ImportError, or a broken native dependency
        logger.info("media kinds not available: %s: %s", type(exc).__name__, exc)
        return {}
    kinds = MEDIA_KINDS
    if hasattr(media, "available_kinds"):
        kinds = tuple(k for k in MEDIA_KINDS if k in set(media.available_kinds()))
    factories = {kind: _media_factory(media.media_pipeline, kind) for kind in kinds}
    factories.update(translate_factories())
    return factories


def translate_factories() -> dict[str, Factory]:
    """The `translate` kind when its module imports (translation engines only)."""
    try:
        from worker.stages.subtitle_translate import TranslatePipeline
    except Exception as exc:  # ImportError, or a broken native dependency
        logger.info("translate kind not available: %s: %s", type(exc).__name__, exc)
        return {}
    return {JobKind.TRANSLATE.value: TranslatePipeline}


def _media_factory(build: Callable[[str], Pipeline], kind: str) -> Factory:
    """A zero-argument factory for one media kind."""
    return lambda: build(kind)


def default_registry(kinds: Iterable[str] | None = None) -> PipelineRegistry:
    """Echo plus the media kinds; media is not imported unless a media kind may be used."""
    wanted = None if kinds is None else tuple(kinds)
    factories: dict[str, Factory] = {JobKind.ECHO.value: EchoPipeline}
    if wanted is None or any(k in MEDIA_KINDS for k in wanted):
        factories.update(media_factories())
    elif any(k in TEXT_KINDS for k in wanted):
        factories.update(translate_factories())
    registry = PipelineRegistry(factories)
    if wanted is None:
        return registry
    missing = [k for k in wanted if k not in factories]
    if missing:
        raise UnsupportedJob(f"kinds not available on this worker: {', '.join(missing)} "
                             f"(available: {', '.join(factories)})")
    return registry.restrict(wanted)
