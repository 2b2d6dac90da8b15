"""Machine-translation output checks, glossary substitution, the guarded LLM engine (retry,
fallback, context) and the Apertium-based repair of copied source words; all with fakes except
the few repair tests that use the installed Apertium (skipped where it is missing)."""
from __future__ import annotations

import shutil

import pytest

from worker.stages import mt_guard
from worker.stages.mt_guard import (
    GuardedEngine,
    Rendered,
    apply_glossary,
    language_scores,
    likely_language,
    problem,
)
from worker.stages.translate_llm import Request


# --------------------------------------------------------------------------------------------
# problem(): one test per reason, then acceptable translations
# --------------------------------------------------------------------------------------------

MEETING = "The meeting starts at 9 tomorrow."


@pytest.mark.parametrize("output", ["", "   ", "...", "¿?", "123"])
def test_output_without_words_is_empty(output):
    assert problem("Hello there, my friend.", output, "en", "es") == "empty"


@pytest.mark.parametrize("source", ["♪ ♪", "1999", "...", ""])
def test_source_without_words_needs_nothing(source):
    assert problem(source, "", "en", "es") is None
    assert problem(source, "whatever the model said", "en", "es") is None


def test_output_equal_to_source_is_untranslated():
    source = "The meeting starts at 9 a.m. tomorrow morning."
    assert problem(source, source, "en", "es") == "untranslated"


def test_untranslated_ignores_case_and_punctuation():
    assert problem("The Meeting starts NOW, everyone!", "the meeting starts now everyone",
                   "en", "es") == "untranslated"


def test_short_source_repeated_is_accepted():
    # under 12 characters a copy is often right (names, "OK", interjections)
    assert problem("Hi Tom.", "Hi Tom.", "en", "es") is None
    assert problem("OK, Tom.", "OK, Tom.", "en", "es") is None


def test_english_output_for_english_to_spanish_is_still_source_language():
    out = "The meeting is at 9 in the morning, and it will be for you."
    assert problem("The meeting starts at 9 a.m. tomorrow morning.", out, "en", "es") \
        == "still_source_language"


def test_english_paraphrase_is_still_source_language():
    source = "Good morning everyone, and thank you all so much for joining us today."
    assert problem(source, "Good morning and thanks for coming.", "en", "es") \
        == "still_source_language"


def test_french_output_for_english_to_spanish_is_wrong_language():
    out = "La réunion commence demain à 9 heures du matin."
    assert problem("The meeting starts at 9 a.m. tomorrow morning.", out, "en", "es") \
        == "wrong_language"


def test_spanish_output_for_english_to_french_is_wrong_language():
    out = "No sé lo que quieres decir con eso."
    assert problem("I do not know what you mean by that.", out, "en", "fr") == "wrong_language"


def test_output_far_longer_than_source_is_too_long():
    source = "Thanks for coming today."  # 24 characters
    out = ("Muchas gracias por haber venido hoy hasta aquí, de verdad que os lo agradecemos "
           "muchísimo a todos vosotros")
    assert len(out) / len(source) > mt_guard.MAX_RATIO
    assert problem(source, out, "en", "es") == "too_long"


def test_output_far_shorter_than_source_is_too_short():
    source = "The meeting starts at nine tomorrow morning."
    assert problem(source, "Sí", "en", "es") == "too_short"


def test_length_ratio_bounds_are_inclusive():
    source = "a" * 10 + " " + "b" * 9  # 20 characters, no stop words
    assert problem(source, "x" * 8, "en", "es") is None  # ratio 0.4
    assert problem(source, "x" * 7, "en", "es") == "too_short"
    assert problem(source, "x" * 52, "en", "es") is None  # ratio 2.6
    assert problem(source, "x" * 53, "en", "es") == "too_long"


def test_short_sources_skip_the_length_check():
    assert problem("Go!", "¡Vamos, vamos, vamos ya, rápido!", "en", "es") is None
    assert problem("Okay, okay, okay...", "Vale.", "en", "es") is None  # 19 characters


def test_dropped_number_is_number_lost():
    assert problem("The meeting starts at 9 a.m.", "La reunión empieza por la mañana",
                   "en", "es") == "number_lost"


def test_one_of_several_numbers_dropped_is_number_lost():
    assert problem("We sold 3 cars and 12 bikes last week.",
                   "Vendimos coches y 12 bicicletas la semana pasada.", "en", "es") == "number_lost"


