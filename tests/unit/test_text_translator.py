"""TextTranslator over the guarded LLM (fake primary) and over plain engines; engine choice for
the LLM. No model, no Apertium: the engines are fakes."""
from __future__ import annotations

import pytest

from worker.errors import UnsupportedJob
from worker.stages import mt_guard, translate, translate_apertium, translate_llm
from worker.stages.mt_guard import GuardedEngine
from worker.stages.translate import TextTranslator, choose_engine
from worker.stages.types import Segment


@pytest.fixture(autouse=True)
def no_repair(monkeypatch):
    monkeypatch.setattr(mt_guard, "repair", lambda s, o, sl, tl: (o, []))


class FakeLLM:
    """Scripted primary: answers[text] in order (the last repeats); records calls."""

    name = "llm"

    def __init__(self, answers):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls = []

    def supports(self, source, target):
        return True

    def translate_requests(self, requests, source, target, glossary=None, strict=False):
        out = []
        for r in requests:
            self.calls.append((r.text, r.before, strict))
            queue = self.answers[r.text]
            out.append(queue.pop(0) if len(queue) > 1 else queue[0])
        return out

    def shorten(self, items, source, target):
        return [f"corto {budget}" for _, _, budget in items]


class PlainEngine:
    """A rule-based engine stand-in: upper-cases, records its input."""

    def __init__(self, name="apertium"):
        self.name = name
        self.received = []

    def supports(self, source, target):
        return True

    def translate_texts(self, texts, source, target):
        self.received.append(list(texts))
        return [t.upper() for t in texts]


def seg(i, start, end, text):
    return Segment(index=i, start=start, end=end, text=text)


SENTENCE = [seg(0, 0.0, 1.5, "The meeting starts"), seg(1, 1.6, 3.0, "at 9 tomorrow morning.")]
SOURCE = "The meeting starts at 9 tomorrow morning."


def test_segments_of_one_sentence_share_the_units_engine_and_retry_note():
    llm = FakeLLM({SOURCE: ["", "La reunión empieza mañana a las 9 de la mañana."]})
    translator = TextTranslator(GuardedEngine(llm, PlainEngine()))
    result = translator.translate(SENTENCE, "en", "es")
    assert [c[0] for c in llm.calls] == [SOURCE, SOURCE]  # translated as one unit
    assert [s.index for s in result.segments] == [0, 1]
    assert all(s.engine == "llm" and s.note == "retried: empty" for s in result.segments)
    assert " ".join(s.text for s in result.segments) \
        == "La reunión empieza mañana a las 9 de la mañana."
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 1.5), (1.6, 3.0)]
    assert [s.source_text for s in result.segments] == ["The meeting starts",
                                                        "at 9 tomorrow morning."]
    assert result.engine == "llm" and result.source_language == "en"
    assert result.target_language == "es"


def test_segments_of_a_fallback_unit_carry_the_fallback_engine_and_note():
    llm = FakeLLM({SOURCE: ["", ""]})
    fallback = PlainEngine("apertium")
    result = TextTranslator(GuardedEngine(llm, fallback)).translate(SENTENCE, "en", "es")
    assert all(s.engine == "apertium" and s.note == "fallback: llm empty"
               for s in result.segments)
    assert " ".join(s.text for s in result.segments) == SOURCE.upper()
    assert result.engine == "llm"  # the translator's engine; segments say what really ran


def test_units_are_translated_in_order_with_context():
    segments = [seg(0, 0.0, 1.0, "Hello, Anna."), seg(1, 1.2, 2.0, "Are you ready to go?"),
                seg(2, 2.2, 3.0, "Let us go now.")]
    llm = FakeLLM({"Hello, Anna.": ["Hola, Anna."],
                   "Are you ready to go?": ["¿Estás lista para irte?"],
                   "Let us go now.": ["Vámonos ya."]})
    TextTranslator(GuardedEngine(llm, context=2)).translate(segments, "en", "es")
    assert llm.calls == [
        ("Hello, Anna.", (), False),
        ("Are you ready to go?", (("Hello, Anna.", "Hola, Anna."),), False),
        ("Let us go now.", (("Hello, Anna.", "Hola, Anna."),
                            ("Are you ready to go?", "¿Estás lista para irte?")), False)]


def test_good_units_have_no_note():
    llm = FakeLLM({SOURCE: ["La reunión empieza mañana a las 9 de la mañana."]})
    result = TextTranslator(GuardedEngine(llm)).translate(SENTENCE, "en", "es")
    assert all(s.note == "" and s.engine == "llm" for s in result.segments)


def test_plain_engine_gets_glossary_substituted_input():
    engine = PlainEngine("apertium")
    segments = [seg(0, 0.0, 2.0, "Call Bob at the Office."), seg(1, 2.5, 4.0, "The car is red.")]
    result = TextTranslator(engine, {"office": "despacho"}).translate(segments, "en", "es")
    assert engine.received == [["Call Bob at the despacho.", "The car is red."]]
    assert [s.text for s in result.segments] == ["CALL BOB AT THE DESPACHO.", "THE CAR IS RED."]
    assert all(s.engine == "apertium" and s.note == "" for s in result.segments)


def test_plain_engine_without_glossary_gets_the_text_as_is():
    engine = PlainEngine("argos")
    TextTranslator(engine).translate([seg(0, 0.0, 2.0, "Call Bob at the office.")], "en", "es")
    assert engine.received == [["Call Bob at the office."]]


def test_shorten_goes_to_the_guarded_llm_and_is_none_for_plain_engines():
    guarded = TextTranslator(GuardedEngine(FakeLLM({})))
    assert guarded.shorten([("a", "b c d", 3)], "en", "es") == ["corto 3"]
    assert TextTranslator(PlainEngine()).shorten([("a", "b c d", 3)], "en", "es") is None


# --------------------------------------------------------------------------------------------
# choose_engine with preferred="llm"
# --------------------------------------------------------------------------------------------

def test_llm_preferred_for_an_uncovered_pair_is_unsupported(monkeypatch):
    monkeypatch.setattr(translate_llm, "llm_available", lambda: True)
    with pytest.raises(UnsupportedJob, match="en→ja"):
        choose_engine("en", "ja", preferred="llm")


def test_llm_preferred_without_the_model_is_unsupported(monkeypatch):
    monkeypatch.setattr(translate_llm, "llm_available", lambda: False)
    with pytest.raises(UnsupportedJob, match="LLM"):
        choose_engine("en", "es", preferred="llm")


def test_llm_preferred_gives_a_guarded_engine_with_glossary_and_fallback(monkeypatch):
    monkeypatch.setattr(translate_llm, "llm_available", lambda: True)
    monkeypatch.setattr(translate_apertium.ApertiumEngine, "supports", lambda self, s, t: True)
    glossary = {"office": "despacho"}
    translator = choose_engine("en", "es", preferred="llm", glossary=glossary)
    assert isinstance(translator, TextTranslator) and translator.name == "llm"
    assert isinstance(translator.engine, GuardedEngine)
    assert translator.engine.glossary == glossary and translator.glossary == glossary
    assert translator.engine.fallback.name == "apertium"
    assert translator.engine.context == translate.CONTEXT_BEFORE


def test_same_language_is_identity_even_when_llm_preferred(monkeypatch):
    monkeypatch.setattr(translate_llm, "llm_available", lambda: True)
    translator = choose_engine("es", "es", preferred="llm")
    assert translator.name == "identity"
