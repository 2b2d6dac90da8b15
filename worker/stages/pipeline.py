"""The media pipelines: transcribe, subtitle and dub, built from the stages in this package.

probe/decode → transcribe → (translate → synthesize, overlapped with recognition) → fit/mix →
mux. Progress is reported in source-audio seconds; partial artifacts (transcript, subtitles)
are published as soon as they exist.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from shared.protocol import JobKind, Stage
from worker.context import JobContext, JobResult, OutputFile
from worker.errors import UnsupportedJob
from worker.stages import adapt, outputs, redub, segment_bundle, summary, tts, user_subtitles
from worker.stages.fit import FitOptions, MixOptions, fit_segments, fit_summary, mix_dub_levels
from worker.stages.mux import encode_audio, mux_dubbed_video
from worker.stages.onset import speech_onsets
from worker.stages.options import MediaOptions
from worker.stages.probe import decode_audio, probe
from worker.stages.streaming import SentenceStream
from worker.stages.transcribe import Transcriber
from worker.stages.translate import TextTranslator, Translator, choose_engine

__all__ = ["MediaOptions", "MediaPipeline", "media_pipeline", "available_kinds", "overlap_pays"]
from worker.stages.types import (
    DecodedAudio, MediaInfo, Segment, Transcript, Translation, TranslatedSegment,
)

logger = logging.getLogger(__name__)

MEDIA_KINDS = (JobKind.TRANSCRIBE.value, JobKind.SUBTITLE.value, JobKind.DUB.value)


def overlap_pays() -> bool:
    """Whether recognising and voicing at once is faster here: with a GPU or 2+ cores.

    The A/B on an idle 2-core CPU (bench/results/pipeline-overlap-ab.json) measured overlap
    10-15 % faster (281 and 297 s against 335 and 312 s); the earlier runs that favoured running
    in turn were taken while other processes loaded the machine. One core has nothing to overlap.
    """
    from worker.stages.transcribe import choose_device

    return choose_device()[0] == "cuda" or (os.cpu_count() or 1) >= 2


class Progress:
    """Turns per-stage fractions into one monotonic percentage with an ETA."""

    def __init__(self, ctx: JobContext, weights: dict[str, float]):
        self.ctx = ctx
        self.weights = weights
        self.done = {name: 0.0 for name in weights}
        self.started = time.monotonic()

    def update(self, part: str, fraction: float, message: str | None = None) -> None:
        """Record `part` as `fraction` done and report the total."""
        self.done[part] = max(self.done[part], min(1.0, max(0.0, fraction)))
        total = sum(self.weights[k] * v for k, v in self.done.items())
        elapsed = time.monotonic() - self.started
        eta = elapsed * (100 - total) / total if total > 1 else None
        self.ctx.progress(total, message, eta_seconds=round(eta, 1) if eta else None)


@dataclass
class JobState:
    """What a media job has produced so far."""

    info: MediaInfo
    audio: DecodedAudio
    out: Path
    outputs: list[OutputFile] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    overlapped: bool = False
    voice: dict | None = None  # the dub's voice and why it was chosen (tts.choose_voice)
    subtitles: str | None = None  # a dub from the user's subtitles: "source" or "target" text
    summary: str | None = None  # how the summary step went (worker.stages.summary)

    @property
    def duration(self) -> float:
        """Source length in seconds (container duration, else decoded audio)."""
        return self.info.duration if self.info.duration > 0 else self.audio.duration

    def keep(self, ctx: JobContext, files: Iterable[OutputFile], publish: bool = True) -> None:
        """Record outputs and publish them at once as partial artifacts."""
        for item in files:
            self.outputs = [o for o in self.outputs if o.name != item.name] + [item]
            if publish:
                ctx.publish(item)


class MediaPipeline:
    """One job kind (transcribe, subtitle, dub); models load on first use and stay loaded."""

    WEIGHTS = {
        "transcribe": {"asr": 95.0},
        "subtitle": {"asr": 80.0, "mt": 15.0},
        "dub": {"asr": 40.0, "voice": 45.0, "mix": 10.0},
    }

    def __init__(self, kind: str):
        if kind not in MEDIA_KINDS:
            raise UnsupportedJob(f"not a media job kind: {kind!r}")
        self.kind = kind

    def run(self, ctx: JobContext, input_path: Path) -> JobResult:
        """Process one job and return its outputs."""
        opts = MediaOptions.from_job(ctx.job)
        progress = Progress(ctx, self.WEIGHTS[self.kind])
        state = self._prepare(ctx, input_path)
        if self.kind == JobKind.DUB.value and redub.is_redub(ctx.job):
            return redub.run(self, ctx, state, opts, input_path)
        if self.kind == JobKind.DUB.value:
            return self._dub(ctx, state, opts, progress, input_path)
        transcript = self._transcribe(ctx, state, opts, progress)
        if self.kind == JobKind.TRANSCRIBE.value:
            self._summarize(ctx, state, opts, transcript, None)
            return JobResult(tuple(state.outputs), "transcript.json", transcript.language,
                             {"timings": state.timings})
        translation = self._translate(ctx, state, opts, transcript, progress)
        self._summarize(ctx, state, opts, transcript, translation)
        main = f"subtitles.{translation.target_language}.srt"
        return JobResult(tuple(state.outputs), main, transcript.language, {"timings": state.timings})

    def _prepare(self, ctx: JobContext, input_path: Path) -> JobState:
        t0 = time.monotonic()
        info = probe(input_path)
        audio = decode_audio(input_path, ctx.work_dir / "audio16k.wav")
        out = ctx.work_dir / "out"
        out.mkdir(parents=True, exist_ok=True)
        state = JobState(info, audio, out)
        state.timings["decode"] = round(time.monotonic() - t0, 3)
        logger.info("job %s: %s, %.1f s, video=%s", ctx.job.job_id, info.container,
                    state.duration, info.has_video)
        return state

    def _transcriber(self, opts: MediaOptions) -> Transcriber:
        return Transcriber(opts.asr_model, allow_download=opts.allow_downloads)

    def _transcribe(self, ctx: JobContext, state: JobState, opts: MediaOptions,
                    progress: Progress, on_segment=None, language: str | None = None) -> Transcript:
        ctx.stage(Stage.TRANSCRIBING)
        t0 = time.monotonic()
        duration = max(state.audio.duration, 0.001)

        def seen(segment: Segment, seconds: float) -> None:
            progress.update("asr", seconds / duration, f"transcribed {seconds:.0f}/{duration:.0f} s")
            if on_segment is not None:
                on_segment(segment)

        transcript = self._transcriber(opts).transcribe(
            state.audio, language or ctx.job.source_language or "auto", on_segment=seen,
            check=ctx.check)
        progress.update("asr", 1.0)
        state.timings["transcribe"] = round(time.monotonic() - t0, 3)
        state.keep(ctx, [outputs.write_transcript(state.out, transcript),
                         *outputs.write_subtitles(state.out, transcript.segments,
                                                  transcript.language)])
        return transcript

    def _summarize(self, ctx: JobContext, state: JobState, opts: MediaOptions,
                   transcript: Transcript, translation: Translation | None) -> None:
        """Publish the summary artifacts (a failure is noted, never fails the job)."""
        ctx.check()
        files, note = summary.job_summaries(state.out, transcript, translation, state.duration,
                                            opts.summary)
        state.summary = note.get("summary")
        if "summary_seconds" in note:
            state.timings["summary"] = note["summary_seconds"]
        state.keep(ctx, files)

    def _translator(self, opts: MediaOptions, source: str, target: str,
                    audio: DecodedAudio | None) -> Translator:
        return choose_engine(source, target, opts.translation_engine, audio=audio,
                             asr_model=opts.asr_model, glossary=opts.glossary)

    def _translate(self, ctx: JobContext, state: JobState, opts: MediaOptions,
                   transcript: Transcript, progress: Progress) -> Translation:
        ctx.stage(Stage.TRANSLATING)
        t0 = time.monotonic()
        target = ctx.job.target_language
        translator = self._translator(opts, transcript.language, target, state.audio)
        translation = translator.translate(transcript.segments, transcript.language, target,
                                           check=ctx.check)
        progress.update("mt", 1.0)
        state.timings["translate"] = round(time.monotonic() - t0, 3)
        self._keep_translation(ctx, state, transcript, translation)
        return translation

    def _keep_translation(self, ctx: JobContext, state: JobState, transcript: Transcript,
                          translation: Translation) -> None:
        state.keep(ctx, [outputs.write_transcript(state.out, transcript, translation),
                         *outputs.write_subtitles(state.out, translation.segments,
                                                  translation.target_language)])

    def _dub(self, ctx: JobContext, state: JobState, opts: MediaOptions, progress: Progress,
             input_path: Path) -> JobResult:
        target = ctx.job.target_language
        chain = self._tts_chain(opts, target)
        dubber = _Dubber(self, ctx, state, opts, progress, chain)
        transcript, translation, synthesized = dubber.recognise_and_voice()
        ctx.stage(Stage.MUXING)
        t0 = time.monotonic()
        words = {seg.index: seg.words for seg in transcript.segments}
        onsets = speech_onsets(translation.segments, words, state.audio.wav_path)
        fit_options = FitOptions(max_speed=opts.max_speed)
        starts = {i: o.onset for i, o in onsets.items()}
        if opts.shorten:
            shortened, synthesized = dubber.shorten(translation, synthesized, fit_options, starts)
            if shortened is not translation:  # the spoken lines changed: so do the subtitles
                translation = shortened
                self._keep_translation(ctx, state, transcript, translation)
        fit = fit_segments(synthesized, translation.segments, state.duration, fit_options,
                           onsets=starts)
        wav, levels = mix_dub_levels(fit, input_path, state.out / "dubbed_mix.wav",
                                     MixOptions(keep_original=opts.keep_original))
        progress.update("mix", 0.4, "mixed the dubbed track")
        files = self._encode(ctx, state, input_path, wav, transcript.language, target)
        state.timings["mix_mux"] = round(time.monotonic() - t0, 3)
        self._summarize(ctx, state, opts, transcript, translation)
        report = outputs.dub_report(translation.segments, synthesized, fit.placed,
                                    fit_summary(fit.placed), self._meta(ctx, state, opts,
                                                                        transcript, translation,
                                                                        chain), onsets)
        bundle = segment_bundle.write(state.out, redub.bundle_meta(
            ctx, state, opts, transcript, translation, chain, dubber.voice, levels),
            translation.segments, synthesized, onsets)
        state.keep(ctx, [*files, outputs.write_report(state.out, report), bundle], publish=False)
        progress.update("mix", 1.0)
        return JobResult(tuple(state.outputs), files[0].name, transcript.language,
                         {"timings": state.timings, "summary": report["summary"]})

    def _tts_chain(self, opts: MediaOptions, lang: str) -> list:
        if opts.tts_engines:
            chain = [tts.get_engine(name) for name in opts.tts_engines]
        else:
            chain = tts.default_chain(lang)
        chain = [engine for engine in chain if engine.supports(lang)]
        if not chain:
            raise UnsupportedJob(f"no text-to-speech engine on this worker speaks '{lang}'")
        return chain

    def _encode(self, ctx: JobContext, state: JobState, input_path: Path, wav: Path,
                source: str, target: str) -> list[OutputFile]:
        audio = encode_audio(wav, state.out / "dubbed_audio.m4a", language=target)
        audio_out = OutputFile(audio.name, audio, "audio/mp4")
        if not state.info.has_video:
            return [audio_out]
        video = mux_dubbed_video(input_path, audio, state.out / "dubbed_video.mp4",
                                 original_keep=True, language=target, original_language=source)
        kind = {".mp4": "video/mp4", ".webm": "video/webm"}.get(video.suffix, "video/x-matroska")
        return [OutputFile(video.name, video, kind), audio_out]

    def _meta(self, ctx: JobContext, state: JobState, opts: MediaOptions, transcript: Transcript,
              translation: Translation, chain: Sequence) -> dict:
        return {"job_id": ctx.job.job_id, "source_language": transcript.language or None,
                "target_language": translation.target_language,
                "asr_model": transcript.model or None, "subtitles": state.subtitles,
                "translation_engine": translation.engine,
                "tts_engines": [engine.name for engine in chain],
                "source_duration": round(state.duration, 3), "max_speed": opts.max_speed,
                "keep_original": opts.keep_original, "overlap": state.overlapped,
                "summary_artifact": state.summary,
                **(state.voice or {}), "timings": state.timings}


class _Dubber:
    """Recognition with translation + synthesis of finished sentences running alongside."""

    def __init__(self, pipeline: MediaPipeline, ctx: JobContext, state: JobState,
                 opts: MediaOptions, progress: Progress, chain: list):
        self.pipeline, self.ctx, self.state = pipeline, ctx, state
        self.opts, self.progress, self.chain = opts, progress, chain
        self.translator: Translator | None = None
        self.source = ctx.job.source_language or "auto"
        self.voiced_until = 0.0
        self.speaker_wav: Path | None = None
        self.voice: str | None = None
        self.clones = any(getattr(engine, "is_xtts", False) for engine in chain)

    def recognise_and_voice(self):
        """Run ASR, translating and voicing finished sentences on the way; return all three.

        A job with the user's own subtitles skips recognition (see user_subtitles)."""
        user = user_subtitles.load(self.ctx, self.state.duration)
        if user is not None:
            return user_subtitles.voice(self, user)
        t0 = time.monotonic()
        wanted = overlap_pays() if self.opts.overlap is None else self.opts.overlap
        overlap = wanted and self._text_translator_ready()
        self.state.overlapped = overlap
        stream = SentenceStream(self._translate_unit, overlap=overlap, voice=self._voice_unit)
        try:
            transcript = self.pipeline._transcribe(self.ctx, self.state, self.opts, self.progress,
                                                   on_segment=stream.push if overlap else None,
                                                   language=self.source)
            if not overlap:
                self.source = transcript.language
                for segment in transcript.segments:
                    stream.push(segment)
            self.ctx.stage(Stage.SYNTHESIZING, "translating and voicing")
            result = stream.close()
        except BaseException:
            stream.abandon()
            raise
        self.state.timings["transcribe_translate_voice"] = round(time.monotonic() - t0, 3)
        translation = Translation(transcript.language, self.ctx.job.target_language,
                                  tuple(sorted(result.translated, key=lambda s: s.index)),
                                  self.translator.name if self.translator else "none")
        self.pipeline._keep_translation(self.ctx, self.state, transcript, translation)
        return transcript, translation, sorted(result.synthesized, key=lambda s: s.index)

    def shorten(self, translation: Translation, synthesized: list, fit_options: FitOptions,
                onsets: dict[int, float]) -> tuple[Translation, list]:
        """Re-translate shorter (and re-voice) the lines too long for their slot (adapt)."""
        translator = self.translator
        if not isinstance(translator, TextTranslator):
            return translation, synthesized
        t0 = time.monotonic()
        target = self.ctx.job.target_language
        timeline, synthesized, count = adapt.shorten_to_fit(
            translator, translation.segments, synthesized, self.state.duration, fit_options,
            onsets, translation.source_language, target,
            voice=lambda segs: self._voice_unit(segs, "tts-shortened"))
        self.state.timings["shorten"] = round(time.monotonic() - t0, 3)
        if not count:
            return translation, synthesized
        return replace(translation, segments=tuple(timeline)), synthesized

    def _text_translator_ready(self) -> bool:
        """Overlap needs a text engine chosen before recognition ends, so a known language."""
        if self.source == "auto":
            # whisper's own detection, run up front (~1 s) so sentences can be voiced early
            transcriber = self.pipeline._transcriber(self.opts)
            self.source, _ = transcriber.detect_language(self.state.audio)
        self.translator = self._make_translator(self.source)
        return isinstance(self.translator, TextTranslator)

    def _make_translator(self, source: str) -> Translator:
        return self.pipeline._translator(self.opts, source, self.ctx.job.target_language,
                                         self.state.audio)

    def _unit(self, unit: Sequence[Segment]):
        """Translate and voice one sentence unit."""
        translated = self._translate_unit(unit)
        return translated, self._voice_unit(translated)

    def _translate_unit(self, unit: Sequence[Segment]) -> list[TranslatedSegment]:
        """Translate one sentence unit (the translator is chosen on the first)."""
        self.ctx.check()
        if self.translator is None:
            self.translator = self._make_translator(self.source)
        target = self.ctx.job.target_language
        return list(self.translator.translate(unit, self.source, target,
                                              check=self.ctx.check).segments)

    def _voice_unit(self, translated: list[TranslatedSegment], folder: str = "tts") -> list:
        """Voice translated lines (into out/`folder`) and report progress."""
        self.ctx.check()
        voiced = tts.synthesize_segments(translated, self.ctx.job.target_language, self.chain,
                                         self.state.out / folder, voices=self._voices(translated),
                                         speaker_wav=self._speaker(translated),
                                         check=self.ctx.check)
        self._report(translated)
        return voiced

    def _speaker(self, translated: list[TranslatedSegment]) -> Path | None:
        """A few seconds of the source speaker for voice cloning (XTTS), cut once."""
        if self.clones and self.speaker_wav is None:
            self.speaker_wav = tts.speaker_reference(self.state.audio.wav_path, translated,
                                                     self.state.out / "speaker_ref.wav")
        return self.speaker_wav

    def _voices(self, translated: list[TranslatedSegment]) -> dict[str, str]:
        """The first engine's voice: the job's `voice`, else one suiting the source speaker's
        pitch (measured once, on the first sentence's source speech)."""
        if self.state.voice is None:
            self.voice, self.state.voice = tts.choose_voice(
                self.chain[0], self.ctx.job.target_language, self.opts.voice,
                self.state.audio.wav_path, [(s.start, s.end) for s in translated])
        return {self.chain[0].name: self.voice} if self.voice else {}

    def _report(self, translated: list[TranslatedSegment]) -> None:
        if translated:
            self.voiced_until = max(self.voiced_until, max(s.end for s in translated))
        duration = max(self.state.duration, 0.001)
        self.progress.update("voice", self.voiced_until / duration,
                             f"voiced {self.voiced_until:.0f}/{duration:.0f} s")


def media_pipeline(kind: str) -> MediaPipeline:
    """The pipeline for a media job kind (the worker's registry calls this once per kind)."""
    return MediaPipeline(kind)


def available_kinds() -> tuple[str, ...]:
    """Media kinds this worker can run: any needs an ASR model; subtitle/dub need targets."""
    from worker.models import advertise

    caps = advertise()
    if not caps.get("asr_models"):
        return ()
    if not caps.get("target_languages"):
        return (JobKind.TRANSCRIBE.value,)
    return MEDIA_KINDS
