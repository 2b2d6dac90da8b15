"""Per-job media options: the job's `options` object, validated (a bad value fails the job)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from shared.glossary import parse_glossary
from worker.errors import PermanentJobError

__all__ = ["MediaOptions"]


@dataclass(frozen=True)
class MediaOptions:
    """Per-job options (from the job's `options` object and `asr_model`).

    `allow_downloads` is the worker's own setting (`worker --allow-downloads`), never the job's.
    """

    asr_model: str = "base"
    translation_engine: str | None = None
    tts_engines: tuple[str, ...] | None = None
    voice: str | None = None
    keep_original: bool = True
    max_speed: float = 1.35
    overlap: bool | None = None  # None: decide per machine (see overlap_pays)
    allow_downloads: bool = False
    glossary: dict = field(default_factory=dict)  # {"term": "translation"} (shared.glossary)
    shorten: bool = True  # ask the engine for a shorter line before speeding a clip up
    summary: str = "auto"  # off | auto | extractive | abstractive (worker.stages.summary)

    @classmethod
    def from_job(cls, job) -> "MediaOptions":
        """Validate the job's options; a bad value fails the job permanently with the reason."""
        raw = dict(job.options or {})
        try:
            engines = raw.get("tts_engines")
            return cls(
                asr_model=_label(job.asr_model or raw.get("asr_model") or "base", "asr_model"),
                translation_engine=_opt_label(raw.get("translation_engine"), "translation_engine"),
                tts_engines=tuple(_label(e, "tts_engines") for e in engines) if engines else None,
                voice=_opt_label(raw.get("voice"), "voice"),
                keep_original=_bool(raw.get("keep_original", True)),
                max_speed=_speed(raw.get("max_speed", 1.35)),
                overlap=None if raw.get("overlap") in (None, "auto") else _bool(raw["overlap"]),
                glossary=parse_glossary(raw.get("glossary")),
                shorten=_bool(raw.get("shorten", True)),
                summary=_summary_mode(raw.get("summary")),
                allow_downloads=_bool(os.environ.get("DUBFLEET_ALLOW_DOWNLOADS", "0")))
        except (TypeError, ValueError) as exc:
            raise PermanentJobError(f"bad job options: {exc}") from exc


# Model, engine and voice names: plain labels, never paths (a job must not point a worker at
# its local files) nor anything an engine's command line could take for an option.
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def _label(value, name: str) -> str:
    """A name option: a short label without path separators."""
    text = str(value)
    if not _LABEL_RE.fullmatch(text) or ".." in text:
        raise ValueError(f"{name} must be a plain name like 'base' or 'es-x', not {text[:40]!r}")
    return text


def _opt_label(value, name: str) -> str | None:
    return None if value in (None, "") else _label(value, name)


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _summary_mode(value) -> str:
    """`summary`: true/absent (auto), false (off), or "extractive" / "abstractive"."""
    if value is None or value == "auto":
        return "auto"
    if value in ("extractive", "abstractive", "off"):
        return value
    return "auto" if _bool(value) else "off"


def _speed(value) -> float:
    speed = float(value)
    if not 1.0 <= speed <= 2.0:
        raise ValueError(f"max_speed must be between 1.0 and 2.0, got {speed}")
    return speed
