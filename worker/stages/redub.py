"""Re-dub: a corrected copy of a finished dub that re-voices only the lines the user edited.

A re-dub is a `dub` job whose options carry `redub` = {"parent_job_id", "edits": [{"index", and
"text" or "source_text"}], ...}; the loop downloads the parent's segment bundle
(`worker.stages.segment_bundle`) next to the input (the parent's video). A `text` edit is voiced as
given (never rewritten: the fit may only speed it up or cut it); a `source_text` edit is translated
again with the job's translation engine (and its output checks), voiced, and shortened like a dub's
line when it is too long. Every other line re-uses the parent's clip, onset and the mix's gains,
so it sounds exactly as before. No recogniser is loaded, and no translation engine unless a
`source_text` edit needs one. The outputs are a dub's, with `revoiced`, `reused` and
`parent_job_id` at the top of dub_report.json.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from shared.protocol import Stage
from worker.context import JobContext, JobResult, OutputFile
from worker.errors import JobFailed, PermanentJobError, UnsupportedJob
from worker.stages import adapt, outputs, segment_bundle, tts
from worker.stages.fit import (FitOptions, MixLevels, MixOptions, fit_segments, fit_summary,
                               mix_dub_levels)
from worker.stages.options import MediaOptions
from worker.stages.segment_bundle import Bundle
from worker.stages.translate import TextTranslator
from worker.stages.types import (Segment, SynthesizedSegment, Transcript, Translation,
                                 TranslatedSegment)

if TYPE_CHECKING:
    from worker.stages.pipeline import JobState, MediaPipeline

logger = logging.getLogger(__name__)

OPTION = "redub"
EDITED_NOTE = "edited"
WEIGHTS = {"load": 5.0, "voice": 50.0, "mix": 45.0}


@dataclass(frozen=True)
class Edit:
    """One edited line: its new target text, or its new source text to translate again."""

    index: int
    text: str | None = None
    source_text: str | None = None


def is_redub(job: Any) -> bool:
    """Whether a claimed dub job is a re-dub of an earlier one."""
    return isinstance((job.options or {}).get(OPTION), dict)


def parse_job(job: Any) -> tuple[str, list[Edit]]:
    """The parent's id and the edits from the job's options (the coordinator checked them)."""
    spec = (job.options or {}).get(OPTION) or {}
    try:
        edits = [Edit(int(e["index"]), e.get("text"), e.get("source_text"))
                 for e in spec.get("edits") or ()]
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"bad re-dub edits: {exc}") from exc
    if not edits or any((e.text is None) == (e.source_text is None) for e in edits):
        raise PermanentJobError("bad re-dub edits: each needs exactly one of text/source_text")
    return str(spec.get("parent_job_id") or ""), edits


def bundle_meta(ctx: JobContext, state: "JobState", opts: MediaOptions,
                transcript: Transcript | None, translation: Translation, chain: Sequence,
                voice: str | None, levels: MixLevels,
                parent_job_id: str | None = None) -> dict[str, Any]:
    """The dub-wide facts a later re-dub needs (see segment_bundle)."""
    path = state.out / "transcript.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.pop("translation", None)
    return {"job_id": ctx.job.job_id, "parent_job_id": parent_job_id,
            "source_language": (transcript.language if transcript else None) or None,
            "target_language": ctx.job.target_language, "duration": round(state.duration, 6),
            "translation_engine": translation.engine,
            "tts_engines": [engine.name for engine in chain], "tts_voice": voice,
            "voice": state.voice, "subtitles": state.subtitles,
            "max_speed": opts.max_speed, "keep_original": opts.keep_original,
            "levels": {"voice_gain": levels.voice_gain, "mix_gains": list(levels.mix_gains)},
            "transcript": data}


def run(pipeline: "MediaPipeline", ctx: JobContext, state: "JobState", opts: MediaOptions,
        input_path: Path) -> JobResult:
    """Re-dub: re-voice the edited lines, re-use the others, mix and mux again."""
    return _Redub(pipeline, ctx, state, opts).run(input_path)


class _Redub:
    """One re-dub job."""

    def __init__(self, pipeline: "MediaPipeline", ctx: JobContext, state: "JobState",
                 opts: MediaOptions):
        from worker.stages.pipeline import Progress

        self.pipeline, self.ctx, self.state = pipeline, ctx, state
        self.parent_id, self.edits = parse_job(ctx.job)
        self.progress = Progress(ctx, WEIGHTS)
        self.target = ctx.job.target_language
        self.bundle = self._load()
        meta = self.bundle.meta
        self.source = str(meta.get("source_language") or "")
        # the parent's own settings: the same voice, speed limit and background as the dub
        self.opts = replace(opts, max_speed=float(meta.get("max_speed", opts.max_speed)),
                            keep_original=bool(meta.get("keep_original", opts.keep_original)))
        self.fit_options = FitOptions(max_speed=self.opts.max_speed)
        state.voice, state.subtitles = meta.get("voice"), meta.get("subtitles")
        self.chain = self._chain()
        self.translator = None

    def _load(self) -> Bundle:
        path = getattr(self.ctx, "parent_path", None)
        if path is None:  # options.redub without a bundle: not made by POST /jobs/<id>/redub
            raise PermanentJobError("the re-dub's parent segments were not downloaded")
        t0 = time.monotonic()
        bundle = segment_bundle.read(Path(path), self.ctx.work_dir / "parent_clips")
        unknown = [e.index for e in self.edits if bundle.line(e.index) is None]
        if unknown:
            raise PermanentJobError(f"the parent dub has no line with index {unknown[0]}")
        self.state.timings["load_parent"] = round(time.monotonic() - t0, 3)
        self.progress.update("load", 1.0, f"re-dubbing {len(self.edits)} of "
                                          f"{len(bundle.lines)} lines")
        return bundle

    def _chain(self) -> list:
        """The parent's TTS engines (so its voice), else this job's own chain."""
        names = tuple(self.bundle.meta.get("tts_engines") or ())
        if names:
            try:
                return self.pipeline._tts_chain(replace(self.opts, tts_engines=names), self.target)
            except (UnsupportedJob, ValueError) as exc:
                logger.warning("job %s: the parent's TTS engines are not all here (%s)",
                               self.ctx.job.job_id, exc)
        return self.pipeline._tts_chain(self.opts, self.target)

    def run(self, input_path: Path) -> JobResult:
        """Voice the edits, fit every line, mix with the parent's gains, mux, report."""
        t0 = time.monotonic()
        timeline, voiced = self._revoice()
        self.state.timings["translate_voice"] = round(time.monotonic() - t0, 3)
        synthesized = self._reused(voiced) + voiced
        self.ctx.stage(Stage.MUXING)
        t0 = time.monotonic()
        starts = {line.segment.index: line.onset.onset for line in self.bundle.lines}
        fit = fit_segments(synthesized, timeline, self.state.duration, self.fit_options,
                           onsets=starts)
        levels = _levels(self.bundle.meta.get("levels"))
        wav, used = mix_dub_levels(fit, input_path, self.state.out / "dubbed_mix.wav",
                                   MixOptions(keep_original=self.opts.keep_original), levels)
        self.progress.update("mix", 0.4, "mixed the dubbed track")
        transcript = self._transcript()
        files = self.pipeline._encode(self.ctx, self.state, input_path, wav, transcript.language,
                                      self.target)
        self.state.timings["mix_mux"] = round(time.monotonic() - t0, 3)
        revoiced = sorted(s.index for s in voiced)
        return self._finish(files, transcript, timeline, synthesized, fit, used, revoiced)

    def _revoice(self) -> tuple[list[TranslatedSegment], list[SynthesizedSegment]]:
        """The new timeline and the clips of the edited lines (voiced now)."""
        edited = {e.index: e for e in self.edits}
        texts = [self._text_line(e) for e in self.edits if e.text is not None]
        sources = [e for e in self.edits if e.source_text is not None]
        translated = self._translate(sources) if sources else []
        self.ctx.stage(Stage.SYNTHESIZING, f"voicing {_lines(len(edited))}")
        new = {seg.index: seg for seg in texts + translated}
        timeline = [new.get(line.segment.index, line.segment) for line in self.bundle.lines]
        voiced = self._voice(sorted(new.values(), key=lambda s: s.index), "tts")
        if translated and self.opts.shorten:
            timeline, voiced = self._shorten(timeline, voiced, {s.index for s in translated})
        self.progress.update("voice", 1.0, f"voiced {len(voiced)} lines")
        return timeline, voiced

    def _text_line(self, edit: Edit) -> TranslatedSegment:
        """A `text` edit: the user's line, voiced as given."""
        seg = self.bundle.line(edit.index).segment
        return replace(seg, text=" ".join(str(edit.text).split()), engine="user",
                       note=EDITED_NOTE)

    def _translate(self, edits: Sequence[Edit]) -> list[TranslatedSegment]:
        """`source_text` edits: each line translated again (the engine loads only now)."""
        if not self.source:
            raise PermanentJobError("the parent dub's source language is unknown: edit the "
                                    "translated text instead of the source text")
        self.ctx.stage(Stage.TRANSLATING, f"translating {_lines(len(edits))}")
        self.translator = self.pipeline._translator(self.opts, self.source, self.target, None)
        out = []
        for edit in edits:
            self.ctx.check()
            seg = self.bundle.line(edit.index).segment
            source = Segment(seg.index, seg.start, seg.end, " ".join(str(edit.source_text).split()))
            result = self.translator.translate([source], self.source, self.target,
                                               check=self.ctx.check)
            line = next((s for s in result.segments if s.index == seg.index), None)
            if line is None:
                raise JobFailed(f"the translation engine returned no line {seg.index}")
            note = f"{EDITED_NOTE} source; {line.note}" if line.note else f"{EDITED_NOTE} source"
            out.append(replace(line, start=seg.start, end=seg.end, note=note))
        return out

    def _voice(self, lines: list[TranslatedSegment], folder: str) -> list[SynthesizedSegment]:
        """Voice lines with the parent's engines and voice."""
        if not lines:
            return []
        names = self.bundle.meta.get("tts_engines") or [self.chain[0].name]
        voice = self.bundle.meta.get("tts_voice")
        speaker = None
        if any(getattr(engine, "is_xtts", False) for engine in self.chain):
            speaker = tts.speaker_reference(self.state.audio.wav_path, lines,
                                            self.state.out / "speaker_ref.wav")
        return tts.synthesize_segments(lines, self.target, self.chain, self.state.out / folder,
                                       voices={names[0]: voice} if voice else {},
                                       speaker_wav=speaker, check=self.ctx.check)

    def _shorten(self, timeline: list[TranslatedSegment], voiced: list[SynthesizedSegment],
                 translated: set[int]) -> tuple[list[TranslatedSegment], list]:
        """Re-translated lines too long for their slot get a shorter wording (as in a dub)."""
        if not isinstance(self.translator, TextTranslator):
            return timeline, voiced
        starts = {line.segment.index: line.onset.onset for line in self.bundle.lines}
        candidates = [s for s in voiced if s.index in translated]
        others = [s for s in voiced if s.index not in translated]
        timeline, shortened, _count = adapt.shorten_to_fit(
            self.translator, timeline, candidates, self.state.duration, self.fit_options,
            starts, self.source, self.target, voice=lambda segs: self._voice(segs, "tts-shortened"))
        return timeline, others + shortened

    def _reused(self, voiced: Sequence[SynthesizedSegment]) -> list[SynthesizedSegment]:
        """The parent's clips of every line not voiced again."""
        again = {s.index for s in voiced}
        out = []
        for line in self.bundle.lines:
            if line.segment.index in again:
                continue
            clip = self.bundle.clips.get(line.clip) if line.clip else None
            out.append(SynthesizedSegment(line.segment.index, clip, line.synth_duration,
                                          line.tts_engine, flags=line.flags, error=line.error))
        return out

    def _transcript(self) -> Transcript:
        """The parent's transcript, with the source text of `source_text` edits replaced."""
        data = self.bundle.meta.get("transcript") or {}
        changed = {e.index: " ".join(str(e.source_text).split())
                   for e in self.edits if e.source_text is not None}
        segments = tuple(Segment(int(s["index"]), float(s["start"]), float(s["end"]),
                                 changed.get(int(s["index"]), str(s.get("text") or "")))
                         for s in data.get("segments") or ())
        return Transcript(self.source, float(data.get("language_probability") or 0.0),
                          float(data.get("duration") or self.state.duration), segments,
                          str(data.get("model") or ""))

    def _transcript_file(self, transcript: Transcript, translation: Translation) -> OutputFile:
        """transcript.json: the parent's, with edited source lines and the new translation."""
        data = dict(self.bundle.meta.get("transcript") or {})
        changed = {s.index: s.text for s in transcript.segments}
        rows = []
        for row in data.get("segments") or ():
            row = dict(row)
            if row.get("text") != changed.get(row.get("index"), row.get("text")):
                row["text"], row["words"] = changed[row["index"]], []  # words no longer match
            rows.append(row)
        data["segments"] = rows
        data["translation"] = outputs.transcript_dict(
            Transcript("", 0.0, 0.0, ()), translation)["translation"]
        path = self.state.out / "transcript.json"
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        return OutputFile("transcript.json", path, outputs.JSON)

    def _finish(self, files: list[OutputFile], transcript: Transcript,
                timeline: list[TranslatedSegment], synthesized: list[SynthesizedSegment],
                fit, levels: MixLevels, revoiced: list[int]) -> JobResult:
        """Write subtitles, transcript, report and the new segment bundle; return the result."""
        state, ctx = self.state, self.ctx
        translation = Translation(self.source, self.target, tuple(timeline),
                                  str(self.bundle.meta.get("translation_engine") or ""))
        onsets = {line.segment.index: line.onset for line in self.bundle.lines}
        meta = self.pipeline._meta(ctx, state, self.opts, transcript, translation, self.chain)
        meta.update({"parent_job_id": self.parent_id, "revoiced": revoiced,
                     "reused": len(self.bundle.lines) - len(revoiced)})
        report = outputs.dub_report(timeline, synthesized, fit.placed, fit_summary(fit.placed),
                                    meta, onsets)
        text_files = [self._transcript_file(transcript, translation),
                      *outputs.write_subtitles(state.out, timeline, self.target)]
        if transcript.segments:
            text_files += outputs.write_subtitles(state.out, transcript.segments,
                                                  transcript.language)
        bundle = segment_bundle.write(state.out, bundle_meta(
            ctx, state, self.opts, transcript, translation, self.chain,
            self.bundle.meta.get("tts_voice"), levels, self.parent_id), timeline, synthesized,
            onsets)
        state.keep(ctx, text_files, publish=False)
        state.keep(ctx, [*files, outputs.write_report(state.out, report), bundle], publish=False)
        self.progress.update("mix", 1.0)
        logger.info("job %s: re-dub of %s: %d lines re-voiced, %d re-used", ctx.job.job_id,
                    self.parent_id, len(revoiced), meta["reused"])
        return JobResult(tuple(state.outputs), files[0].name, transcript.language or None,
                         {"timings": state.timings, "summary": report["summary"]})


def _levels(raw: Any) -> MixLevels | None:
    """The parent's mix gains (None when it did not record them: measured afresh)."""
    if not isinstance(raw, dict):
        return None
    try:
        return MixLevels(float(raw["voice_gain"]), tuple(float(g) for g in raw["mix_gains"]))
    except (KeyError, TypeError, ValueError):
        return None


def _lines(count: int) -> str:
    return f"{count} edited line" + ("" if count == 1 else "s")
