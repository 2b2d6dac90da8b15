"""Probing and decoding real media files made with ffmpeg."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.errors import BadMedia
from worker.stages.probe import decode_audio, ffmpeg_exe, probe

pytestmark = pytest.mark.media

GOOD = {  # name: has_video
    "tone.mp4": True, "tone.mkv": True, "tone.webm": True, "tone.mov": True, "tone.avi": True,
    "tone.mp3": False, "tone.wav": False, "tone.flac": False, "tone.m4a": False,
    "tone.ogg": False,
}


def test_ffmpeg_exe_is_runnable():
    assert Path(ffmpeg_exe()).is_file()


@pytest.mark.parametrize("name", sorted(GOOD))
def test_probe_reads_containers(media_dir, name):
    info = probe(media_dir / name)
    assert info.has_audio
    assert info.has_video is GOOD[name]
    assert info.duration == pytest.approx(2.0, abs=0.15)
    assert info.audio_codec and info.sample_rate and info.channels
    if info.has_video:
        assert (info.width, info.height) == (160, 120) and info.video_codec


@pytest.mark.parametrize("name", sorted(GOOD))
def test_decode_audio_gives_mono_16k_float(media_dir, tmp_path, name):
    decoded = decode_audio(media_dir / name, tmp_path / "out.wav")
    samples, rate = sf.read(decoded.wav_path, dtype="float32")
    assert decoded.sample_rate == rate == 16000
    assert samples.ndim == 1
    assert decoded.duration == pytest.approx(len(samples) / 16000)
    assert decoded.duration == pytest.approx(2.0, abs=0.1)
    assert np.sqrt(np.mean(samples ** 2)) > 0.05  # the 440 Hz tone (amplitude 1/8) survived


@pytest.mark.parametrize(("name", "reason"), [
    ("text.mp4", "input is not a media file (could not read container)"),
    ("truncated.mp4", "input is truncated or corrupt"),
    ("empty.mp4", "input is empty (0 bytes)"),
    ("missing.mp4", "input file not found"),
])
def test_broken_inputs_are_bad_media(media_dir, tmp_path, name, reason):
    for call in (lambda: probe(media_dir / name),
                 lambda: decode_audio(media_dir / name, tmp_path / "x.wav")):
        with pytest.raises(BadMedia, match=reason.replace("(", r"\(").replace(")", r"\)")) as err:
            call()
        assert err.value.retryable is False


def test_video_without_audio(media_dir, tmp_path):
    info = probe(media_dir / "silent_video.mp4")
    assert info.has_video and not info.has_audio and info.audio_codec is None
    with pytest.raises(BadMedia, match="input has no audio stream"):
        decode_audio(media_dir / "silent_video.mp4", tmp_path / "x.wav")


def test_silence_decodes_to_zeros(media_dir, tmp_path):
    decoded = decode_audio(media_dir / "silence.wav", tmp_path / "s.wav")
    samples, _ = sf.read(decoded.wav_path, dtype="float32")
    assert decoded.duration == pytest.approx(3.0, abs=0.01)
    assert np.abs(samples).max() == 0.0


def test_truncated_faststart_mp4_is_caught_while_decoding(media_dir, tmp_path):
    """A cut file whose index is at the front opens fine; decoding notices the missing audio."""
    from tests.media.conftest import _lavfi_av, ffmpeg

    whole = tmp_path / "fs.mp4"
    ffmpeg(*_lavfi_av(6), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-movflags", "+faststart", "-shortest", str(whole))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 10])
    assert probe(cut).duration == pytest.approx(6.0, abs=0.2)
    with pytest.raises(BadMedia, match="truncated or corrupt"):
        decode_audio(cut, tmp_path / "cut.wav")
    assert not (tmp_path / "cut.wav").exists()


def test_speech_video(speech_video, tmp_path):
    info = probe(speech_video)
    assert info.has_audio and info.has_video
    decoded = decode_audio(speech_video, tmp_path / "speech.wav")
    assert decoded.duration == pytest.approx(info.duration, abs=0.2)
