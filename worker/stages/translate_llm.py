"""Translation with a small instruction LLM (Qwen2.5-Coder-1.5B-Instruct Q4_K_M on llama.cpp).

Each sentence unit becomes one chat prompt: a fixed system message and two fixed example turns
(so llama.cpp reuses their evaluated prefix from one prompt to the next), then a user turn with
the neighbouring sentences as context, the job's glossary terms that occur in the line, and the
line. Answers are decoded greedily, one prompt after another on the loaded model. The same model
can be asked for a shorter version of a line sized to a syllable budget (fitting a dub line into
its slot). Output checks and the fallback engine live in `mt_guard`; this module only prompts.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from shared.languages import LANGUAGES
from worker.errors import UnsupportedJob

logger = logging.getLogger(__name__)

# Languages Qwen2.5 translates between well enough to be the default (it covers more; the
# output guard catches wrong-language answers).
LLM_LANGUAGES = frozenset({"en", "es", "fr", "it", "pt", "de", "nl", "ca"})
MAX_NEW_TOKENS = 200
_END_TOKENS = ["<|im_end|>", "<|endoftext|>"]
# Two short generic turns (not from any evaluation set) fix the answer format: text only.
_EXAMPLES = {
    "en": ("Good morning, everyone, and thanks for joining us.",
           "The meeting starts at 9 a.m. in room 12, right after the break."),
    "es": ("Buenos días a todos y gracias por acompañarnos.",
           "La reunión empieza a las 9 de la mañana en la sala 12, justo después del descanso."),
    "fr": ("Bonjour à tous et merci de nous avoir rejoints.",
           "La réunion commence à 9 heures dans la salle 12, juste après la pause."),
    "it": ("Buongiorno a tutti e grazie per essere qui con noi.",
           "La riunione inizia alle 9 nella sala 12, subito dopo la pausa."),
    "pt": ("Bom dia a todos e obrigado por se juntarem a nós.",
           "A reunião começa às 9 da manhã na sala 12, logo depois do intervalo."),
    "de": ("Guten Morgen zusammen und danke, dass ihr dabei seid.",
           "Das Treffen beginnt um 9 Uhr in Raum 12, direkt nach der Pause."),
}
_LABEL_RE = re.compile(r"^\s*(?:translation|traducción|traduction|traduzione|tradução|"
                       r"übersetzung|spanish|español)\s*:\s*", re.IGNORECASE)


class Backend(Protocol):
    """Greedy text generation for chat prompts (the CTranslate2 model; the bench adds others)."""

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """Complete each prompt (ChatML text ending in an open assistant turn)."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`."""


