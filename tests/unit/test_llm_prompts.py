"""The LLM translation engine's prompts, token limits and answer cleaning, with a fake backend
(no model: what is checked is what the model would be asked and what is kept of its answers)."""
from __future__ import annotations

import pytest

from worker.stages import translate_llm
from worker.stages.translate_llm import (
    LLMEngine,
    MAX_NEW_TOKENS,
    Request,
    clean_output,
    glossary_hits,
)


class FakeBackend:
    """Records prompts and limits; answers from a list (or echoes a fixed answer)."""

    def __init__(self, answers=None):
        self.answers = list(answers or [])
        self.calls: list[tuple[list[str], list[int]]] = []

    def generate(self, prompts, max_new_tokens):
        self.calls.append((list(prompts), list(max_new_tokens)))
        if self.answers:
            return [self.answers.pop(0) for _ in prompts]
        return ["Hola." for _ in prompts]

    def count_tokens(self, text):
        return len(text.split())

    @property
    def prompts(self) -> list[str]:
        return [p for prompts, _ in self.calls for p in prompts]


def turns(prompt: str) -> list[tuple[str, str]]:
    """(role, content) of each ChatML turn; the open assistant turn at the end has content ''."""
    out = []
    for block in prompt.split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        out.append((role, rest.removesuffix("\n").removesuffix("<|im_end|>")))
    return out


def prompt_for(request, source="en", target="es", glossary=None, strict=False) -> str:
    backend = FakeBackend()
    LLMEngine(backend).translate_requests([request], source, target, glossary, strict=strict)
    [prompt] = backend.prompts
    return prompt


# --------------------------------------------------------------------------------------------
# translation prompts
# --------------------------------------------------------------------------------------------

def test_prompt_is_chatml_ending_in_an_open_assistant_turn():
    prompt = prompt_for(Request("Call Bob now."))
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nCall Bob now.<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>") == prompt.count("<|im_end|>") + 1


def test_system_message_names_both_languages():
    system = turns(prompt_for(Request("Call Bob now."), "en", "es"))[0]
    assert system[0] == "system"
    assert "English" in system[1] and "Spanish" in system[1]
    system = turns(prompt_for(Request("Ruf Bob an."), "de", "fr"))[0][1]
    assert "German" in system and "French" in system and "Spanish" not in system


def test_fixed_example_turns_come_first():
    t = turns(prompt_for(Request("Call Bob now.")))
    assert [role for role, _ in t] == ["system", "user", "assistant", "user", "assistant",
                                       "user", "assistant"]
    assert t[1][1] == translate_llm._EXAMPLES["en"][0]
    assert t[2][1] == translate_llm._EXAMPLES["es"][0]
    assert t[3][1] == translate_llm._EXAMPLES["en"][1]
    assert t[4][1] == translate_llm._EXAMPLES["es"][1]
    assert t[5] == ("user", "Call Bob now.") and t[6] == ("assistant", "")


def test_examples_follow_the_pair():
    t = turns(prompt_for(Request("Appelle Bob."), "fr", "de"))
    assert t[1][1] == translate_llm._EXAMPLES["fr"][0]
    assert t[2][1] == translate_llm._EXAMPLES["de"][0]


def test_pair_without_examples_has_no_example_turns():
    t = turns(prompt_for(Request("Call Bob now."), "en", "nl"))
    assert [role for role, _ in t] == ["system", "user", "assistant"]
    assert "Dutch" in t[0][1]


def test_examples_are_identical_from_one_prompt_to_the_next():
    backend = FakeBackend()
    LLMEngine(backend).translate_requests([Request("One."), Request("Two, three.")], "en", "es")
    a, b = backend.prompts
    prefix = a[:a.rindex("<|im_start|>user")]
    assert b.startswith(prefix)


def test_before_pairs_become_earlier_turns():
    before = (("Hi, Anna.", "Hola, Anna."), ("Are you ready?", "¿Estás lista?"))
    t = turns(prompt_for(Request("Let us go.", before)))
    assert t[5:] == [("user", "Hi, Anna."), ("assistant", "Hola, Anna."),
                     ("user", "Are you ready?"), ("assistant", "¿Estás lista?"),
                     ("user", "Let us go."), ("assistant", "")]


def test_strict_drops_the_before_pairs_but_keeps_the_examples():
    before = (("Hi, Anna.", "Hola, Anna."),)
    prompt = prompt_for(Request("Let us go.", before), strict=True)
    assert "Hi, Anna." not in prompt and "Hola, Anna." not in prompt
    t = turns(prompt)
    assert len(t) == 7 and t[1][1] == translate_llm._EXAMPLES["en"][0]
    assert t[-2:] == [("user", "Let us go."), ("assistant", "")]


