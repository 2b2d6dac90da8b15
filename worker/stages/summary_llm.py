"""Abstractive key points: an operator's OpenAI-compatible chat endpoint, or the local LLM.

`DUBFLEET_SUMMARY_LLM_URL` (the worker's setting, never a job's) names a `/v1/chat/completions`
endpoint asked once per job for a title and key points. A job's `summary: "abstractive"` without
that setting uses the translation LLM of this worker when installed
(`worker.stages.translate_llm.shared_backend`), rewriting each extractive key point. Either way
every rewritten point must be supported by the text (`supported`), else the extractive one stays.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable, Sequence

from worker.errors import UnsupportedJob

logger = logging.getLogger(__name__)

URL_ENV = "DUBFLEET_SUMMARY_LLM_URL"
MODEL_ENV = "DUBFLEET_SUMMARY_LLM_MODEL"
TIMEOUT_ENV = "DUBFLEET_SUMMARY_LLM_TIMEOUT"
MAX_PROMPT_CHARS = 24_000  # the transcript sent to the endpoint is cut here
MAX_ANSWER_CHARS = 20_000
_WORD = re.compile(r"\w+", re.UNICODE)

Ask = Callable[[str, str], str]  # (system, user) -> answer text


def configured_url() -> str | None:
    """The operator's summary endpoint, if set."""
    return os.environ.get(URL_ENV, "").strip() or None


def _content_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if len(w) >= 4 and not w.isdigit()]


def supported(point: str, source: str, share: float = 0.7) -> bool:
    """True when most content words of `point` occur in `source` (by their first four letters,
    so inflections count): the guard against a model adding what was never said."""
    words = _content_words(point)
    if len(words) < 2:
        return False
    stems = {w[:4] for w in _content_words(source)}
    return sum(w[:4] in stems for w in words) / len(words) >= share


def http_ask(url: str) -> Ask:
    """A chat-completions caller for `url` (no proxies from the environment, bounded answer)."""
    import requests

    timeout = float(os.environ.get(TIMEOUT_ENV) or 60)
    model = os.environ.get(MODEL_ENV) or "default"

    def ask(system: str, user: str) -> str:
        session = requests.Session()
        session.trust_env = False
        body = {"model": model, "temperature": 0, "max_tokens": 800,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": user}]}
        with session:
            response = session.post(url, json=body, timeout=timeout)
            response.raise_for_status()
            data = response.json()
        return str(data["choices"][0]["message"]["content"])[:MAX_ANSWER_CHARS]
    return ask


def local_ask() -> Ask:
    """A caller on this worker's translation LLM (UnsupportedJob when it is not installed)."""
    from worker.stages.translate_llm import _chat, llm_available, shared_backend

    if not llm_available():
        raise UnsupportedJob("no abstractive summary engine here (set DUBFLEET_SUMMARY_LLM_URL "
                             "or install the translation LLM)")
    backend = shared_backend()

    def ask(system: str, user: str) -> str:
        return backend.generate([_chat(system, (), user)], [160])[0]
    return ask


_SYSTEM = ("You summarise transcripts. Answer with JSON only: {\"title\": \"...\", "
           "\"key_points\": [\"...\", ...]} with 3 to 7 short key points, in the language of the "
           "transcript, using only facts stated in it.")


def _parse(answer: str) -> tuple[str, list[str]]:
    """The title and key points of a JSON answer (the first {...} in it)."""
    match = re.search(r"\{.*\}", answer, re.DOTALL)
    if not match:
        raise ValueError("the answer holds no JSON object")
    data = json.loads(match.group(0))
    points = data.get("key_points")
    if not isinstance(data.get("title"), str) or not isinstance(points, list):
        raise ValueError("the answer lacks a title or key_points")
    return " ".join(data["title"].split())[:200], [" ".join(str(p).split())[:400] for p in points]


def abstract(ask: Ask, sentences: Sequence[str]) -> tuple[str, list[str]]:
    """Ask for a title and key points over the whole text; keep only supported points."""
    text = " ".join(sentences)
    title, points = _parse(ask(_SYSTEM, text[:MAX_PROMPT_CHARS]))
    kept = [p for p in points if supported(p, text)][:7]
    if len(kept) < 3:
        raise ValueError(f"only {len(kept)} of {len(points)} key points are supported by the text")
    return (title if supported(title, text, 0.5) else ""), kept


_REWRITE = ("Rewrite the sentence as one short key point in the same language. Keep only what "
            "it says. Answer with the key point only.")


def rewrite(ask: Ask, points: Sequence[str], source: str) -> tuple[list[str], int]:
    """Each point rewritten shorter where the answer is supported; returns (points, how many)."""
    out, changed = [], 0
    for point in points:
        answer = " ".join(ask(_REWRITE, point).split()).strip("\"'«»“” ")[:400]
        if answer and supported(answer, source) and answer != point:
            out.append(answer)
            changed += 1
        else:
            out.append(point)
    return out, changed
