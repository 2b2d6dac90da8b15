"""Media fixtures: short real files made with ffmpeg, real speech, and an isolated model cache."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Argos Translate reads its directories from the environment when first imported and creates
# them at once; point it (and the dubfleet model cache) at a throwaway place before any test
# imports it, so no test touches the real home directory. The joined whisper base model is
# expensive to rebuild, so a caller-provided DUBFLEET_MODEL_DIR is kept.
_SANDBOX = Path(tempfile.mkdtemp(prefix="dubfleet-media-tests-"))
atexit.register(shutil.rmtree, _SANDBOX, ignore_errors=True)
for _var, _sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                   ("XDG_CACHE_HOME", "cache"), ("ARGOS_PACKAGES_DIR", "argos-packages")):
    os.environ[_var] = str(_SANDBOX / _sub)
if not os.environ.get("DUBFLEET_MODEL_DIR"):
    os.environ["DUBFLEET_MODEL_DIR"] = str(_SANDBOX / "models")
    # `make setup` puts Kokoro's native voices (5 MB) into the default cache: copy them in
    _DEFAULT_MODELS = Path.home() / ".cache" / "dubfleet" / "models"
    for _name in ("kokoro-voices-v1.0.npz", "kokoro-voices-v1.0.json"):
        if (_DEFAULT_MODELS / _name).is_file():
            (_SANDBOX / "models").mkdir(parents=True, exist_ok=True)
            shutil.copy2(_DEFAULT_MODELS / _name, _SANDBOX / "models" / _name)
    # and the translation LLM (1.1 GB, joined by setup): linked, not copied
    _LLM = _DEFAULT_MODELS / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if _LLM.is_file():
        (_SANDBOX / "models").mkdir(parents=True, exist_ok=True)
        (_SANDBOX / "models" / _LLM.name).symlink_to(_LLM)
os.environ["HF_HUB_OFFLINE"] = "1"

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
LIBRIVOX_IDS = ("0870", "0880", "0890", "0920", "0930")


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly, failing the test on error."""
    from worker.stages.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=120)


def _lavfi_av(seconds: float) -> list[str]:
    """ffmpeg inputs: a test-card video and a 440 Hz tone."""
    return ["-f", "lavfi", "-i", f"testsrc=size=160x120:rate=15:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]


_VIDEO_RECIPES = {
    "tone.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    "tone.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                 "-c:a", "libvorbis"],
    "tone.webm": ["-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"],
    "tone.mov": ["-c:v", "mpeg4", "-c:a", "aac"],
    "tone.avi": ["-c:v", "mpeg4", "-c:a", "libmp3lame"],
}
_AUDIO_RECIPES = {
    "tone.mp3": ["-c:a", "libmp3lame"],
    "tone.wav": ["-c:a", "pcm_s16le", "-ac", "2", "-ar", "44100"],
    "tone.flac": ["-c:a", "flac"],
    "tone.m4a": ["-c:a", "aac"],
    "tone.ogg": ["-c:a", "libvorbis"],
}


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A folder of 2-second real media files in many containers, plus broken ones."""
    root = tmp_path_factory.mktemp("media")
    for name, codec in _VIDEO_RECIPES.items():
        ffmpeg(*_lavfi_av(2), *codec, "-shortest", str(root / name))
    for name, codec in _AUDIO_RECIPES.items():
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", *codec, str(root / name))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=15:duration=2", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(root / "silent_video.mp4"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(root / "silence.wav"))
    _make_broken(root)
    return root


def _make_broken(root: Path) -> None:
    """Write a text file named .mp4, a truncated mp4 and an empty file."""
    (root / "text.mp4").write_text("This is not a video, just some text.\n" * 20)
    whole = (root / "tone.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: int(len(whole) * 0.3)])
    (root / "empty.mp4").write_bytes(b"")


@pytest.fixture(scope="session")
def speech_video(tmp_path_factory) -> Path:
    """An mp4 with a test-card video and a real human speech track (LibriVox clip 0880)."""
    out = tmp_path_factory.mktemp("speech") / "speech.mp4"
    wav = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-i", str(wav), "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out))
    return out


def librivox_reference(clip_id: str) -> str:
    """The reference transcript of a LibriVox clip (from `.txt` or the shared `transcription`)."""
    stem = f"sense_and_sensibility_01_austen_64kb-{clip_id}"
    txt = LIBRIVOX / f"{stem}.txt"
    if txt.is_file():
        return txt.read_text().strip()
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.rstrip().endswith(f"({stem})"):
            return line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip()
    raise LookupError(stem)


@pytest.fixture(scope="session")
def librivox_clips() -> list[tuple[Path, str]]:
    """The five LibriVox clips with their reference transcripts."""
    if not LIBRIVOX.is_dir():
        pytest.skip("pocketsphinx-testdata is not installed")
    return [(LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{i}.wav", librivox_reference(i))
            for i in LIBRIVOX_IDS]


@pytest.fixture(scope="session")
def spanish_speech(tmp_path_factory) -> Path:
    """Synthetic Spanish speech from espeak-ng (no human Spanish recording ships anywhere)."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("es") / "spanish.wav"
    text = ("Buenos días. Hoy vamos a hablar de la historia de la ciudad y de sus habitantes. "
            "La casa es grande y tiene un jardín muy bonito. Mañana iremos al mercado.")
    subprocess.run(["espeak-ng", "-v", "es", "-s", "140", "-w", str(out), text], check=True,
                   timeout=60)
    return out
