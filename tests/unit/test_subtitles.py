"""SRT / WebVTT writing, wrapping, cue splitting and parsing."""
from __future__ import annotations

import pytest

from worker.stages.subtitles import (
    Cue,
    build_cues,
    format_timestamp,
    parse_srt,
    parse_timestamp,
    parse_vtt,
    to_srt,
    to_vtt,
    wrap_text,
    write_srt,
    write_vtt,
)
from worker.stages.types import Segment, TranslatedSegment

LONG = ("Esta es una frase bastante larga que no cabe en una sola línea de subtítulos y por "
        "eso hay que partirla en varias líneas y también en varios bloques para que se pueda "
        "leer bien.")


@pytest.mark.parametrize(("seconds", "srt", "vtt"), [
    (0, "00:00:00,000", "00:00:00.000"),
    (1.234, "00:00:01,234", "00:00:01.234"),
    (61.0006, "00:01:01,001", "00:01:01.001"),
    (3599.9996, "01:00:00,000", "01:00:00.000"),
    (3 * 3600 + 25 * 60 + 7.5, "03:25:07,500", "03:25:07.500"),
    (-0.5, "00:00:00,000", "00:00:00.000"),
    (100 * 3600, "100:00:00,000", "100:00:00.000"),
])
def test_timestamps(seconds, srt, vtt):
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, ".") == vtt
    if seconds >= 0:
        assert parse_timestamp(srt) == pytest.approx(round(seconds, 3), abs=1e-6)


def test_parse_timestamp_accepts_short_vtt_form():
    assert parse_timestamp("02:03.4") == pytest.approx(123.4)
    with pytest.raises(ValueError):
        parse_timestamp("1:2")


def test_wrap_at_42_characters():
    lines = wrap_text(LONG)
    assert all(len(line) <= 42 for line in lines) and " ".join(lines) == LONG
    assert wrap_text("x" * 50, 42) == ["x" * 42, "x" * 8]
    assert wrap_text("") == []


def test_short_segment_is_one_cue_on_one_or_two_lines():
    text = "Hola a todos, bienvenidos al programa de hoy."
    cues = build_cues([TranslatedSegment(0, 1.0, 3.0, "src", text)])
    assert len(cues) == 1 and cues[0].text.count("\n") == 1
    assert (cues[0].start, cues[0].end) == (1.0, 3.0)


def test_long_segment_is_split_into_cues_sharing_its_time():
    cues = build_cues([Segment(0, 10.0, 20.0, LONG)])
    assert len(cues) >= 2
    assert all(c.text.count("\n") <= 1 for c in cues)
    assert all(len(line) <= 42 for c in cues for line in c.text.split("\n"))
    assert cues[0].start == 10.0 and cues[-1].end == 20.0
    assert all(a.end == pytest.approx(b.start) for a, b in zip(cues, cues[1:]))
    assert " ".join(c.text.replace("\n", " ") for c in cues) == LONG
    lengths = [len(c.text) for c in cues]
    durations = [c.end - c.start for c in cues]
    assert durations[0] / durations[-1] == pytest.approx(lengths[0] / lengths[-1], rel=0.05)


def test_empty_segments_are_skipped_and_cues_sorted():
    segments = [Segment(1, 5.0, 6.0, "segundo"), Segment(0, 1.0, 2.0, "   "),
                Segment(2, 0.0, 1.0, "primero"), Segment(3, 7.0, 7.0, "sin duración")]
    srt = to_srt(segments)
    assert [c.text for c in parse_srt(srt)] == ["primero", "segundo"]
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\nprimero\n\n2\n")


def test_srt_round_trip(tmp_path):
    segments = [Segment(0, 0.5, 2.25, "Hola."), Segment(1, 3.0, 12.0, LONG)]
    path = write_srt(segments, tmp_path / "a.srt")
    parsed = parse_srt(path.read_text(encoding="utf-8"))
    assert parsed == build_cues(segments)
    assert parsed[0] == Cue(0.5, 2.25, "Hola.")


def test_vtt_round_trip_with_escaping(tmp_path):
    segments = [Segment(0, 0.5, 2.0, "Tom & Jerry <3 --> amigos")]
    path = write_vtt(segments, tmp_path / "a.vtt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.000\n")
    assert "&amp;" in text and "&lt;3" in text and "--&gt;" in text
    assert parse_vtt(text) == [Cue(0.5, 2.0, "Tom & Jerry <3 --> amigos")]


def test_vtt_parser_skips_header_notes_and_settings():
    doc = ("\ufeffWEBVTT - dubbed\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:02.500 align:start\n"
           "Línea uno\nLínea dos\n\n00:00:03.000 --> 00:00:04.000\nFin\n")
    assert parse_vtt(doc) == [Cue(1.0, 2.5, "Línea uno\nLínea dos"), Cue(3.0, 4.0, "Fin")]
    with pytest.raises(ValueError):
        parse_vtt("1\n00:00:01,000 --> 00:00:02,000\nhola\n")


def test_srt_parser_handles_crlf_and_bom():
    doc = ("\ufeff1\r\n00:00:01,000 --> 00:00:02,000\r\nHola\r\n\r\n"
           "2\r\n00:00:03,000 --> 00:00:04,000\r\nAdiós\r\n")
    assert parse_srt(doc) == [Cue(1.0, 2.0, "Hola"), Cue(3.0, 4.0, "Adiós")]


def test_to_vtt_of_nothing_is_a_valid_empty_document():
    assert to_vtt([]) == "WEBVTT\n"
    assert parse_vtt(to_vtt([])) == []
    assert to_srt([]) == ""
