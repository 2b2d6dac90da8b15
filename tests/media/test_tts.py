"""TTS engines with their real models, and the stage's per-segment fault isolation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from worker.errors import JobCancelled
from worker.stages.tts import (
    default_chain,
    get_engine,
    speaker_reference,
    synthesize_segments,
    voice_text,
)
from worker.stages.tts_engines import (
    CoquiEngine,
    EngineUnavailable,
    EspeakEngine,
    KokoroEngine,
    PiperEngine,
    split_text,
)
from worker.stages.types import TranslatedSegment

pytestmark = pytest.mark.media

ES_TEXT = "Hola, ¿cómo estás? Hoy vamos a hablar de la historia de la ciudad."
EN_TEXT = "Hello, how are you? Today we will talk about the history of the city."
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _assert_speech(path: Path, duration: float, rate: int, text: str) -> None:
    """A non-silent mono wav at `rate` whose length suits the text (5-25 characters a second)."""
    info = sf.info(str(path))
    audio, _ = sf.read(str(path), dtype="float32")
    assert info.samplerate == rate and info.channels == 1
    assert duration == pytest.approx(info.frames / rate, abs=1e-3)
    assert len(text) / 25 < duration < len(text) / 5
    assert np.sqrt(np.mean(audio ** 2)) > 0.01


def _segments(*texts: str) -> list[TranslatedSegment]:
    """Translated segments 3 s apart."""
    return [TranslatedSegment(i, 3.0 * i, 3.0 * i + 2.5, "", text) for i, text in enumerate(texts)]


def test_kokoro_speaks_spanish(tmp_path):
    engine = get_engine("kokoro")
    assert isinstance(engine, KokoroEngine) and engine.supports("es") and not engine.supports("ja")
    out = tmp_path / "kokoro.wav"
    _assert_speech(out, engine.synthesize(ES_TEXT, "es", out), 24000, ES_TEXT)


def test_piper_speaks_english(tmp_path):
    engine = get_engine("piper")
    assert isinstance(engine, PiperEngine)
    assert engine.supports("en-US") and not engine.supports("es")
    out = tmp_path / "piper.wav"
    _assert_speech(out, engine.synthesize(EN_TEXT, "en", out), 22050, EN_TEXT)


def test_espeak_speaks_spanish(tmp_path):
    engine = EspeakEngine()
    assert engine.supports("spa") and engine.supports("zh") and not engine.supports("xx")
    out = tmp_path / "espeak.wav"
    _assert_speech(out, engine.synthesize(ES_TEXT, "es", out), 22050, ES_TEXT)


def test_default_chain_orders_engines_by_language(monkeypatch):
    monkeypatch.delenv("DUBFLEET_COQUI_MODEL_DIR", raising=False)
    assert [e.name for e in default_chain("es")] == ["kokoro", "espeak"]
    assert [e.name for e in default_chain("en")] == ["piper", "espeak"]
    assert [e.name for e in default_chain("de")] == ["espeak"]
    assert get_engine("espeak") is get_engine("espeak")


# --- Coqui: a tiny model built and saved in Coqui's own format, loaded through its real API ---

def _coqui_or_skip():
    """Import Coqui TTS or skip with the reason it cannot be imported here."""
    try:
        import TTS.api  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"coqui-tts cannot be imported: {' '.join(str(exc).split())[:300]}")


@pytest.fixture(scope="module")
def tiny_coqui_model(tmp_path_factory) -> Path:
    """A random-weight character-based VITS, saved as Coqui's trainer saves: config.json + .pth."""
    _coqui_or_skip()
    import torch
    from trainer.io import save_model
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_heads_text_encoder=2,
        num_layers_text_encoder=1, num_layers_posterior_encoder=1, num_layers_flow=1,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 8, 4], upsample_kernel_sizes_decoder=[16, 16, 8],
        upsample_initial_channel_decoder=16, use_sdp=False, init_discriminator=False,
        length_scale=2.0,  # about 13 characters a second from the untrained duration predictor
    )
    config = VitsConfig(
        model_args=args, audio=BaseAudioConfig(sample_rate=16000, hop_length=256, win_length=1024),
        use_phonemes=False, phoneme_language="es", text_cleaner="multilingual_cleaners",
        run_name="dubfleet-tiny", test_sentences=[],
    )
    torch.manual_seed(0)
    model = Vits(config)
    out = tmp_path_factory.mktemp("coqui")
    model.config.save_json(str(out / "config.json"))
    save_model(model.config, model, out / "model.pth", current_step=0, epoch=0)
    return out


def test_tiny_coqui_model_loads_and_speaks_through_coqui(tiny_coqui_model, tmp_path):
    from TTS.utils.synthesizer import Synthesizer

    assert json.loads((tiny_coqui_model / "config.json").read_text())["model"] == "vits"
    engine = CoquiEngine(tiny_coqui_model)
    assert engine.supports("es") and not engine.is_xtts
    out = tmp_path / "coqui.wav"
    text = "Hola, esto es una prueba corta."
    duration = engine.synthesize(text, "es", out)
    audio, sr = sf.read(str(out), dtype="float32")
    assert sr == 16000 and len(audio) == pytest.approx(duration * sr, abs=1)
    assert 0.2 < duration < 10.0 and np.abs(audio).max() > 0
    # Coqui's lower-level loading path reads the same files
    synth = Synthesizer(tts_checkpoint=tiny_coqui_model / "model.pth",
                        tts_config_path=tiny_coqui_model / "config.json")
    assert len(synth.tts(text, split_sentences=False)) > 0


