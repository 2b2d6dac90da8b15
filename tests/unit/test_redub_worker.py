"""The segment bundle (read/write) and the worker's re-dub flow, with a tone-making TTS fake.

The media steps are real (ffmpeg probe, decode, fit, mix, mux on a generated video); only the
voice is a fake engine and the job context an in-memory one, so this runs without any model.
"""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")
sf = pytest.importorskip("soundfile")
pytest.importorskip("av")

from shared.protocol import ClaimedJob  # noqa: E402
from worker.errors import PermanentJobError  # noqa: E402
from worker.stages import redub, segment_bundle, tts  # noqa: E402
from worker.stages.audio import write_wav  # noqa: E402
from worker.stages.ffmpeg import ffmpeg_exe  # noqa: E402
from worker.stages.fit import (FitOptions, MixOptions, fit_segments,  # noqa: E402
                               mix_dub_levels)
from worker.stages.onset import Onset  # noqa: E402
from worker.stages.pipeline import MediaPipeline  # noqa: E402
from worker.stages.types import (SynthesizedSegment, Translation,  # noqa: E402
                                 TranslatedSegment)

RATE = 24000
LINES = [(0, 0.5, 2.0, "one"), (1, 3.0, 4.5, "two"), (2, 6.0, 7.5, "three"),
         (3, 9.0, 10.5, "four")]
DURATION = 12.0


def _tone(path: Path, seconds: float, freq: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    return write_wav(path, 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32), RATE)


class ToneEngine:
    """A TTS fake: a tone as long as the text (0.08 s per character), pitch set by the voice."""

    name = "tone"
    max_chars = 400
    languages = frozenset()

    def __init__(self):
        self.calls: list[tuple[str, str | None]] = []

    def supports(self, lang: str) -> bool:
        return True

    def synthesize(self, text, lang, out_wav, voice=None, speaker_wav=None) -> float:
        self.calls.append((text, voice))
        _tone(Path(out_wav), 0.08 * len(text) + 0.2, 300.0 if voice == "low" else 600.0)
        return 0.08 * len(text) + 0.2


class FakeTranslator:
    """Uppercases: a stand-in text engine (counts its calls)."""

    name = "fake-mt"

    def __init__(self):
        self.calls = 0

    def translate(self, segments, source, target, check=None):
        self.calls += 1
        return Translation(source, target, tuple(
            TranslatedSegment(s.index, s.start, s.end, s.text, s.text.upper(), self.name)
            for s in segments), self.name)


class Context:
    """An in-memory job context."""

    def __init__(self, job: ClaimedJob, work_dir: Path, parent: Path | None):
        self.job, self.work_dir, self.parent_path, self.subtitles_path = job, work_dir, parent, None
        self.stages: list[str] = []
        self.percent = 0.0
        work_dir.mkdir(parents=True, exist_ok=True)  # the loop makes it

    def stage(self, stage, message=None):
        self.stages.append(stage.value)

    def progress(self, percent, message=None, eta_seconds=None):
        assert percent >= self.percent - 1e-9  # monotonic
        self.percent = percent

    def check(self):
        pass

    def publish(self, output):
        pass


@pytest.fixture
def engine(monkeypatch):
    fake = ToneEngine()
    monkeypatch.setitem(tts._FACTORIES, "tone", lambda: fake)
    monkeypatch.setitem(tts._engines, "tone", fake)
    return fake


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "talk.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=10:duration={DURATION}",
                    "-f", "lavfi", "-i", f"sine=frequency=150:duration={DURATION}",
                    "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def _parent(tmp: Path, video: Path) -> tuple[Path, Path]:
    """A parent dub made the way the dub pipeline makes one: clips, fit, mix, bundle."""
    out = tmp / "parent"
    out.mkdir()
    timeline = [TranslatedSegment(i, a, b, f"src {w}", f"dub {w}", "fake-mt")
                for i, a, b, w in LINES]
    synth = [SynthesizedSegment(s.index, _tone(out / f"seg_{s.index}.wav", 1.0, 500 + 50 * s.index),
                                1.0, "tone", RATE) for s in timeline]
    onsets = {s.index: Onset(s.index, s.start, None, s.start + 0.1, "energy") for s in timeline}
    fit = fit_segments(synth, timeline, DURATION, FitOptions(),
                       onsets={i: o.onset for i, o in onsets.items()})
    wav, levels = mix_dub_levels(fit, video, out / "mix.wav", MixOptions())
    transcript = {"language": "en", "language_probability": 1.0, "duration": DURATION,
                  "model": "base", "segments": [
                      {"index": s.index, "start": s.start, "end": s.end, "text": s.source_text,
                       "words": []} for s in timeline]}
    meta = {"job_id": "p" * 32, "parent_job_id": None, "source_language": "en",
            "target_language": "es", "duration": DURATION, "tts_engines": ["tone"],
            "tts_voice": "low", "voice": {"voice": "low", "voice_reason": "test"},
            "subtitles": None, "max_speed": 1.35, "keep_original": True,
            "translation_engine": "fake-mt",
            "levels": {"voice_gain": levels.voice_gain, "mix_gains": list(levels.mix_gains)},
            "transcript": transcript}
    bundle = segment_bundle.write(out, meta, timeline, synth, onsets)
    return bundle.path, wav