def test_glossary_term_not_rendered_is_glossary_ignored():
    glossary = {"office": "despacho"}
    assert problem("Call Bob at the office now.", "Llama ahora a Bob en la oficina.",
                   "en", "es", glossary) == "glossary_ignored"


def test_glossary_rendering_is_checked_case_insensitively():
    glossary = {"office": "despacho"}
    assert problem("Call Bob at the Office now.", "Llama ahora a Bob en el Despacho.",
                   "en", "es", glossary) is None


def test_glossary_term_absent_from_source_is_not_required():
    glossary = {"office": "despacho", "offices": "oficinas centrales"}
    assert problem("Call Bob at the office now.", "Llama ahora a Bob en el despacho.",
                   "en", "es", glossary) is None
    # "officer" is not the whole word "office"
    assert problem("Call the officer now, please.", "Llama al agente ahora, por favor.",
                   "en", "es", glossary) is None


def test_extra_sentence_is_added_sentence():
    assert problem(MEETING, "La reunión empieza mañana a las 9. Hasta luego.", "en", "es") \
        == "added_sentence"


def test_unpunctuated_source_allows_one_sentence():
    source = "The meeting starts at 9 tomorrow"
    assert problem(source, "La reunión empieza mañana a las 9.", "en", "es") is None
    assert problem(source, "La reunión empieza mañana a las 9. Venid.", "en", "es") \
        == "added_sentence"


def test_as_many_sentences_as_the_source_is_fine():
    assert problem("Wait. Stop. Listen to me now!", "Espera. Para. ¡Escúchame ahora!",
                   "en", "es") is None


def test_checks_run_in_order_empty_before_everything():
    assert problem(MEETING, "", "en", "es", {"meeting": "reunión"}) == "empty"


@pytest.mark.parametrize("source,output,target", [
    ("The meeting starts at 9 a.m.", "La reunión empieza a las 9 de la mañana", "es"),
    ("The meeting starts at 9 tomorrow.", "La reunión empieza mañana a las 9.", "es"),
    ("We sold 3 cars and 12 bikes last week.",
     "Vendimos 3 coches y 12 bicicletas la semana pasada.", "es"),
    ("See you at 10:30 in the lobby, okay?", "Nos vemos a las 10:30 en el vestíbulo, ¿vale?", "es"),
    ("Where is the train station, please?", "¿Dónde está la estación de tren, por favor?", "es"),
    ("She has two brothers and a sister.", "Ella tiene dos hermanos y una hermana.", "es"),
    ("Hello there, how are you doing today?", "Hola, ¿cómo estás hoy?", "es"),
    ("Good morning everyone, and thank you all so much for joining us today.",
     "Buenos días a todos y muchas gracias por acompañarnos hoy.", "es"),
    ("We sold 3 cars and 12 bikes last week.",
     "Nous avons vendu 3 voitures et 12 vélos la semaine dernière.", "fr"),
    ("I do not know what you mean by that.", "Je ne sais pas ce que tu veux dire par là.", "fr"),
    ("Where is the train station, please?", "Où est la gare, s'il vous plaît ?", "fr"),
    ("The meeting starts at 9 a.m.", "La réunion commence à 9 heures.", "fr"),
    ("Yes.", "Sí.", "es"),
    ("I love you.", "Te quiero.", "es"),
    ("Thanks!", "¡Gracias!", "es"),
    ("Okay", "Vale", "es"),
])
def test_good_translations_pass(source, output, target):
    assert problem(source, output, "en", target) is None


def test_good_translation_with_glossary_passes():
    assert problem("Welcome to the Dark Forest, traveller.",
                   "Bienvenido al Bosque Oscuro, viajero.", "en", "es",
                   {"Dark Forest": "Bosque Oscuro"}) is None


# --------------------------------------------------------------------------------------------
# language_scores / likely_language
# --------------------------------------------------------------------------------------------

def test_language_scores_are_shares_of_common_words():
    scores = language_scores("the cat is on the mat")
    assert set(scores) == set(mt_guard.STOPWORDS)
    assert scores["en"] == pytest.approx(4 / 6)  # the, is, on, the
    assert scores["es"] == 0.0


def test_language_scores_are_case_insensitive():
    assert language_scores("THE CAT IS ON THE MAT") == language_scores("the cat is on the mat")