def test_configured_coqui_model_leads_the_default_chain(tiny_coqui_model, monkeypatch):
    monkeypatch.setenv("DUBFLEET_COQUI_MODEL_DIR", str(tiny_coqui_model))
    assert [e.name for e in default_chain("es")] == ["coqui", "kokoro", "espeak"]


def test_missing_coqui_model_is_unavailable_not_fatal(tmp_path):
    engine = CoquiEngine(tmp_path / "nothing-here")
    assert not engine.supports("es")
    with pytest.raises(EngineUnavailable):
        engine.synthesize("hola", "es", tmp_path / "x.wav")


# --- fault isolation ---

class FailingEngine:
    """An engine that always raises (counts its calls)."""

    name = "failing"
    max_chars = 200
    languages = frozenset()

    def __init__(self, fail_times: int = 10**9, exc: type[Exception] = RuntimeError):
        self.calls = 0
        self.fail_times = fail_times
        self.exc = exc

    def supports(self, lang: str) -> bool:
        return True

    def synthesize(self, text, lang, out_wav, voice=None, speaker_wav=None) -> float:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.exc("boom")
        return EspeakEngine().synthesize(text, lang, out_wav)


class RecordingEngine(EspeakEngine):
    """espeak-ng with a small max_chars that records the chunks it was given."""

    name = "recording"
    max_chars = 60

    def __init__(self):
        super().__init__()
        self.chunks: list[str] = []

    def synthesize(self, text, lang, out_wav, voice=None, speaker_wav=None) -> float:
        self.chunks.append(text)
        return super().synthesize(text, lang, out_wav, voice, speaker_wav)


def test_failing_engine_is_retried_then_next_engine_voices_the_segment(tmp_path):
    failing = FailingEngine()
    done = []
    results = synthesize_segments(_segments("Hola a todos.", "Buenas noches."), "es",
                                  [failing, EspeakEngine()], tmp_path,
                                  on_done=lambda r, n, total: done.append((r.index, n, total)))
    assert failing.calls == 4  # each segment: first try + one retry
    assert [r.engine for r in results] == ["espeak", "espeak"]
    assert all(r.flags == ("tts_fallback",) and "boom" in r.error for r in results)
    assert all(r.wav_path.is_file() and r.duration > 0.3 for r in results)
    assert done == [(0, 1, 2), (1, 2, 2)]


def test_a_retry_that_succeeds_keeps_the_engine(tmp_path):
    flaky = FailingEngine(fail_times=1)
    [result] = synthesize_segments(_segments("Hola."), "es", [flaky, EspeakEngine()], tmp_path)
    assert result.engine == "failing" and result.flags == ("tts_retried",)


def test_all_engines_failing_leaves_flagged_silence(tmp_path):
    segments = _segments("Hola.", "", "Adiós.")
    results = synthesize_segments(segments, "es", [FailingEngine()], tmp_path)
    assert [r.flags for r in results] == [("tts_failed",), ("empty",), ("tts_failed",)]
    assert results[0].wav_path is None and results[0].duration == 0.0 and "boom" in results[0].error
    assert not list(tmp_path.glob("*.wav"))


def test_unavailable_engine_is_dropped_for_the_rest_of_the_job(tmp_path):
    broken = FailingEngine(exc=EngineUnavailable)
    results = synthesize_segments(_segments("Uno.", "Dos.", "Tres."), "es",
                                  [broken, EspeakEngine()], tmp_path)
    assert broken.calls == 1 and {r.engine for r in results} == {"espeak"}


def test_check_stops_the_job_between_segments(tmp_path):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        synthesize_segments(_segments("Uno.", "Dos.", "Tres."), "es", [EspeakEngine()], tmp_path,
                            check=check)
    assert len(list(tmp_path.glob("seg_*.wav"))) == 1


def test_long_text_is_split_under_max_chars_and_joined(tmp_path):
    text = ("La casa es grande y tiene un jardín muy bonito, con árboles, flores y una fuente. "
            "Mañana iremos al mercado para comprar fruta, pan y queso. ¿Vienes con nosotros?")
    engine = RecordingEngine()
    duration, rate = voice_text(engine, text, "es", tmp_path / "long.wav")
    assert len(engine.chunks) >= 3 and all(len(c) <= 60 for c in engine.chunks)
    assert " ".join(engine.chunks) == " ".join(text.split())
    assert rate == 22050 and duration == pytest.approx(sf.info(str(tmp_path / "long.wav")).duration)
    assert not list(tmp_path.glob("*.part*"))


def test_speaker_reference_cuts_source_speech(tmp_path):
    clip = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"
    if not clip.is_file():
        pytest.skip("pocketsphinx-testdata is not installed")
    segments = [TranslatedSegment(0, 0.5, 3.0, "", "a"), TranslatedSegment(1, 3.5, 6.5, "", "b")]
    ref = speaker_reference(clip, segments, tmp_path / "ref.wav", seconds=8.0)
    info = sf.info(str(ref))
    assert info.samplerate == 22050 and info.duration == pytest.approx(5.5, abs=0.01)
    assert speaker_reference(clip, [], tmp_path / "none.wav") is None


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("Uno. Dos. Tres.", 100, ["Uno. Dos. Tres."]),
    ("Primera frase larga. Segunda frase.", 25, ["Primera frase larga.", "Segunda frase."]),
    ("uno, dos, tres, cuatro", 10, ["uno, dos,", "tres,", "cuatro"]),
    ("palabras sin puntuación alguna aquí", 12, ["palabras sin", "puntuación", "alguna aquí"]),
    ("abcdefghij", 4, ["abcd", "efgh", "ij"]),
    ("   ", 10, []),
])
def test_split_text(text, limit, expected):
    assert split_text(text, limit) == expected