def _job(edits: list[dict]) -> ClaimedJob:
    return ClaimedJob(job_id="r" * 32, kind="dub", lease_token="t", lease_expires_at=0.0,
                      attempt=1, max_attempts=3, heartbeat_interval=5.0, source_language="en",
                      target_language="es",
                      options={"redub": {"parent_job_id": "p" * 32, "edits": edits,
                                         "bundle_sha256": "0" * 64}})


def _run(tmp: Path, video: Path, bundle: Path, edits: list[dict], translator=None):
    pipeline = MediaPipeline("dub")
    made: list = []

    def make_translator(opts, source, target, audio):
        made.append((source, target))
        return translator

    pipeline._translator = make_translator
    ctx = Context(_job(edits), tmp / "work", bundle)
    result = pipeline.run(ctx, video)
    files = {o.name: o.path for o in result.outputs}
    return result, files, ctx, made


def test_bundle_round_trip_keeps_lines_clips_and_meta(tmp_path, video):
    bundle, _ = _parent(tmp_path, video)
    with tarfile.open(bundle) as tar:
        assert tar.getnames()[0] == segment_bundle.MANIFEST
    read = segment_bundle.read(bundle, tmp_path / "clips")
    assert [line.segment.index for line in read.lines] == [0, 1, 2, 3]
    line = read.line(2)
    assert line.segment.text == "dub three" and line.onset.onset == pytest.approx(6.1)
    assert line.onset.method == "energy" and line.tts_engine == "tone"
    samples, rate = segment_bundle.clip_samples(read.clips[line.clip])
    original, _ = sf.read(str(tmp_path / "parent" / "seg_2.wav"), dtype="int16")
    assert rate == RATE and np.array_equal(samples, original)  # lossless
    assert read.meta["tts_voice"] == "low" and "levels" in read.meta


def test_bundle_refuses_a_clip_path_outside_clips(tmp_path):
    bad = tmp_path / "bad.tar"
    manifest = {"format": segment_bundle.FORMAT, "version": 1, "segments": [
        {"index": 0, "start": 0, "end": 1, "text": "a", "clip": "../../etc/passwd"}]}
    with tarfile.open(bad, "w") as tar:
        segment_bundle._add(tar, segment_bundle.MANIFEST, json.dumps(manifest).encode())
    with pytest.raises(segment_bundle.BadBundle):
        segment_bundle.read(bad, tmp_path / "clips")
    with pytest.raises(segment_bundle.BadBundle):
        segment_bundle.read(tmp_path / "missing.tar")


def test_text_edit_re_voices_one_line_and_keeps_the_others_identical(tmp_path, video, engine):
    bundle, parent_wav = _parent(tmp_path, video)
    result, files, ctx, made = _run(tmp_path, video, bundle, [{"index": 1, "text": "nuevo texto"}])
    assert made == []  # no translation engine without a source_text edit
    assert engine.calls == [("nuevo texto", "low")]  # the parent's voice
    report = json.loads(files["dub_report.json"].read_text())
    assert report["revoiced"] == [1] and report["reused"] == 3
    assert report["parent_job_id"] == "p" * 32
    assert [r["target_text"] for r in report["segments"]][1] == "nuevo texto"
    assert "nuevo texto" in files["subtitles.es.srt"].read_text()
    assert {"dubbed_video.mp4", "dubbed_audio.m4a", "transcript.json", "subtitles.en.srt",
            "dub_segments.tar"} <= set(files)
    assert "transcribing" not in ctx.stages and ctx.stages[-1] == "muxing"
    old, rate = sf.read(str(parent_wav), dtype="int16")
    new, _ = sf.read(str(tmp_path / "work" / "out" / "dubbed_mix.wav"), dtype="int16")
    assert len(new) == len(old)
    edited = slice(int(2.5 * rate), int(5.8 * rate))  # line 1's slot, its ducking ramps and more
    keep = np.ones(len(old), bool)
    keep[edited] = False
    assert np.array_equal(new[keep], old[keep])
    assert not np.array_equal(new[edited], old[edited])


