"""The client's event-stream reader: SSE parsing, resume after a dropped connection, polling on 503."""
from __future__ import annotations

import json

import pytest
import requests

from dubfleet.api import ApiError, DubfleetApi, parse_sse


def test_parse_sse_follows_the_whatwg_rules():
    lines = ["retry: 3000", "", ": keepalive", "", "id: 7", "event: job", 'data: {"a":', "data: 1}",
             "", "data:no space", ""]
    first, second = parse_sse(lines)
    assert (first.id, first.event, first.data, first.retry_ms) == ("7", "job", '{"a":\n1}', 3000)
    assert (second.id, second.event, second.data) == ("7", "message", "no space")  # id carries on


class FakeReply:
    """A streamed reply whose lines may break off."""

    def __init__(self, lines: list[str], status: int = 200, breaks: bool = False):
        self.lines, self.status_code, self.breaks, self.encoding = lines, status, breaks, None

    def iter_lines(self, **kwargs):
        yield from self.lines
        if self.breaks:
            raise requests.ConnectionError("connection reset")

    def close(self) -> None:
        pass


def _message(event_id: int, status: str) -> list[str]:
    return [f"id: {event_id}", "event: job", "data: " + json.dumps({"id": "j", "status": status}), ""]


def test_follow_resumes_with_the_last_event_id_after_a_drop(monkeypatch):
    api = DubfleetApi("http://coordinator", "dfc_key")
    asked: list = []
    replies = [FakeReply(_message(1, "queued") + _message(2, "running"), breaks=True),
               FakeReply(_message(3, "completed"))]

    def job_events(job_id, last_event_id=None):
        asked.append(last_event_id)
        return replies.pop(0)

    monkeypatch.setattr(api, "job_events", job_events)
    seen = [data["status"] for data in api.follow("j", sleep=lambda s: None)]
    assert seen == ["queued", "running", "completed"] and asked == [None, "2"]


def test_follow_polls_when_streams_are_refused(monkeypatch):
    api = DubfleetApi("http://coordinator", "dfc_key")

    def refuse(job_id, last_event_id=None):
        raise ApiError("too many live event streams (HTTP 503)", 503, "service_unavailable")

    views = iter([{"job_id": "j", "status": "running", "progress": 50.0},
                  {"job_id": "j", "status": "failed", "progress": 50.0, "error": "boom"}])
    monkeypatch.setattr(api, "job_events", refuse)
    monkeypatch.setattr(api, "job", lambda job_id: next(views))
    seen = list(api.follow("j", sleep=lambda s: None))
    assert [(d["status"], d["progress"]) for d in seen] == [("running", 0.5), ("failed", 0.5)]
    assert seen[-1]["error"] == "boom"


def test_follow_gives_up_on_a_refusal(monkeypatch):
    api = DubfleetApi("http://coordinator", "dfc_key")

    def missing(job_id, last_event_id=None):
        raise ApiError("no such job (HTTP 404)", 404, "not_found")

    monkeypatch.setattr(api, "job_events", missing)
    with pytest.raises(ApiError) as refused:  # never retried
        list(api.follow("j", sleep=lambda s: None))
    assert refused.value.status == 404
