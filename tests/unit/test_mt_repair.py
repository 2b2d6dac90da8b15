"""Repair of source words an LLM left untranslated: the selection logic with a fake analyser and
fake Apertium, then the real thing with the installed Apertium en→es (skipped without it)."""
from __future__ import annotations

import shutil

import pytest

from worker.stages import mt_repair, translate_apertium
from worker.stages.mt_repair import leftovers, repair


@pytest.fixture
def fake_analyser(monkeypatch):
    """unknown_words: everything not in a tiny Spanish lexicon is unknown; records its input."""
    lexicon = {"es", "frío", "y", "hospital", "fue", "al", "tan", "casa", "radio", "taxi"}
    seen = []

    def unknown(words, lang):
        seen.append((list(words), lang))
        return {w for w in words if w.lower() not in lexicon}

    monkeypatch.setattr(mt_repair, "unknown_words", unknown)
    return seen


@pytest.fixture
def fake_apertium(monkeypatch):
    """An en→es mode and a dictionary 'translator' answering one line per word."""
    table = {"selfish": "Egoísta", "greedy": "codicioso", "blorp": "*blorp", "lazy": "#perezoso",
             "weird": "muy raro", "fancy": "@fancy"}
    calls = []

    def run(mode, text, timeout=120.0):
        calls.append((mode, text))
        return "\n".join(table.get(w.lower(), w) for w in text.splitlines()) + "\n"

    mode = lambda s, t: "eng-spa" if (s, t) == ("en", "es") else None  # noqa: E731
    monkeypatch.setattr(mt_repair, "apertium_mode", mode)
    # repair() translates through ApertiumEngine (its batching), which runs these
    monkeypatch.setattr(translate_apertium, "apertium_mode", mode)
    monkeypatch.setattr(translate_apertium, "run_apertium", run)
    return calls


def test_leftovers_finds_a_copied_unknown_word(fake_analyser):
    assert leftovers("He is cold and selfish.", "Es frío y selfish.", "es") == ["selfish"]
    assert fake_analyser == [(["selfish"], "es")]  # only copied words are analysed


def test_leftovers_ignores_real_target_words_copied_from_the_source(fake_analyser):
    assert leftovers("Anna went to the hospital by taxi.", "Anna fue al hospital en taxi.",
                     "es") == []


def test_leftovers_ignores_capitalised_source_names(fake_analyser):
    assert leftovers("Zorblax met Quux today.", "Zorblax conoció hoy a Quux.", "es") == []
    # a name stays a name even where the output writes it in lower case
    assert leftovers("Ask Zorblax now.", "Pregunta a zorblax ahora.", "es") == []


def test_leftovers_ignores_unknown_words_not_in_the_source(fake_analyser):
    assert leftovers("He is cold.", "Es frío y blorp.", "es") == []


def test_leftovers_ignores_words_under_three_letters(fake_analyser):
    assert leftovers("He is ok, ya know.", "Es ok, ya sabes.", "es") == []


def test_leftovers_are_unique_and_in_output_order(fake_analyser):
    out = leftovers("Greedy? No: selfish and greedy, so selfish.",
                    "¿Codicioso? No: selfish y greedy, tan selfish.", "es")
    # "greedy" is capitalised at the start of the source: treated as a name there
    assert out == ["selfish"]
    out = leftovers("He is selfish and greedy, so selfish.",
                    "Es greedy y selfish, tan selfish.", "es")
    assert out == ["greedy", "selfish"]


def test_leftovers_match_source_words_case_insensitively(fake_analyser):
    assert leftovers("he was selfish", "Selfish, dijo ella.", "es") == ["Selfish"]


def test_repair_replaces_every_occurrence_and_keeps_lowercase(fake_analyser, fake_apertium):
    fixed, done = repair("He is cold and selfish, so selfish.", "Es frío y selfish, tan selfish.",
                         "en", "es")
    assert fixed == "Es frío y egoísta, tan egoísta."  # Apertium's capital is undone
    assert done == ["selfish→egoísta"]
    assert fake_apertium == [("eng-spa", "selfish\n")]


