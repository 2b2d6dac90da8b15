"""Translation: sentence-aware splitting, Apertium, a real Argos package, whisper translate."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.media.argos_builder import build_argos_package
from worker import models as registry
from worker.errors import UnsupportedJob
from worker.models_cli import models
from worker.stages.translate import (
    IdentityEngine, TextTranslator, choose_engine, group_sentences, split_proportionally,
)
from worker.stages.translate_apertium import ApertiumEngine, apertium_pairs
from worker.stages.translate_argos import ArgosEngine, argos_pairs, import_argos_package
from worker.stages.types import Segment

pytestmark = pytest.mark.media

needs_apertium = pytest.mark.skipif(
    not shutil.which("apertium") or ("en", "es") not in apertium_pairs(),
    reason="apertium with apertium-eng-spa is not installed")


def segs(*texts: str, gap: float = 0.1) -> list[Segment]:
    """Segments one second long each, `gap` apart."""
    out, t = [], 0.0
    for i, text in enumerate(texts):
        out.append(Segment(index=i, start=t, end=t + 1.0, text=text))
        t += 1.0 + gap
    return out


SPLIT_SENTENCE = segs("The house is red and", "the cat sleeps on the", "warm sofa.", "Good night!")


def test_sentence_units_join_mid_sentence_segments():
    units = group_sentences(SPLIT_SENTENCE)
    assert [[s.index for s in unit] for unit in units] == [[0, 1, 2], [3]]
    long_pause = segs("no punctuation here", "still none", gap=3.0)
    assert len(group_sentences(long_pause)) == 2


def test_identity_resplit_restores_every_segment():
    translation = TextTranslator(IdentityEngine()).translate(SPLIT_SENTENCE, "en", "en")
    assert [s.text for s in translation.segments] == [s.text for s in SPLIT_SENTENCE]
    assert [(s.index, s.start, s.end) for s in translation.segments] == \
        [(s.index, s.start, s.end) for s in SPLIT_SENTENCE]


def test_split_proportionally():
    assert split_proportionally("uno dos tres cuatro cinco seis", [2, 4]) == \
        ["uno dos", "tres cuatro cinco seis"]
    assert split_proportionally("a b", [1, 1, 1]) == ["a", "", "b"]
    assert split_proportionally("a b c", [5, 0, 5]) == ["a b", "", "c"]
    assert split_proportionally("今日は良い天気です", [1, 2], by_chars=True) == ["今日は", "良い天気です"]


def test_identity_when_languages_match():
    assert choose_engine("fr", "fr").name == "identity"


@needs_apertium
def test_apertium_english_to_spanish():
    [text] = ApertiumEngine().translate_texts(["Hello, how are you?"], "en", "es")
    assert "Hola" in text


@needs_apertium
def test_apertium_batch_keeps_segments_and_timings():
    numbered = [f"The house number {i} is red." for i in range(40)]
    many = segs(*numbered, *(s.text for s in SPLIT_SENTENCE))
    translation = TextTranslator(ApertiumEngine()).translate(many, "en", "es")
    assert len(translation.segments) == len(many)
    assert [(s.start, s.end) for s in translation.segments] == [(s.start, s.end) for s in many]
    assert all("casa" in s.text for s in translation.segments[:40])
    assert all(s.text for s in translation.segments) and translation.engine == "apertium"


@needs_apertium
def test_explicit_engine_choice():
    assert choose_engine("en", "es", preferred="apertium").name == "apertium"
    with pytest.raises(UnsupportedJob, match="whisper translate"):
        choose_engine("en", "es", preferred="whisper")
    with pytest.raises(UnsupportedJob, match="unknown translation engine"):
        choose_engine("en", "es", preferred="deepl")


def test_unsupported_pair_explains_how_to_fix():
    with pytest.raises(UnsupportedJob, match=r"no translation engine covers en→ja on this "
                                             r"worker; install an Argos package"):
        choose_engine("en", "ja")


@pytest.fixture(scope="module")
def argos_files(tmp_path_factory):
    """Two real .argosmodel files: en→es (dictionary model) and es→fr (copy model)."""
    out = tmp_path_factory.mktemp("argos")
    return (build_argos_package(out / "en_es.argosmodel"),
            build_argos_package(out / "es_fr.argosmodel", "es", "fr", "Spanish", "French"))


@pytest.fixture(scope="module")
def argos_installed(argos_files):
    """Install en→es through Argos's own import path and es→fr through `worker models import`."""
    en_es, es_fr = argos_files
    info = import_argos_package(en_es)
    assert (info.from_code, info.to_code) == ("en", "es")
    result = CliRunner().invoke(models, ["import", str(es_fr)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "imported Argos package es→fr" in result.output
    return argos_pairs()


def test_argos_packages_installed_in_sandbox(argos_installed):
    import argostranslate.settings

    assert argos_installed == [("en", "es"), ("es", "fr")]
    packages = Path(argostranslate.settings.package_data_dir)
    assert packages == Path(os.environ["ARGOS_PACKAGES_DIR"])
    assert Path.home() not in packages.parents


def test_argos_translates_through_real_package(argos_installed):
    texts = ArgosEngine().translate_texts(["hello world.", "The good dog is in the house!"],
                                          "en", "es")
    assert texts == ["hola mundo.", "The bueno perro is in the casa!"]


def test_argos_translates_segments_and_keeps_timings(argos_installed):
    translator = choose_engine("en", "es", preferred="argos")
    assert translator.name == "argos"
    source = segs("hello world, the good", "dog is in the house.", "Water!")
    translation = translator.translate(source, "en", "es")
    assert [s.text for s in translation.segments] == ["hola mundo, the bueno",
                                                      "perro is in the casa.", "Water!"]
    assert [(s.index, s.start, s.end) for s in translation.segments] == \
        [(s.index, s.start, s.end) for s in source]


def test_argos_pivots_through_an_intermediate_language(argos_installed):
    translator = choose_engine("en", "fr", preferred="argos")
    assert translator.name == "argos"
    [segment] = translator.translate(segs("hello world."), "en", "fr").segments
    assert segment.text == "hola mundo."


def test_argos_pairs_are_advertised(argos_installed):
    registry.refresh()
    info = registry.advertise()
    assert {"argos:en-es", "argos:es-fr"} <= set(info["engines"])
    assert {"es", "fr"} <= set(info["target_languages"])


def test_cli_lists_imported_packages(argos_installed):
    result = CliRunner().invoke(models, ["list"], catch_exceptions=False)
    rows = [line.split() for line in result.output.splitlines()]
    assert ["translation", "en-es", "argos", "argos", "ready"] in rows


def test_import_rejects_non_packages(tmp_path):
    bogus = tmp_path / "bogus.argosmodel"
    bogus.write_text("not a zip")
    result = CliRunner().invoke(models, ["import", str(bogus)])
    assert result.exit_code == 1 and "not an Argos package" in result.output


def test_whisper_translates_spanish_audio_onto_source_segments(spanish_speech, tmp_path):
    from worker.stages.probe import decode_audio
    from worker.stages.transcribe import transcribe

    audio = decode_audio(spanish_speech, tmp_path / "es16k.wav")
    transcript = transcribe(audio, "es", model="base")
    translator = choose_engine("es", "en", preferred="whisper", audio=audio)
    translation = translator.translate(transcript.segments, "es", "en")
    assert translation.engine == "whisper-translate"
    assert [(s.start, s.end) for s in translation.segments] == \
        [(s.start, s.end) for s in transcript.segments]
    text = " ".join(s.text for s in translation.segments).lower()
    assert any(word in text for word in ("house", "market", "garden", "morning"))