@pytest.mark.parametrize("text", ["", "123 456", "... !!"])
def test_language_scores_without_words_are_empty(text):
    assert language_scores(text) == {}


@pytest.mark.parametrize("text,lang", [
    ("The meeting is at 9 in the morning, and it will be for you.", "en"),
    ("No sé lo que quieres decir con eso.", "es"),
    ("La casa es muy grande y bonita.", "es"),
    ("Je ne sais pas ce que tu veux dire.", "fr"),
    ("Il est parti avec sa femme.", "fr"),
    ("Das ist nicht mein Auto, sondern sein Auto und ich.", "de"),
])
def test_likely_language(text, lang):
    assert likely_language(text) == lang


@pytest.mark.parametrize("text", ["Hola", "The cat", "Hola amigo mío", "", "1 2 3 4 5"])
def test_likely_language_of_short_text_is_none(text):
    assert likely_language(text) is None


def test_likely_language_min_words_is_adjustable():
    assert likely_language("the cat is") is None
    assert likely_language("the cat is", min_words=3) == "en"


def test_likely_language_without_common_words_is_none():
    assert likely_language("Zorblax quintuples marmalade vortices") is None


# --------------------------------------------------------------------------------------------
# apply_glossary
# --------------------------------------------------------------------------------------------

def test_apply_glossary_replaces_whole_words_any_case():
    out = apply_glossary("The office, OFFICE and Office are closed; officers are not.",
                         {"office": "despacho"})
    assert out == "The despacho, despacho and despacho are closed; officers are not."


def test_apply_glossary_multiword_terms():
    out = apply_glossary("The Dark Forest is dark. dark forest! darkforest",
                         {"dark forest": "Bosque Oscuro"})
    assert out == "The Bosque Oscuro is dark. Bosque Oscuro! darkforest"


def test_apply_glossary_terms_with_regex_characters():
    assert apply_glossary("c++ is fun", {"c++": "C más más"}) == "C más más is fun"


def test_apply_glossary_without_hits_or_glossary_is_unchanged():
    assert apply_glossary("Nothing to see here.", {"office": "despacho"}) == "Nothing to see here."
    assert apply_glossary("Nothing to see here.", {}) == "Nothing to see here."


def test_apply_glossary_several_terms():
    out = apply_glossary("Ask Mr Smith at the office.", {"Mr Smith": "el Sr. Smith",
                                                          "office": "despacho"})
    assert out == "Ask el Sr. Smith at the despacho."


# --------------------------------------------------------------------------------------------
# GuardedEngine with a scripted primary and a fake fallback
# --------------------------------------------------------------------------------------------

class FakeLLM:
    """Scripted primary: `answers[text]` is the list of answers given for that text, in order
    (the last one repeats). Records every call."""

    name = "llm"

    def __init__(self, answers: dict[str, list[str]], pairs=(("en", "es"), ("en", "fr"))):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.pairs = set(pairs)
        self.calls: list[dict] = []
        self.shorten_calls: list = []

    def supports(self, source, target):
        return (source, target) in self.pairs

    def translate_requests(self, requests, source, target, glossary=None, strict=False):
        out = []
        for r in requests:
            self.calls.append({"text": r.text, "before": r.before, "strict": strict,
                               "glossary": dict(glossary or {}), "pair": (source, target)})
            queue = self.answers[r.text]
            out.append(queue.pop(0) if len(queue) > 1 else queue[0])
        return out

    def shorten(self, items, source, target):
        self.shorten_calls.append((list(items), source, target))
        return [f"short {i}" for i, _ in enumerate(items)]


class FakeFallback:
    """A plain TextEngine recording what it was given."""

    def __init__(self, name="apertium", supported=True, prefix="FB:"):
        self.name = name
        self.supported = supported
        self.prefix = prefix
        self.received: list[tuple[list[str], str, str]] = []

    def supports(self, source, target):
        return self.supported

    def translate_texts(self, texts, source, target):
        self.received.append((list(texts), source, target))
        return [f"{self.prefix} {t}" for t in texts]


@pytest.fixture
def no_repair(monkeypatch):
    """Repair is a no-op (the logic tests must not depend on Apertium); records its calls."""
    calls = []

    def fake(source, output, source_lang, target_lang):
        calls.append((source, output, source_lang, target_lang))
        return output, []

    monkeypatch.setattr(mt_guard, "repair", fake)
    return calls