def test_source_text_edit_is_translated_again_and_a_re_dub_can_be_re_dubbed(tmp_path, video,
                                                                            engine):
    bundle, _ = _parent(tmp_path, video)
    translator = FakeTranslator()
    _, files, ctx, made = _run(tmp_path, video, bundle, [{"index": 2, "source_text": "hi there"}],
                               translator)
    assert made == [("en", "es")] and translator.calls == 1 and "translating" in ctx.stages
    report = json.loads(files["dub_report.json"].read_text())
    assert report["revoiced"] == [2] and report["reused"] == 3
    row = report["segments"][2]
    assert row["source_text"] == "hi there" and row["target_text"] == "HI THERE"
    transcript = json.loads(files["transcript.json"].read_text())
    assert transcript["segments"][2]["text"] == "hi there"
    assert transcript["translation"]["segments"][2]["text"] == "HI THERE"
    # the re-dub's own bundle carries the edit: a re-dub of it re-uses the new line
    second = tmp_path / "second"
    second.mkdir()
    _, files2, _, _ = _run(second, video, files["dub_segments.tar"], [{"index": 0, "text": "x y"}])
    report2 = json.loads(files2["dub_report.json"].read_text())
    assert report2["revoiced"] == [0] and report2["segments"][2]["target_text"] == "HI THERE"


def test_an_edit_of_an_unknown_line_fails_the_job_for_good(tmp_path, video, engine):
    bundle, _ = _parent(tmp_path, video)
    with pytest.raises(PermanentJobError, match="no line with index 9"):
        _run(tmp_path, video, bundle, [{"index": 9, "text": "a"}])


def test_parse_job_refuses_edits_with_both_texts():
    with pytest.raises(PermanentJobError):
        redub.parse_job(_job([{"index": 1, "text": "a", "source_text": "b"}]))


def _srt(path: Path) -> Path:
    def stamp(t: float) -> str:
        return f"00:00:{int(t):02d},{int(round(t % 1 * 1000)):03d}"
    path.write_text("\n".join(f"{n}\n{stamp(a)} --> {stamp(b)}\nlinea {w}\n"
                              for n, (_, a, b, w) in enumerate(LINES, 1)), encoding="utf-8")
    return path


def test_a_dub_keeps_its_lines_and_a_re_dub_of_it_sounds_the_same_elsewhere(tmp_path, video,
                                                                           engine):
    """The real dub pipeline (from target-language subtitles: no recogniser, no translation)
    writes dub_segments.tar; re-dubbing one line of it changes the mix only around that line."""
    job = ClaimedJob(job_id="d" * 32, kind="dub", lease_token="t", lease_expires_at=0.0,
                     attempt=1, max_attempts=3, heartbeat_interval=5.0, source_language="en",
                     target_language="es", subtitles_sha256="0" * 64,
                     options={"tts_engines": ["tone"], "subtitles_language": "es",
                              "subtitles": "target"})
    ctx = Context(job, tmp_path / "dub", None)
    ctx.subtitles_path = _srt(tmp_path / "subs.srt")
    dub = {o.name: o.path for o in MediaPipeline("dub").run(ctx, video).outputs}
    bundle = segment_bundle.read(dub["dub_segments.tar"])
    assert [line.segment.text for line in bundle.lines] == [f"linea {w}" for *_, w in LINES]
    assert bundle.meta["tts_engines"] == ["tone"] and bundle.meta["levels"]["mix_gains"]
    assert all(line.clip for line in bundle.lines)
    engine.calls.clear()
    _, files, _, _ = _run(tmp_path / "re", video, dub["dub_segments.tar"],
                          [{"index": 2, "text": "linea nueva y bastante larga"}])
    assert [text for text, _ in engine.calls] == ["linea nueva y bastante larga"]
    old, rate = sf.read(str(tmp_path / "dub" / "out" / "dubbed_mix.wav"), dtype="int16")
    new, _ = sf.read(str(tmp_path / "re" / "work" / "out" / "dubbed_mix.wav"), dtype="int16")
    assert old.shape == new.shape
    keep = np.ones(len(old), bool)
    keep[int(5.5 * rate):int(8.8 * rate)] = False  # line 2's slot, its ramps and its limit
    assert np.array_equal(new[keep], old[keep])
    report = json.loads(files["dub_report.json"].read_text())
    assert report["revoiced"] == [2] and report["reused"] == 3 and report["subtitles"] == "target"