class LlamaBackend:
    """The GGUF file on llama-cpp-python (all layers on the GPU when the build supports one)."""

    def __init__(self, path: str, threads: int | None = None, context: int = 2048):
        from llama_cpp import Llama, llama_supports_gpu_offload

        self.gpu = bool(llama_supports_gpu_offload())
        threads = threads or _default_threads()
        self.llm = Llama(model_path=path, n_ctx=context, n_threads=threads,
                         n_threads_batch=threads, n_gpu_layers=-1 if self.gpu else 0,
                         verbose=False)
        self.lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`."""
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """Greedy answers, one prompt after another (the shared prefix is evaluated once)."""
        out = []
        with self.lock:  # one model per process, shared by the job's threads
            for prompt, limit in zip(prompts, max_new_tokens):
                result = self.llm.create_completion(prompt, max_tokens=limit, temperature=0.0,
                                                    top_k=1, stop=_END_TOKENS)
                out.append(result["choices"][0]["text"])
        return out


def _default_threads() -> int:
    """CPU threads for the LLM (env DUBFLEET_LLM_THREADS, default: half the cores).

    A dub translates while recognition and synthesis run on the other cores; llama.cpp's threads
    spin while they wait, so more threads than free cores burn CPU the other stages need.
    """
    value = os.environ.get("DUBFLEET_LLM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, (os.cpu_count() or 1) // 2)


@functools.lru_cache(maxsize=1)
def shared_backend() -> LlamaBackend:
    """The process-wide model (loaded on first use, ≈1 s, ≈1.2 GB mapped; stays loaded)."""
    from worker import llm_model

    if not llm_model.installed():
        raise UnsupportedJob("the translation LLM is not installed here (run `make setup`)")
    return LlamaBackend(str(llm_model.model_path()))


def llm_available() -> bool:
    """True when the joined model is in the model cache and llama-cpp-python imports."""
    from worker import llm_model

    return llm_model.installed() and _runtime_importable()


@functools.lru_cache(maxsize=1)
def _runtime_importable() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Request:
    """One text to translate, with the sentences before it and their translations as context."""

    text: str
    before: tuple[tuple[str, str], ...] = ()


def _chat(system: str, turns: Sequence[tuple[str, str]], user: str) -> str:
    """A ChatML prompt ending in an open assistant turn."""
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    for question, answer in turns:
        parts.append(f"<|im_start|>user\n{question}<|im_end|>\n"
                     f"<|im_start|>assistant\n{answer}<|im_end|>\n")
    parts.append(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    return "".join(parts)


def glossary_hits(text: str, glossary: Mapping[str, str]) -> dict[str, str]:
    """The glossary entries whose term occurs in `text` (whole words, any case)."""
    return {term: value for term, value in glossary.items()
            if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE)}


def substitute_terms(text: str, glossary: Mapping[str, str]) -> str:
    """`text` with each glossary term (whole words, any case) replaced by its translation,
    longest terms first, in one pass (a replacement is never matched again)."""
    hits = glossary_hits(text, glossary)
    if not hits:
        return text
    lower = {term.lower(): value for term, value in hits.items()}
    terms = sorted(hits, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)",
                         re.IGNORECASE)
    return pattern.sub(lambda m: lower[m.group(0).lower()], text)


def clean_output(text: str) -> str:
    """First paragraph of the answer, without labels or wrapping quotes the model adds."""
    text = text.strip().split("\n\n")[0].strip()
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = _LABEL_RE.sub("", text)
    quotes = "\"«“»”"
    if len(text) > 1 and text[0] in quotes and text[-1] in quotes \
            and not any(q in text[1:-1] for q in quotes):
        text = text[1:-1].strip()
    return text


class LLMEngine:
    """A `TextEngine` over the LLM, with context, glossary and a shortening request."""

    name = "llm"

    def __init__(self, backend: Backend | None = None):
        self._backend = backend

    @property
    def backend(self) -> Backend:
        """The model (the shared one unless a backend was given)."""
        if self._backend is None:
            self._backend = shared_backend()
        return self._backend

    def supports(self, source: str, target: str) -> bool:
        """True for pairs of LLM_LANGUAGES when the model is installed (or a backend given)."""
        pair_ok = source != target and {source, target} <= LLM_LANGUAGES
        return pair_ok and (self._backend is not None or llm_available())

    def translate_texts(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate independent texts (no context, no glossary)."""
        return self.translate_requests([Request(t) for t in texts], source, target)

    def translate_requests(self, requests: Sequence[Request], source: str, target: str,
                           glossary: Mapping[str, str] | None = None,
                           strict: bool = False) -> list[str]:
        """Translate each request; `strict` drops the context (used for a second try)."""
        prompts = [self._prompt(r, source, target, glossary or {}, strict) for r in requests]
        limits = [self._limit(r.text) for r in requests]
        return [clean_output(t) for t in self.backend.generate(prompts, limits)]

    def shorten(self, items: Sequence[tuple[str, str, int]], source: str,
                target: str) -> list[str]:
        """Shorter translations: each item is (source text, current translation, syllables)."""
        # The rules are the same for every line (a prefix llama.cpp evaluates once); the budget
        # goes with the line.
        system = (f"You are a dubbing adapter. Rewrite the {_name(target)} line so that it is "
                  f"short enough to be spoken in the time of the {_name(source)} original, within "
                  f"the syllable limit given. Keep the meaning, names and numbers; drop filler "
                  f"words. Reply with the shortened {_name(target)} line only.")
        prompts = [_chat(system, [], f"{_name(source)}: {original}\n{_name(target)}: {current}\n"
                                     f"Limit: at most {budget} syllables")
                   for original, current, budget in items]
        limits = [self._limit(current) for _, current, _ in items]
        return [clean_output(t) for t in self.backend.generate(prompts, limits)]

    def _limit(self, text: str) -> int:
        return min(MAX_NEW_TOKENS, 2 * self.backend.count_tokens(text) + 16)

    @staticmethod
    def _prompt(request: Request, source: str, target: str, glossary: Mapping[str, str],
                strict: bool) -> str:
        """System rules, fixed examples, then (unless `strict`) the preceding sentences and
        their translations as earlier turns: the model continues a consistent translation."""
        system = (f"You are a professional subtitle translator. Translate the user's "
                  f"{_name(source)} text into natural, fluent {_name(target)} as a native speaker "
                  f"would say it. Keep names, numbers and units. Reply with the translation only.")
        turns = []
        if source in _EXAMPLES and target in _EXAMPLES:
            turns = list(zip(_EXAMPLES[source], _EXAMPLES[target]))
        if not strict:
            turns += list(request.before)
        hits = glossary_hits(request.text, glossary)
        text = request.text
        if hits:  # the terms go in already translated, and the rule says to keep them
            system += (" Keep these terms exactly as written: "
                       + "; ".join(f'"{v}"' for v in hits.values()) + ".")
            text = substitute_terms(text, hits)
        return _chat(system, turns, text)


def _name(code: str) -> str:
    return LANGUAGES.get(code, code)