def test_glossary_terms_are_given_only_when_they_occur_in_the_text():
    glossary = {"office": "despacho", "car": "coche", "Dark Forest": "Bosque Oscuro"}
    prompt = prompt_for(Request("Call Bob at the Office."), glossary=glossary)
    assert "despacho" in prompt
    assert "coche" not in prompt and "Bosque Oscuro" not in prompt
    assert "Dark Forest" not in prompt


def test_glossary_multiword_term_in_text():
    glossary = {"Dark Forest": "Bosque Oscuro", "office": "despacho"}
    prompt = prompt_for(Request("Welcome to the dark forest, traveller."), glossary=glossary)
    assert "Bosque Oscuro" in prompt and "despacho" not in prompt


def test_glossary_term_inside_another_word_is_not_given():
    prompt = prompt_for(Request("The officer is here."), glossary={"office": "despacho"})
    assert "despacho" not in prompt


def test_no_glossary_leaves_the_user_turn_as_the_text():
    for glossary in (None, {}, {"car": "coche"}):
        t = turns(prompt_for(Request("Call Bob at the office."), glossary=glossary))
        assert t[-2] == ("user", "Call Bob at the office.")
        assert "coche" not in t[0][1]


def test_glossary_is_applied_in_strict_prompts_too():
    prompt = prompt_for(Request("Call Bob at the office."), glossary={"office": "despacho"},
                        strict=True)
    assert "despacho" in prompt


def test_translate_texts_has_no_context_and_no_glossary():
    backend = FakeBackend(["Hola, Bob.", "Adiós."])
    out = LLMEngine(backend).translate_texts(["Hi, Bob.", "Bye."], "en", "es")
    assert out == ["Hola, Bob.", "Adiós."]
    assert len(backend.calls) == 1 and len(backend.prompts) == 2
    for prompt, text in zip(backend.prompts, ["Hi, Bob.", "Bye."]):
        assert len(turns(prompt)) == 7 and turns(prompt)[-2] == ("user", text)


def test_answers_are_cleaned():
    backend = FakeBackend(['Translation: "Hola, Bob."\n\nNote: informal.'])
    assert LLMEngine(backend).translate_requests([Request("Hi, Bob.")], "en", "es") \
        == ["Hola, Bob."]


def test_token_limits_scale_with_the_text_and_are_capped():
    backend = FakeBackend()
    long_text = " ".join(["word"] * 150)
    LLMEngine(backend).translate_requests([Request("one two three"), Request(long_text)],
                                          "en", "es")
    [(_, limits)] = backend.calls
    assert limits == [2 * 3 + 16, MAX_NEW_TOKENS]


# --------------------------------------------------------------------------------------------
# shortening prompts
# --------------------------------------------------------------------------------------------

def test_shorten_prompt_carries_the_budget_and_both_lines():
    backend = FakeBackend(["Hola a todos."])
    out = LLMEngine(backend).shorten(
        [("Good morning, everyone.", "Buenos días a todos vosotros.", 5)], "en", "es")
    assert out == ["Hola a todos."]
    [prompt] = backend.prompts
    t = turns(prompt)
    assert [role for role, _ in t] == ["system", "user", "assistant"]
    assert "Spanish" in t[0][1] and "English" in t[0][1]
    assert t[1][1] == ("English: Good morning, everyone.\nSpanish: Buenos días a todos vosotros."
                       "\nLimit: at most 5 syllables")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_shorten_prompts_share_their_rules_as_a_prefix():
    """The budget travels with the line, so llama.cpp evaluates the rules once per job."""
    backend = FakeBackend(["Uno.", "Dos."])
    LLMEngine(backend).shorten([("a b", "uno dos tres", 3), ("c d", "cuatro", 7)], "en", "es")
    first, second = backend.prompts
    assert turns(first)[0] == turns(second)[0]


def test_shorten_one_prompt_per_item_with_limits_from_the_current_line():
    backend = FakeBackend(["Uno.", "Dos."])
    out = LLMEngine(backend).shorten([("a b", "uno dos tres", 3), ("c d", "cuatro", 7)],
                                     "en", "es")
    assert out == ["Uno.", "Dos."]
    [(prompts, limits)] = backend.calls
    assert "at most 3 syllables" in prompts[0] and "at most 7 syllables" in prompts[1]
    assert limits == [2 * 3 + 16, 2 * 1 + 16]


