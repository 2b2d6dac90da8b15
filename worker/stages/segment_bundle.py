"""`dub_segments.tar`: what a dub keeps so that a re-dub can re-voice only the lines that changed.

An uncompressed tar with `segments.json` first (the manifest, below) and one FLAC clip per voiced
line, `clips/<index:05d>.flac`: the TTS engine's clip as it came out (16-bit, its own rate),
before fitting, so the re-dub fits it again exactly as the dub did. The manifest holds, per line,
its index, slot, onset (placement), texts, translation engine and note, TTS engine, flags, and for
the whole dub: languages, duration, the TTS engines and voice, the fit/mix options and the mix's
gains (`levels`: a re-dub applies the same gains, so every unchanged line sounds identical), and
the source transcript (what `transcript.json` holds, without the translation).
A re-dub writes the same bundle for its own result, so a re-dub of a re-dub works.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile as sf

from worker.context import OutputFile
from worker.errors import PermanentJobError
from worker.stages.onset import Onset
from worker.stages.types import SynthesizedSegment, TranslatedSegment

NAME = "dub_segments.tar"
MANIFEST = "segments.json"
FORMAT = "dubfleet-segments"
VERSION = 1
CONTENT_TYPE = "application/x-tar"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_CLIP_BYTES = 256 * 1024 * 1024
_CLIP_RE = re.compile(r"clips/[0-9]{5,9}\.flac")


class BadBundle(PermanentJobError):
    """The parent's segment bundle cannot be used."""


@dataclass(frozen=True)
class Line:
    """One dubbed line as the bundle keeps it."""

    segment: TranslatedSegment
    onset: Onset
    clip: str | None  # member name of the voiced clip, None for a silent line
    tts_engine: str = ""
    synth_duration: float = 0.0
    flags: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A bundle's manifest: the lines in index order and the dub-wide facts (`meta`)."""

    meta: dict[str, Any]
    lines: tuple[Line, ...]
    path: Path | None = None
    clips: dict[str, Path] = field(default_factory=dict)  # member -> extracted file

    def line(self, index: int) -> Line | None:
        """The line with this index, if any."""
        return next((line for line in self.lines if line.segment.index == index), None)


def _onset_dict(onset: Onset) -> dict[str, Any]:
    return {"recognised": onset.recognised, "word": onset.word, "onset": onset.onset,
            "method": onset.method}


def _line_dict(seg: TranslatedSegment, synth: SynthesizedSegment | None, onset: Onset,
               clip: str | None) -> dict[str, Any]:
    return {"index": seg.index, "start": seg.start, "end": seg.end,
            "source_text": seg.source_text, "text": seg.text,
            "translation_engine": seg.engine, "note": seg.note, "onset": _onset_dict(onset),
            "clip": clip, "tts_engine": synth.engine if synth else "",
            "synth_duration": synth.duration if synth else 0.0,
            "flags": list(synth.flags) if synth else ["missing"],
            "error": synth.error if synth else None}


def _clip_bytes(wav: Path) -> bytes:
    """A TTS clip as 16-bit FLAC (lossless for the 16-bit wavs the engines write)."""
    data, rate = sf.read(str(wav), dtype="int16", always_2d=False)
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, subtype="PCM_16", format="FLAC")
    return buffer.getvalue()


def write(out_dir: Path, meta: Mapping[str, Any], timeline: Sequence[TranslatedSegment],
          synthesized: Sequence[SynthesizedSegment], onsets: Mapping[int, Onset]) -> OutputFile:
    """Write dub_segments.tar for a finished dub (or re-dub) and return it as an output."""
    synth = {s.index: s for s in synthesized}
    lines, clips = [], {}
    for seg in sorted(timeline, key=lambda s: s.index):
        s = synth.get(seg.index)
        clip = f"clips/{seg.index:05d}.flac" if s is not None and s.wav_path is not None else None
        if clip:
            clips[clip] = _clip_bytes(s.wav_path)
        onset = onsets.get(seg.index) or Onset(seg.index, seg.start, None, seg.start, "segment")
        lines.append(_line_dict(seg, s, onset, clip))
    manifest = {"format": FORMAT, "version": VERSION, **meta, "segments": lines}
    path = out_dir / NAME
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, json.dumps(manifest, ensure_ascii=False).encode("utf-8"))
        for name, data in clips.items():
            _add(tar, name, data)
    return OutputFile(NAME, path, CONTENT_TYPE)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _line(raw: Mapping[str, Any]) -> Line:
    """One manifest line, checked."""
    index = int(raw["index"])
    seg = TranslatedSegment(index=index, start=float(raw["start"]), end=float(raw["end"]),
                            source_text=str(raw.get("source_text") or ""),
                            text=str(raw.get("text") or ""),
                            engine=str(raw.get("translation_engine") or ""),
                            note=str(raw.get("note") or ""))
    o = raw.get("onset") or {}
    onset = Onset(index, float(o.get("recognised", seg.start)),
                  None if o.get("word") is None else float(o["word"]),
                  float(o.get("onset", seg.start)), str(o.get("method") or "segment"))
    clip = raw.get("clip")
    if clip is not None and not _CLIP_RE.fullmatch(str(clip)):
        raise BadBundle(f"the parent's segment bundle names a bad clip {str(clip)[:40]!r}")
    return Line(seg, onset, clip, str(raw.get("tts_engine") or ""),
                float(raw.get("synth_duration") or 0.0), tuple(map(str, raw.get("flags") or ())),
                raw.get("error"))


def read(path: Path, clips_dir: Path | None = None) -> Bundle:
    """Read a bundle's manifest (and, with `clips_dir`, extract its clips there)."""
    try:
        with tarfile.open(path, "r:") as tar:
            manifest = _manifest(tar)
            lines = tuple(sorted((_line(raw) for raw in manifest.get("segments") or ()),
                                 key=lambda line: line.segment.index))
            clips = _extract(tar, lines, clips_dir) if clips_dir is not None else {}
    except (tarfile.TarError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BadBundle(f"the parent's segment bundle cannot be read: {exc}") from exc
    if len({line.segment.index for line in lines}) != len(lines):
        raise BadBundle("the parent's segment bundle repeats a line index")
    meta = {k: v for k, v in manifest.items() if k != "segments"}
    return Bundle(meta, lines, path, clips)


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    member = tar.getmember(MANIFEST)
    if not member.isfile() or member.size > MAX_MANIFEST_BYTES:
        raise BadBundle("the parent's segment bundle has no usable manifest")
    manifest = json.loads(tar.extractfile(member).read().decode("utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadBundle("not a dubfleet segment bundle")
    if int(manifest.get("version", 0)) > VERSION:
        raise BadBundle(f"segment bundle version {manifest.get('version')} is newer than this "
                        f"worker's ({VERSION})")
    return manifest


def _extract(tar: tarfile.TarFile, lines: Sequence[Line], folder: Path) -> dict[str, Path]:
    """Copy each named clip out of the tar (regular files only, never by the member's path)."""
    folder.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for line in lines:
        if line.clip is None:
            continue
        member = tar.getmember(line.clip)
        if not member.isfile() or member.size > MAX_CLIP_BYTES:
            raise BadBundle(f"the parent's segment bundle has a bad clip {line.clip}")
        target = folder / f"{line.segment.index:05d}.flac"
        target.write_bytes(tar.extractfile(member).read())
        found[line.clip] = target
    return found


def clip_samples(path: Path) -> tuple[np.ndarray, int]:
    """A clip's samples (int16) and rate: for tests and comparisons."""
    data, rate = sf.read(str(path), dtype="int16", always_2d=False)
    return data, rate