def test_repair_keeps_a_capitalised_word_capitalised(fake_analyser, fake_apertium):
    fixed, done = repair("she said he was selfish", "Selfish, dijo ella.", "en", "es")
    assert fixed == "Egoísta, dijo ella." and done == ["Selfish→Egoísta"]


def test_repair_several_words_in_one_apertium_call(fake_analyser, fake_apertium):
    fixed, done = repair("He is cold and selfish and greedy.", "Es frío, selfish y greedy.",
                         "en", "es")
    assert fixed == "Es frío, egoísta y codicioso."
    assert done == ["selfish→egoísta", "greedy→codicioso"]
    assert len(fake_apertium) == 1


def test_repair_strips_apertium_marks(fake_analyser, fake_apertium):
    fixed, done = repair("He is so lazy.", "Es tan lazy.", "en", "es")
    assert fixed == "Es tan perezoso." and done == ["lazy→perezoso"]


def test_repair_skips_words_apertium_does_not_know(fake_analyser, fake_apertium):
    # "*blorp" / "@fancy": unknown to Apertium too: nothing better to put there
    assert repair("He is so blorp.", "Es tan blorp.", "en", "es") == ("Es tan blorp.", [])
    assert repair("He is so fancy.", "Es tan fancy.", "en", "es") == ("Es tan fancy.", [])


def test_repair_skips_multiword_replacements(fake_analyser, fake_apertium):
    assert repair("It is weird.", "Es weird.", "en", "es") == ("Es weird.", [])


def test_repair_replaces_whole_words_only(fake_analyser, fake_apertium):
    fixed, _ = repair("He is selfish.", "Es selfish, no selfishness.", "en", "es")
    assert fixed == "Es egoísta, no selfishness."


def test_repair_without_an_apertium_pair_changes_nothing(fake_analyser, fake_apertium):
    assert repair("He is cold and selfish.", "Il est froid et selfish.", "en", "fr") \
        == ("Il est froid et selfish.", [])
    assert fake_apertium == [] and fake_analyser == []


def test_repair_without_leftovers_does_not_run_apertium(fake_analyser, fake_apertium):
    assert repair("He is cold.", "Es frío.", "en", "es") == ("Es frío.", [])
    assert fake_apertium == []


def test_unknown_words_without_an_analyser_is_empty(monkeypatch):
    monkeypatch.setattr(mt_repair, "analyser", lambda lang: None)
    assert mt_repair.unknown_words(["selfish"], "es") == set()


def test_unknown_words_of_nothing_is_empty():
    assert mt_repair.unknown_words([], "es") == set()


# --------------------------------------------------------------------------------------------
# The installed Apertium (eng-spa) and its Spanish analyser
# --------------------------------------------------------------------------------------------

def _real_en_es() -> bool:
    from worker.stages.translate_apertium import apertium_mode

    return bool(shutil.which("apertium") and shutil.which("lt-proc")
                and apertium_mode("en", "es") and mt_repair.analyser("es"))


real = pytest.mark.skipif(shutil.which("apertium") is None or not _real_en_es(),
                          reason="Apertium en→es (and lt-proc) not installed")


@real
def test_real_analyser_knows_spanish_words_only():
    assert mt_repair.unknown_words(["selfish", "hospital", "casa", "blorp"], "es") \
        == {"selfish", "blorp"}


@real
def test_real_leftovers():
    assert leftovers("He is cold and selfish.", "Es frío y selfish.", "es") == ["selfish"]
    assert leftovers("Anna went to the hospital.", "Anna fue al hospital.", "es") == []
    assert leftovers("Zorblax is cold and selfish.", "Zorblax es frío y selfish.", "es") \
        == ["selfish"]


@real
def test_real_repair_keeps_lowercase():
    assert repair("He is cold and selfish.", "Es frío y selfish.", "en", "es") \
        == ("Es frío y egoísta.", ["selfish→egoísta"])
    assert repair("He is cold and selfish and greedy.", "Es frío, selfish y greedy.", "en", "es") \
        == ("Es frío, egoísta y codicioso.", ["selfish→egoísta", "greedy→codicioso"])


@real
def test_real_repair_leaves_unknown_words():
    assert repair("He is cold and blorp.", "Es frío y blorp.", "en", "es") \
        == ("Es frío y blorp.", [])
