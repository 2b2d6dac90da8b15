"""Muxing the dub next to the copied video, checked with PyAV on real ffmpeg-made files."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from worker.errors import BadMedia, JobFailed
from worker.stages.audio import load_audio, write_wav
from worker.stages.ffmpeg import ffmpeg_exe
from worker.stages.mux import choose_container, encode_audio, iso639_2, mux_dubbed_video

pytestmark = pytest.mark.media

SECONDS = 5


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   timeout=120)


def _av_inputs(freq: int = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={SECONDS}",
            "-f", "lavfi", "-i", f"sine=frequency={freq}:duration={SECONDS}"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """5 s sources: h264/aac mp4, vp9/opus webm, and an audio-only m4a; plus the dub (660 Hz)."""
    root = tmp_path_factory.mktemp("mux")
    _ffmpeg(*_av_inputs(), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(root / "in.mp4"))
    _ffmpeg(*_av_inputs(), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
            "-b:v", "200k", "-c:a", "libopus", "-shortest", str(root / "in.webm"))
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}", "-c:a", "aac",
            str(root / "in.m4a"))
    t = np.arange(48000 * SECONDS) / 48000
    dub = np.repeat((0.3 * np.sin(2 * np.pi * 660 * t))[:, None], 2, axis=1).astype(np.float32)
    write_wav(root / "dub.wav", dub, 48000)
    return {"mp4": root / "in.mp4", "webm": root / "in.webm", "m4a": root / "in.m4a",
            "dub": root / "dub.wav", "root": root}


def _video_packets(path: Path) -> list[str]:
    """sha1 of every video packet, in order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [hashlib.sha1(bytes(p)).hexdigest() for p in container.demux(stream) if p.size]


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _dominant_freq(path: Path, track: int) -> float:
    """Strongest frequency of an audio track (decoded with ffmpeg)."""
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:a:{track}", "-ac", "1",
           "-ar", "16000", "-f", "f32le", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    audio = np.frombuffer(raw, "<f4")
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(spectrum)])


def test_mp4_video_is_copied_and_the_dub_is_the_first_default_track(sources, tmp_path):
    out = mux_dubbed_video(sources["mp4"], sources["dub"], tmp_path / "dubbed.mov",
                           language="es", original_language="en")
    assert out == tmp_path / "dubbed.mp4"
    assert _video_packets(out) == _video_packets(sources["mp4"])  # bit-identical: copied
    assert _frame_count(out) == _frame_count(sources["mp4"]) == 25 * SECONDS
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        dub, original = container.streams.audio
        assert video.codec_context.name == "h264"
        assert float(video.duration * video.time_base) == pytest.approx(SECONDS, abs=0.05)
        assert dub.codec_context.name == "aac" and dub.metadata.get("language") == "spa"
        assert original.metadata.get("language") == "eng"
        assert dub.disposition & av.stream.Disposition.default
        assert not original.disposition & av.stream.Disposition.default
    assert _dominant_freq(out, 0) == pytest.approx(660, abs=3)
    assert _dominant_freq(out, 1) == pytest.approx(440, abs=3)


def test_webm_source_goes_to_matroska_with_the_original_opus_copied(sources, tmp_path):
    out = mux_dubbed_video(sources["webm"], sources["dub"], tmp_path / "dubbed.webm")
    assert out.suffix == ".mkv"
    assert _video_packets(out) == _video_packets(sources["webm"])
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert [s.codec_context.name for s in container.streams.audio] == ["aac", "opus"]
        assert container.streams.audio[0].metadata.get("language") == "spa"
    assert _dominant_freq(out, 0) == pytest.approx(660, abs=3)


def _audio_packets(path: Path, track: int) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[track]) if p.size]


def test_an_encoded_dub_is_copied_not_encoded_again(sources, tmp_path):
    """The dubbed_audio.m4a artifact goes into the video as it is: one AAC encode per dub."""
    m4a = encode_audio(sources["dub"], tmp_path / "dub.m4a", language="es")
    out = mux_dubbed_video(sources["mp4"], m4a, tmp_path / "dubbed.mp4", language="es")
    assert _audio_packets(out, 0) == _audio_packets(m4a, 0)
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac", "aac"]
        assert container.streams.audio[0].metadata.get("language") == "spa"
    assert _dominant_freq(out, 0) == pytest.approx(660, abs=3)


def test_dub_only_when_the_original_is_not_kept(sources, tmp_path):
    out = mux_dubbed_video(sources["mp4"], sources["dub"], tmp_path / "dub_only",
                           original_keep=False)
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.video) == 1


def test_audio_only_source_gives_the_dubbed_audio(sources, tmp_path):
    out = mux_dubbed_video(sources["m4a"], sources["dub"], tmp_path / "dubbed.mp4")
    assert out.suffix == ".m4a"
    with av.open(str(out)) as container:
        assert not container.streams.video and len(container.streams.audio) == 1
    assert len(load_audio(out, 16000, channels=1)) / 16000 == pytest.approx(SECONDS, abs=0.1)


@pytest.mark.parametrize("suffix", [".m4a", ".mp3", ".opus", ".wav", ".xyz"])
def test_encode_audio(sources, tmp_path, suffix):
    out = encode_audio(sources["dub"], tmp_path / f"dub{suffix}", language="es")
    assert out.suffix == (suffix if suffix != ".xyz" else ".m4a") and out.stat().st_size > 1000
    assert _dominant_freq(out, 0) == pytest.approx(660, abs=3)


def test_ffmpeg_failure_raises_job_failed_with_its_message(sources, tmp_path):
    with pytest.raises(JobFailed, match="mux failed.*No such file"):
        mux_dubbed_video(sources["mp4"], tmp_path / "missing.wav", tmp_path / "out.mp4")
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_unreadable_source_is_bad_media(tmp_path, sources):
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    with pytest.raises(BadMedia):
        mux_dubbed_video(bogus, sources["dub"], tmp_path / "out.mp4")


def test_container_choice_and_language_tags():
    assert choose_container("h264") == (".mp4", "mp4")
    assert choose_container("vp9") == (".mkv", "matroska")
    assert choose_container("prores") == (".mkv", "matroska")
    assert choose_container(None)[0] == ".m4a"
    tags = [iso639_2(code) for code in ("es", "en-US", "spa", "")]
    assert tags == ["spa", "eng", "spa", "und"]
