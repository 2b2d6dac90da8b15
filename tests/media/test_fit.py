"""Timing fit and mix on real audio: absolute placement, capped speed-up, ducking, loudness."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from worker.stages.audio import integrated_loudness, read_wav, time_stretch, write_wav
from worker.stages.ffmpeg import ffmpeg_exe
from worker.stages.fit import FitOptions, MixOptions, fit_segments, mix_dub, mix_tracks
from worker.stages.tts import synthesize_segments
from worker.stages.tts_engines import EspeakEngine
from worker.stages.types import SynthesizedSegment, TranslatedSegment

pytestmark = pytest.mark.media

SR = 24000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _tone(seconds: float, freq: float = 300.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    """A sine burst."""
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _clip(tmp: Path, index: int, seconds: float, freq: float = 300.0) -> SynthesizedSegment:
    """A synthesized-segment stand-in: a sine burst of `seconds` in a 24 kHz wav."""
    path = write_wav(tmp / f"clip{index}.wav", _tone(seconds, freq), SR)
    return SynthesizedSegment(index, path, seconds, "tone", SR)


def _dominant_freq(audio: np.ndarray, sr: int) -> float:
    """Frequency of the strongest FFT bin."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spectrum)])


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


TIMELINE = [  # (index, start, end): slots of 2 s, 1.5 s, 1 s and 1 s
    TranslatedSegment(0, 0.50, 2.50, "", "a"),
    TranslatedSegment(1, 3.00, 4.50, "", "b"),
    TranslatedSegment(2, 4.60, 5.60, "", "c"),
    TranslatedSegment(3, 5.70, 6.70, "", "d"),
]
DURATION = 7.25


@pytest.fixture()
def fitted(tmp_path):
    """Clips that fit / borrow the gap / need speed-up / overflow at the cap; and a failure."""
    clips = [_clip(tmp_path, 0, 1.5), _clip(tmp_path, 1, 1.8), _clip(tmp_path, 2, 1.2),
             _clip(tmp_path, 3, 3.0)]
    timeline = [*TIMELINE, TranslatedSegment(4, 7.0, 7.2, "", "e")]
    failed = SynthesizedSegment(4, None, 0.0, "", flags=("tts_failed",), error="boom")
    return fit_segments([*clips, failed], timeline, DURATION, FitOptions(sample_rate=48000))


def test_every_clip_starts_at_its_source_start_and_none_overlap(fitted):
    assert len(fitted.voice) == round(DURATION * 48000) and fitted.sample_rate == 48000
    placed = fitted.placed
    for p in placed:
        assert abs(p.placed_start - p.slot_start) < 0.001
    for a, b in zip(placed, placed[1:]):
        assert a.placed_end <= b.slot_start - 0.05 + 1e-3


def test_speed_up_is_capped_and_only_as_much_as_needed(fitted):
    p0, p1, p2, p3, p4 = fitted.placed
    assert p0.speed == 1.0 and p0.flags == ()
    assert p1.speed == pytest.approx(1.8 / 1.55, abs=0.01) and "sped_up" in p1.flags
    assert p1.placed_end == pytest.approx(4.55, abs=0.002)
    assert p2.speed == pytest.approx(1.2 / 1.05, abs=0.01) and "borrowed_gap" in p2.flags
    assert p3.speed == 1.35 and "overflow" in p3.flags
    assert p3.placed_end == pytest.approx(6.95, abs=0.002)
    assert p4.flags == ("tts_failed",) and p4.placed_end == p4.placed_start
    assert max(p.speed for p in fitted.placed) <= 1.35


def test_track_holds_sound_only_where_clips_were_placed(fitted):
    sr, voice = fitted.sample_rate, fitted.voice
    assert _rms(voice[: int(0.49 * sr)]) == 0.0
    p3 = fitted.placed[3]
    assert _rms(voice[int((p3.placed_end + 0.001) * sr):]) == 0.0  # cut at the limit, not later
    assert _rms(voice[int(p3.placed_start * sr):int(p3.placed_end * sr)]) > 0.1
    assert np.abs(voice[int(p3.placed_end * sr) - 5:int(p3.placed_end * sr)]).max() < 0.05  # faded