GOOD = "La reunión empieza mañana a las 9."
BAD_EN = "The meeting is at 9 in the morning, and it will be for you."
BAD_FR = "La réunion commence demain à 9 heures du matin."


def test_good_answer_is_kept_without_note(no_repair):
    llm = FakeLLM({MEETING: [GOOD]})
    engine = GuardedEngine(llm, FakeFallback())
    [result] = engine.render([Request(MEETING)], "en", "es")
    assert result == Rendered(GOOD, "llm", "")
    assert len(llm.calls) == 1 and llm.calls[0]["strict"] is False
    assert engine.fallback.received == []


def test_bad_first_answer_is_retried_strictly_and_kept(no_repair):
    llm = FakeLLM({MEETING: ["", GOOD]})
    engine = GuardedEngine(llm, FakeFallback())
    [result] = engine.render([Request(MEETING)], "en", "es")
    assert result == Rendered(GOOD, "llm", "retried: empty")
    assert [c["strict"] for c in llm.calls] == [False, True]
    assert engine.fallback.received == []


def test_retry_note_names_the_first_answers_problem(no_repair):
    llm = FakeLLM({MEETING: [BAD_FR, GOOD]})
    [result] = GuardedEngine(llm, FakeFallback()).render([Request(MEETING)], "en", "es")
    assert result.note == "retried: wrong_language" and result.text == GOOD


def test_retry_gets_the_same_context_as_the_first_try(no_repair):
    first = "Hello there, my friend."
    llm = FakeLLM({first: ["Hola, amigo mío."], MEETING: [BAD_EN, GOOD]})
    engine = GuardedEngine(llm, FakeFallback())
    engine.render([Request(first), Request(MEETING)], "en", "es")
    retry_calls = [c for c in llm.calls if c["text"] == MEETING]
    assert [c["strict"] for c in retry_calls] == [False, True]
    assert retry_calls[0]["before"] == retry_calls[1]["before"] == ((first, "Hola, amigo mío."),)


def test_bad_twice_falls_back_with_glossary_substituted_source(no_repair):
    source = "Call Bob at the office at 9 tomorrow."
    glossary = {"office": "despacho"}
    llm = FakeLLM({source: [BAD_EN, BAD_FR]})
    fallback = FakeFallback("apertium")
    engine = GuardedEngine(llm, fallback, glossary)
    [result] = engine.render([Request(source)], "en", "es")
    assert result == Rendered("FB: Call Bob at the despacho at 9 tomorrow.", "apertium",
                              "fallback: llm still_source_language")
    assert fallback.received == [(["Call Bob at the despacho at 9 tomorrow."], "en", "es")]
    assert [c["strict"] for c in llm.calls] == [False, True]
    # the LLM itself was given the glossary (in its prompt), not a substituted source
    assert all(c["glossary"] == glossary and c["text"] == source for c in llm.calls)


def test_fallback_result_is_not_repaired(no_repair):
    llm = FakeLLM({MEETING: ["", ""]})
    engine = GuardedEngine(llm, FakeFallback())
    [result] = engine.render([Request(MEETING)], "en", "es")
    assert result.engine == "apertium" and result.note == "fallback: llm empty"
    assert no_repair == []


def test_llm_results_go_through_repair(no_repair):
    llm = FakeLLM({MEETING: [GOOD]})
    GuardedEngine(llm).render([Request(MEETING)], "en", "es")
    assert no_repair == [(MEETING, GOOD, "en", "es")]


def test_no_fallback_keeps_the_first_llm_answer_unchecked(no_repair):
    llm = FakeLLM({MEETING: [BAD_FR, BAD_EN]})
    [result] = GuardedEngine(llm, None).render([Request(MEETING)], "en", "es")
    assert result.engine == "llm" and result.text == BAD_FR
    assert result.note.startswith("unchecked")
    assert result.note == "unchecked: wrong_language, no fallback engine"


def test_fallback_not_covering_the_pair_is_like_no_fallback(no_repair):
    llm = FakeLLM({MEETING: [BAD_FR, BAD_EN]})
    fallback = FakeFallback(supported=False)
    [result] = GuardedEngine(llm, fallback).render([Request(MEETING)], "en", "es")
    assert result.note.startswith("unchecked: wrong_language") and result.engine == "llm"
    assert fallback.received == []


