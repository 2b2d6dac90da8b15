"""The `translate` kind's input handling: format detection, timings, bad input, language guess."""
from __future__ import annotations

import pytest

from worker.errors import BadMedia
from worker.stages.subtitle_translate import (SRT, TEXT, VTT, Cue, TranslatePipeline, guess_language,
                                              parse_document)

SRT_DOC = b"""1
00:00:01,000 --> 00:00:02,500
Hello there,

2
00:00:02,600 --> 00:00:04,000
how are you today?
"""

VTT_DOC = b"""WEBVTT

00:00:01.000 --> 00:00:02.500
Good morning.
"""


def test_formats_are_detected_and_parsed():
    srt = parse_document(SRT_DOC)
    assert srt.kind == SRT and [c.start for c in srt.cues] == [1.0, 2.6] and srt.cues[1].end == 4.0
    assert parse_document(b"\xef\xbb\xbf" + SRT_DOC.replace(b"\n", b"\r\n")).cues == srt.cues
    vtt = parse_document(VTT_DOC)
    assert vtt.kind == VTT and vtt.cues[0].text == "Good morning."
    text = parse_document("First line.\n\nSecond line.\n".encode("utf-16"))
    assert text.kind == TEXT and [c.text for c in text.cues] == ["First line.", "Second line."]


@pytest.mark.parametrize("raw, reason", [
    (b"", "no text"),
    (b"\n \n", "no text"),
    (b"\x00\x01\x02binary\xff\xfe\x00", "not a subtitle"),
    (bytes(range(256)) * 4, "not a subtitle"),
    (b"1\n00:00:03,000 --> 00:00:02,000\nbackwards\n", "ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:03,000\na\n\n2\n00:00:02,000 --> 00:00:04,000\nb\n", "overlaps"),
    (b"1\n00:00:01,000 --> 00:00:0x,000\na\n", "malformed"),
    (b"WEBVTT\n\n-00:00:01.000 --> 00:00:02.000\nneg\n", "negative"),
])
def test_bad_input_fails_with_a_reason(raw, reason):
    with pytest.raises(BadMedia, match=reason):
        parse_document(raw)


def test_language_guess():
    def cues(text):
        return [Cue(0, 1, text)]
    assert guess_language(cues("the cat is on the table and you are here")) == "en"
    assert guess_language(cues("el gato está en la mesa y los perros que no")) == "es"
    assert guess_language(cues("le chat est sur la table avec les enfants qui")) == "fr"
    assert guess_language(cues("1234 !!")) == "en"


class _Ctx:
    def __init__(self, tmp_path, **job):
        from shared.protocol import ClaimedJob
        self.job = ClaimedJob(job_id="j", kind="translate", lease_token="t", lease_expires_at=0,
                              attempt=1, max_attempts=3, heartbeat_interval=10, **job)
        self.work_dir = tmp_path / "work"
        self.stages = []

    def stage(self, stage, message=None):
        self.stages.append(stage)

    def progress(self, percent, message=None, eta_seconds=None):
        pass

    def check(self):
        pass


def test_identity_translation_keeps_every_cue_and_timing(tmp_path):
    """Same source and target: the pipeline's own plumbing, one output cue per input cue."""
    long = b"1\n00:00:01,000 --> 00:00:02,000\n" + b"word " * 40 + b"\n"
    src = tmp_path / "in.srt"
    src.write_bytes(SRT_DOC + b"\n3\n00:00:05,000 --> 00:00:06,000\n" + b"word " * 40 + b"\n")
    result = TranslatePipeline().run(_Ctx(tmp_path, source_language="en", target_language="en"), src)
    assert result.main == "subtitles.en.srt" and {o.name for o in result.outputs} == {
        "subtitles.en.srt", "subtitles.en.vtt"}
    out = parse_document(result.outputs[0].path.read_bytes())
    assert [(c.start, c.end) for c in out.cues] == [(1.0, 2.5), (2.6, 4.0), (5.0, 6.0)]
    assert " ".join(out.cues[2].text.split()) == " ".join(["word"] * 40)
    assert long  # the 40-word cue stayed one cue (wrapped over lines, never split in time)