def test_shorten_answers_are_cleaned():
    backend = FakeBackend(["Español: «Hola a todos.»"])
    assert LLMEngine(backend).shorten([("Hi all.", "Hola a todos vosotros.", 4)], "en", "es") \
        == ["Hola a todos."]


# --------------------------------------------------------------------------------------------
# clean_output
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,clean", [
    ("Hola.", "Hola."),
    ("  Hola.  ", "Hola."),
    ("Translation: Hola", "Hola"),
    ("translation:Hola", "Hola"),
    ("Traducción: Hola, amigo.", "Hola, amigo."),
    ("Traduction : Bonjour", "Bonjour"),
    ("Spanish: Hola", "Hola"),
    ("Español: Hola", "Hola"),
    ("Übersetzung: Hallo", "Hallo"),
    ('"Hola"', "Hola"),
    ("«Hola, amigo»", "Hola, amigo"),
    ("“Bonjour”", "Bonjour"),
    ('Translation: "Hola"', "Hola"),
    ("  Traducción:  «Hola, amigo»  ", "Hola, amigo"),
    ("Hola.\n\nNote: this is a literal translation.", "Hola."),
    ("\n\nHola.\n\nOtra cosa.", "Hola."),
    ("Hola,\n  ¿qué tal?", "Hola, ¿qué tal?"),
    ('"', '"'),
    ("", ""),
    ('Dijo "hola" y se fue.', 'Dijo "hola" y se fue.'),
    ("Mi traducción: hola", "Mi traducción: hola"),
])
def test_clean_output(raw, clean):
    assert clean_output(raw) == clean


def test_clean_output_keeps_two_quoted_parts():
    assert clean_output('"Sí", dijo. "Vamos"') == '"Sí", dijo. "Vamos"'


# --------------------------------------------------------------------------------------------
# supports / glossary_hits
# --------------------------------------------------------------------------------------------

def test_supports_pairs_of_llm_languages_with_a_backend():
    engine = LLMEngine(FakeBackend())
    assert engine.supports("en", "es") and engine.supports("es", "en")
    assert engine.supports("fr", "de") and engine.supports("ca", "nl")
    assert not engine.supports("en", "ja")
    assert not engine.supports("ja", "en")
    assert not engine.supports("es", "es")
    assert not engine.supports("auto", "es")


def test_supports_without_backend_needs_the_installed_model(monkeypatch):
    monkeypatch.setattr(translate_llm, "llm_available", lambda: False)
    assert not LLMEngine().supports("en", "es")
    monkeypatch.setattr(translate_llm, "llm_available", lambda: True)
    assert LLMEngine().supports("en", "es")
    assert not LLMEngine().supports("en", "ja")


def test_engine_name():
    assert LLMEngine(FakeBackend()).name == "llm"


def test_glossary_hits_whole_words_any_case():
    glossary = {"office": "despacho", "car": "coche", "Dark Forest": "Bosque Oscuro",
                "c++": "C más más"}
    assert glossary_hits("The OFFICE is near the dark forest.", glossary) \
        == {"office": "despacho", "Dark Forest": "Bosque Oscuro"}
    assert glossary_hits("The officer has a carpet and a scar.", glossary) == {}
    assert glossary_hits("I code in c++ daily.", glossary) == {"c++": "C más más"}
    assert glossary_hits("Car, car; CAR!", glossary) == {"car": "coche"}
    assert glossary_hits("Anything at all.", {}) == {}


# --------------------------------------------------------------------------------------------
# the guarded engine over the real prompt builder
# --------------------------------------------------------------------------------------------

def test_guarded_retry_prompt_has_no_context(monkeypatch):
    from worker.stages import mt_guard
    from worker.stages.mt_guard import GuardedEngine

    monkeypatch.setattr(mt_guard, "repair", lambda s, o, sl, tl: (o, []))
    backend = FakeBackend(["Hola, Anna.", "", "Translation: «Vámonos ya.»"])
    engine = GuardedEngine(LLMEngine(backend), context=2)
    results = engine.render([Request("Hello, Anna."), Request("Let us go now.")], "en", "es")
    assert [(r.text, r.note) for r in results] == [("Hola, Anna.", ""),
                                                   ("Vámonos ya.", "retried: empty")]
    first, second, retry = backend.prompts
    assert "Hello, Anna." not in first.rsplit("<|im_start|>user", 1)[0]
    assert turns(second)[-4:] == [("user", "Hello, Anna."), ("assistant", "Hola, Anna."),
                                  ("user", "Let us go now."), ("assistant", "")]
    assert "Hola, Anna." not in retry and turns(retry)[-2] == ("user", "Let us go now.")