def test_empty_answers_without_fallback_keep_the_source(no_repair):
    llm = FakeLLM({MEETING: ["", ""]})
    [result] = GuardedEngine(llm).render([Request(MEETING)], "en", "es")
    assert result == Rendered(MEETING, "llm", "unchecked: empty, no fallback engine")


def test_context_is_previous_pairs_capped_and_kept_across_calls(no_repair):
    texts = [f"This is sentence number {i} of the talk." for i in range(1, 6)]
    answers = {t: [f"Esta es la frase número {i} de la charla."] for i, t in enumerate(texts, 1)}
    llm = FakeLLM(answers)
    engine = GuardedEngine(llm, FakeFallback(), context=2, window=0)
    first = engine.render([Request(t) for t in texts[:3]], "en", "es")
    second = engine.render([Request(t) for t in texts[3:]], "en", "es")
    pairs = [(t, r.text) for t, r in zip(texts, first + second)]
    assert [c["before"] for c in llm.calls] == [
        (), (pairs[0],), (pairs[0], pairs[1]), (pairs[1], pairs[2]), (pairs[2], pairs[3])]
    assert engine.history == pairs


def test_context_holds_final_translations_including_fallbacks(no_repair):
    a, b = "The meeting starts at 9 a.m. today.", "Please bring your laptops with you."
    llm = FakeLLM({a: ["", ""], b: ["Por favor, traed vuestros portátiles."]})
    engine = GuardedEngine(llm, FakeFallback(prefix="FB:"), context=3)
    engine.render([Request(a), Request(b)], "en", "es")
    assert llm.calls[-1]["text"] == b
    assert llm.calls[-1]["before"] == ((a, f"FB: {a}"),)


def test_context_size_is_respected(no_repair):
    texts = [f"Line number {i} is here now." for i in range(1, 5)]
    llm = FakeLLM({t: [f"La línea número {i} está aquí."] for i, t in enumerate(texts, 1)})
    engine = GuardedEngine(llm, context=1, window=0)
    engine.render([Request(t) for t in texts], "en", "es")
    assert [len(c["before"]) for c in llm.calls] == [0, 1, 1, 1]
    assert llm.calls[-1]["before"] == ((texts[2], "La línea número 3 está aquí."),)


def test_context_windows_grow_then_restart_with_the_last_pairs(no_repair):
    """Within a window each prompt extends the previous one (llama.cpp reuses the evaluated
    prefix); a new window starts every `window` lines with the last `context` pairs."""
    texts = [f"This is sentence number {i} of the talk." for i in range(12)]
    llm = FakeLLM({t: [f"Esta es la frase número {i} de la charla."] for i, t in enumerate(texts)})
    engine = GuardedEngine(llm, FakeFallback(), context=2, window=4)
    engine.render([Request(t) for t in texts], "en", "es")
    pairs = engine.history
    befores = [c["before"] for c in llm.calls]
    assert [len(b) for b in befores] == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 2, 3]
    assert befores[5] == tuple(pairs[:5]) and befores[6] == tuple(pairs[4:6])
    for earlier, later in zip(befores, befores[1:]):  # a window's prompts extend one another
        if len(later) > len(earlier):
            assert later[:len(earlier)] == earlier


def test_a_window_too_long_falls_back_to_the_last_pairs(no_repair, monkeypatch):
    from worker.stages import mt_guard

    monkeypatch.setattr(mt_guard, "MAX_CONTEXT_CHARS", 150)
    texts = [f"This is sentence number {i} of the talk." for i in range(5)]
    llm = FakeLLM({t: [f"Esta es la frase número {i} de la charla."] for i, t in enumerate(texts)})
    GuardedEngine(llm, FakeFallback(), context=2, window=8).render(
        [Request(t) for t in texts], "en", "es")
    assert [len(c["before"]) for c in llm.calls] == [0, 1, 2, 2, 2]


def test_context_zero_gives_no_context(no_repair):
    texts = [f"Line number {i} is here now." for i in range(1, 4)]
    llm = FakeLLM({t: [f"La línea número {i} está aquí."] for i, t in enumerate(texts, 1)})
    GuardedEngine(llm, context=0).render([Request(t) for t in texts], "en", "es")
    assert [c["before"] for c in llm.calls] == [(), (), ()]


def test_translate_texts_returns_texts_and_extends_history(no_repair):
    llm = FakeLLM({MEETING: [GOOD]})
    engine = GuardedEngine(llm)
    assert engine.translate_texts([MEETING], "en", "es") == [GOOD]
    assert engine.history == [(MEETING, GOOD)]


