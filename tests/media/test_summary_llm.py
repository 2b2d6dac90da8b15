"""Abstractive summaries with the real local LLM (Qwen2.5-Coder-1.5B on llama.cpp, the translation
LLM), on the bench talk: the worker's own LLM rewriting the key points (`summary: "abstractive"`),
and the `DUBFLEET_SUMMARY_LLM_URL` path against a real HTTP server in this test that serves an
OpenAI-compatible `/v1/chat/completions` with the same model's answers (no network).

Every check is the guard's: key points supported by the text, 3–7 of them in spoken order, the
chapters (the extractive ones) covering the duration in order, and the extractive points kept
when the model's answer is not supported by the text. Decoding is greedy, so runs repeat.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from tests.media.test_summary import LIBRIVOX, TALK, embedder, timed  # noqa: F401 (embedder: fixture)
from worker.stages import summary_llm
from worker.stages.summary import summarize
from worker.stages.summary_rank import split_sentences

pytestmark = pytest.mark.media

DURATION = len(TALK) * 5.0
SENTENCES = split_sentences(timed(TALK))
TEXT = " ".join(s.text for s in SENTENCES)  # what the guard checks points against
OTHER_TEXT = " ".join(LIBRIVOX["source"])  # Sense and Sensibility: nothing the talk says
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture(scope="module")
def llm():
    """The worker's translation LLM (skipped where setup did not install it)."""
    from worker import llm_model
    from worker.stages.translate_llm import _runtime_importable, shared_backend

    if not _runtime_importable():
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[llm]')")
    if not llm_model.installed():
        pytest.skip(f"llama-cpp-python is installed but the LLM model is not: {llm_model.model_path()} "
                    "is missing (make setup, or python -m worker.llm_model)")
    return shared_backend()


@pytest.fixture(scope="module")
def extractive(embedder):
    """The talk's extractive summary (what the guard falls back to)."""
    [found] = summarize(timed(TALK), DURATION, "en", embedder, mode="extractive")
    return found


def answer(llm, system: str, user: str, max_tokens: int) -> str:
    """The local model's greedy answer to one chat turn."""
    from worker.stages.translate_llm import _chat

    prompt = _chat(system, (), user)
    room = 2048 - llm.count_tokens(prompt) - 8  # the shared backend's context
    return llm.generate([prompt], [max(16, min(max_tokens, room))])[0]


class ChatHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions answered by the local model (OpenAI's reply shape)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.requests.append((self.path, body))
        if self.path != COMPLETIONS:
            return self._reply(404, {"error": {"message": "no such endpoint"}})
        roles = {m["role"]: m["content"] for m in body["messages"]}
        user = self.server.rewrite_user(roles["user"])
        text = answer(self.server.llm, roles["system"], user, int(body.get("max_tokens") or 512))
        self._reply(200, {"id": "chatcmpl-test", "object": "chat.completion",
                          "model": body.get("model"), "choices": [{
                              "index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}]})

    def _reply(self, status: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def endpoint(llm, monkeypatch) -> Iterator[Callable[[Callable[[str], str]], ThreadingHTTPServer]]:
    """Start the chat server (its `rewrite_user` may swap the transcript it is sent) and point
    DUBFLEET_SUMMARY_LLM_URL at it."""
    servers: list[ThreadingHTTPServer] = []

    def start(rewrite_user: Callable[[str], str] = lambda text: text) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
        httpd.daemon_threads = True
        httpd.llm, httpd.requests, httpd.rewrite_user = llm, [], rewrite_user
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        monkeypatch.setenv(summary_llm.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}"
                                                f"{COMPLETIONS}")
        monkeypatch.setenv(summary_llm.MODEL_ENV, "qwen-local")
        monkeypatch.setenv(summary_llm.TIMEOUT_ENV, "600")  # the whole talk: ~1 min on 1 CPU
        return httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def check_guarded(found, extractive) -> None:
    """3–7 key points in spoken order, each supported by the talk and timed at one of its
    sentences; the extractive chapters, covering [0, duration] in order."""
    assert 3 <= len(found.key_points) <= 7, found.key_points
    assert all(summary_llm.supported(p.text, TEXT) for p in found.key_points), found.key_points
    starts = [p.start for p in found.key_points]
    assert starts == sorted(starts)
    times = {(s.start, s.end) for s in SENTENCES}
    assert all((p.start, p.end) in times for p in found.key_points)  # a sentence's own time
    chapters = found.chapters
    assert chapters == extractive.chapters and len(chapters) > 1
    assert chapters[0].start == 0.0 and chapters[-1].end == pytest.approx(DURATION)
    assert all(a.end == b.start and a.start < a.end for a, b in zip(chapters, chapters[1:]))


def test_local_llm_rewrites_key_points_within_the_guard(embedder, llm, extractive):
    [found] = summarize(timed(TALK), DURATION, "en", embedder, mode="abstractive")
    print("\n" + "\n".join(f"  {a.text}\n    => {b.text}"
                           for a, b in zip(extractive.key_points, found.key_points)))
    assert found.method == "abstractive" and not found.notes
    check_guarded(found, extractive)
    assert len(found.key_points) == len(extractive.key_points)  # one rewrite per point, same time
    assert [p.start for p in found.key_points] == [p.start for p in extractive.key_points]
    assert found.key_points != extractive.key_points  # the model did rewrite
    assert found.title == extractive.title


def test_local_llm_answers_the_text_does_not_support_keep_the_extractive_points(
        embedder, llm, extractive, monkeypatch):
    """The model is shown another book's sentences instead of the talk's: its (real) rewrites
    say what the talk never said, so each extractive point stays."""
    others = iter(LIBRIVOX["source"] * 4)
    real = summary_llm.local_ask()
    monkeypatch.setattr(summary_llm, "local_ask", lambda: lambda system, user: real(system,
                                                                                    next(others)))
    [found] = summarize(timed(TALK), DURATION, "en", embedder, mode="abstractive")
    assert found.key_points == extractive.key_points and found.method == "extractive"


def test_summary_endpoint_gives_abstractive_points_within_the_guard(embedder, endpoint,
                                                                    extractive):
    server = endpoint()
    [found] = summarize(timed(TALK), DURATION, "en", embedder)  # auto: the endpoint is set
    print("\n" + found.title + "\n" + "\n".join(f"  {p.start:5.0f} {p.text}"
                                                for p in found.key_points))
    [(path, body)] = server.requests  # one request for the whole talk
    assert path == COMPLETIONS and body["model"] == "qwen-local" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == TEXT
    assert found.method == "abstractive" and not found.notes
    check_guarded(found, extractive)
    assert not {p.text for p in found.key_points} <= {p.text for p in extractive.key_points}
    assert found.title


def test_summary_endpoint_answers_about_another_text_leave_the_extractive_summary(
        embedder, endpoint, extractive):
    """The endpoint summarises another book (the model's real answer): fewer than three of its
    points are supported by the talk, so the extractive summary stays, with a note."""
    endpoint(lambda _text: OTHER_TEXT)
    [found] = summarize(timed(TALK), DURATION, "en", embedder, mode="abstractive")
    assert found.key_points == extractive.key_points and found.method == "extractive"
    assert found.chapters == extractive.chapters and found.title == extractive.title
    [note] = found.notes
    assert "supported by the text" in note and note.endswith("extractive kept")