def test_speed_up_keeps_the_pitch():
    tone = _tone(2.0, 440.0)
    fast = time_stretch(tone, SR, 1.3)
    assert len(fast) == pytest.approx(len(tone) / 1.3, rel=0.02)
    assert _dominant_freq(fast, SR) == pytest.approx(440.0, abs=3.0)


def test_ducking_lowers_the_original_under_speech_only(fitted):
    sr = fitted.sample_rate
    original = np.repeat(_tone(DURATION, 1000.0, sr, 0.2)[:, None], 2, axis=1)
    silent_voice = np.zeros_like(fitted.voice)  # measure the original alone
    mixed = mix_tracks(silent_voice, original, sr, fitted.placed, MixOptions(target_lufs=-20.0))
    assert mixed.shape == original.shape
    under = _rms(mixed[int(1.0 * sr):int(1.9 * sr)])  # inside clip 0 (placed 0.5-2.0 s)
    clear = _rms(mixed[int(7.16 * sr):])  # after the last clip (ends 6.95 s) and its 0.2 s ramp
    assert 20 * np.log10(under / clear) == pytest.approx(-15.0, abs=0.5)


def test_mix_keeps_the_dub_audible_over_the_original_and_hits_the_loudness_target(fitted):
    sr = fitted.sample_rate
    original = _tone(DURATION, 1000.0, sr, 0.5)
    mixed = mix_tracks(fitted.voice, original, sr, fitted.placed)
    assert len(mixed) == len(fitted.voice) and mixed.ndim == 1
    assert integrated_loudness(mixed, sr) == pytest.approx(-16.0, abs=1.0)
    assert np.abs(mixed).max() <= 10 ** (-1 / 20) + 1e-6
    window = mixed[int(1.0 * sr):int(1.5 * sr)]  # under clip 0 the 300 Hz voice dominates
    assert _dominant_freq(window, sr) == pytest.approx(300.0, abs=5.0)


def test_voice_only_mix_has_silence_between_clips(fitted):
    sr = fitted.sample_rate
    mixed = mix_tracks(fitted.voice, _tone(DURATION, 1000.0, sr), sr, fitted.placed,
                       MixOptions(keep_original=False))
    assert _rms(mixed[: int(0.45 * sr)]) == 0.0
    assert integrated_loudness(mixed, sr) == pytest.approx(-16.0, abs=1.0)


def _ffmpeg_loudness(path: Path) -> float:
    """Integrated loudness measured by ffmpeg's ebur128 filter (an independent meter)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128",
           "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(re.findall(r"I:\s+(-?[\d.]+) LUFS", proc.stderr)[-1])


@pytest.fixture(scope="module")
def long_speech_video(tmp_path_factory) -> Path:
    """A test-card mp4 over 7.1 s of real human speech (LibriVox clip 0870)."""
    wav = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
    if not wav.is_file():
        pytest.skip("pocketsphinx-testdata is not installed")
    out = tmp_path_factory.mktemp("fit") / "speech.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=15", "-i", str(wav), "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out)],
                   check=True)
    return out


def test_end_to_end_real_speech_over_a_video_source(tmp_path, long_speech_video):
    from worker.stages.audio import load_audio

    duration = len(load_audio(long_speech_video, 16000, channels=1)) / 16000
    timeline = [TranslatedSegment(0, 0.3, 2.0, "", "Buenos días a todos."),
                TranslatedSegment(1, 2.4, 3.4, "", "La casa es grande y tiene un jardín bonito."),
                TranslatedSegment(2, 4.0, 4.5, "", "Fin."),
                TranslatedSegment(3, 60.0, 61.0, "", "Fuera.")]
    synth = synthesize_segments(timeline, "es", [EspeakEngine()], tmp_path / "tts")
    fit = fit_segments(synth, timeline, duration)
    out = mix_dub(fit, long_speech_video, tmp_path / "dub.wav")
    audio, sr = read_wav(out, mono=False)
    assert sr == 48000 and len(audio) == round(duration * 48000)
    assert all(abs(p.placed_start - p.slot_start) < 0.001 for p in fit.placed[:3])
    assert "sped_up" in fit.placed[1].flags and fit.placed[1].speed <= 1.35
    assert fit.placed[1].placed_end <= 4.0 - 0.05 + 1e-3
    assert "out_of_range" in fit.placed[3].flags
    assert _ffmpeg_loudness(out) == pytest.approx(-16.0, abs=1.0)