def test_supports_and_name_and_shorten_delegate_to_primary():
    llm = FakeLLM({})
    engine = GuardedEngine(llm, FakeFallback())
    assert engine.name == "llm"
    assert engine.supports("en", "es") and not engine.supports("en", "ja")
    assert engine.shorten([("a", "b", 3)], "en", "es") == ["short 0"]
    assert llm.shorten_calls == [([("a", "b", 3)], "en", "es")]


def test_glossary_is_copied():
    glossary = {"office": "despacho"}
    engine = GuardedEngine(FakeLLM({}), glossary=glossary)
    glossary["office"] = "oficina"
    assert engine.glossary == {"office": "despacho"}


def test_repair_note_is_appended_to_a_retry_note(monkeypatch):
    monkeypatch.setattr(mt_guard, "repair",
                        lambda s, o, sl, tl: (o.replace("selfish", "egoísta"), ["selfish→egoísta"]))
    source = "He is very cold and selfish."
    llm = FakeLLM({source: ["", "Es muy frío y selfish."]})
    [result] = GuardedEngine(llm).render([Request(source)], "en", "es")
    assert result == Rendered("Es muy frío y egoísta.", "llm",
                              "retried: empty; repaired: selfish→egoísta")


def _apertium_en_es() -> bool:
    from worker.stages.mt_repair import analyser
    from worker.stages.translate_apertium import apertium_mode

    return bool(shutil.which("apertium") and shutil.which("lt-proc")
                and apertium_mode("en", "es") and analyser("es"))


needs_apertium = pytest.mark.skipif(shutil.which("apertium") is None or not _apertium_en_es(),
                                    reason="Apertium en→es (and lt-proc) not installed")


@needs_apertium
def test_copied_english_word_is_repaired_with_apertium():
    source = "He is cold and selfish."
    llm = FakeLLM({source: ["Es frío y selfish."]})
    engine = GuardedEngine(llm)
    [result] = engine.render([Request(source)], "en", "es")
    assert result == Rendered("Es frío y egoísta.", "llm", "repaired: selfish→egoísta")
    assert engine.history == [(source, "Es frío y egoísta.")]


# --------------------------------------------------------------------------------------------
# Cases that once gave a false result (abbreviations, number formats, glossary order, ...)
# --------------------------------------------------------------------------------------------

def test_spanish_with_preposition_a_is_spanish():
    assert problem("I am going to see my mother tomorrow.", "Voy a ver a mi madre mañana.",
                   "en", "es") is None


def test_french_with_ma_is_french():
    assert problem("I am going to see my mother tomorrow morning.",
                   "Je vais voir ma mère demain matin.", "en", "fr") is None


def test_localised_number_format_is_not_number_lost():
    assert problem("More than 1,000 people came to the show.",
                   "Más de 1.000 personas vinieron al espectáculo.", "en", "es") is None


def test_changed_number_inside_another_number_is_number_lost():
    assert problem("He is 15 years old and she is 1.", "Él tiene 15 años y ella tiene 13.",
                   "en", "es") == "number_lost"


@pytest.mark.parametrize("source,output,target", [
    ("Ask Doctor Smith about it.", "Pregúntale al Dr. Smith.", "es"),
    ("Talk to Mister Dupont today, please.", "Parlez à M. Dupont aujourd'hui, s'il vous plaît.",
     "fr"),
])
def test_abbreviation_in_output_is_not_an_added_sentence(source, output, target):
    assert problem(source, output, "en", target) is None


def test_added_sentence_after_abbreviation_in_source_is_caught():
    assert problem("The meeting starts at 9 a.m. tomorrow.",
                   "La reunión empieza mañana a las 9. Hasta luego.", "en", "es") \
        == "added_sentence"


def test_apply_glossary_prefers_the_longer_overlapping_term():
    glossary = {"forest": "bosque", "Dark Forest": "Bosque Oscuro"}
    assert apply_glossary("Welcome to the Dark Forest.", glossary) \
        == "Welcome to the Bosque Oscuro."


@pytest.mark.parametrize("value", ["C:\\temp", "\\o/"])
def test_apply_glossary_value_with_backslash_is_literal(value):
    assert apply_glossary("Open the folder now.", {"folder": value}) \
        == f"Open the {value} now."
