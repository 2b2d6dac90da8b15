"""shared.subtitles: the parser both sides use, the dub checks and the language pick."""
from __future__ import annotations

import pytest

from shared.subtitles import (SRT, VTT, Cue, SubtitleError, language_from_filename, parse_document,
                              pick_language, subtitles_language)

SRT_ES = """1
00:00:01,000 --> 00:00:02,500
Hola a todos, bienvenidos al programa.

2
00:00:03,000 --> 00:00:04,200
Hoy vamos a hablar de la casa y de los perros.
""".encode()

VTT_EN = b"""WEBVTT

00:01.000 --> 00:02.500 align:start
<v Anna>The cat is on the table.

00:03.000 --> 00:04.000
And you are here with the dog.
"""


def test_srt_and_vtt_parse_with_their_timings():
    srt = parse_document(SRT_ES, allow_text=False)
    assert srt.kind == SRT and [(c.start, c.end) for c in srt.cues] == [(1.0, 2.5), (3.0, 4.2)]
    vtt = parse_document(VTT_EN, allow_text=False)
    assert vtt.kind == VTT and vtt.cues[0].text == "<v Anna>The cat is on the table."
    assert parse_document(b"\xef\xbb\xbf" + SRT_ES.replace(b"\n", b"\r\n")).cues == srt.cues
    assert parse_document(SRT_ES.decode().encode("utf-16")).cues == srt.cues


@pytest.mark.parametrize("raw, reason", [
    (b"", "no text"),
    (b"   \n\n", "no text"),
    (b"Just a line of text.\nAnother line.\n", "not SRT or WebVTT"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a subtitle"),
    (b"\xff\xd8\xff\xe0 jpeg \x80\x81", "not a subtitle"),
    (b"1\n00:00:03,000 --> 00:00:02,000\nbackwards\n", "ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:01,000\nzero length\n", "ends before it starts"),
    (b"1\n00:00:01,000 --> 00:00:03,000\na\n\n2\n00:00:02,000 --> 00:00:04,000\nb\n", "overlaps"),
    (b"1\n00:00:05,000 --> 00:00:06,000\na\n\n2\n00:00:01,000 --> 00:00:02,000\nb\n", "out of order"),
    (b"1\n-00:00:01,000 --> 00:00:02,000\nneg\n", "negative"),
    (b"WEBVTT\n\n00:00:01.000 --> -00:00:02.000\nneg\n", "negative"),
    (b"1\n00:00:01,000 --> 00:00:0x,000\na\n", "malformed"),
    (b"1\n00:00:01,000 --> 00:00:02,000\n\n", "no text"),
])
def test_bad_files_raise_a_subtitle_error_with_the_reason(raw, reason):
    with pytest.raises(SubtitleError, match=reason):
        parse_document(raw, allow_text=False)


def test_subtitle_error_is_a_value_error_and_text_is_fine_where_allowed():
    assert issubclass(SubtitleError, ValueError)
    doc = parse_document(b"Just a line of text.\nAnother line.\n")
    assert [c.text for c in doc.cues] == ["Just a line of text.", "Another line."]


def test_worker_modules_re_export_the_shared_parser():
    import shared.subtitles as shared
    from worker.stages import subtitle_translate, subtitles

    assert subtitles.parse_srt is shared.parse_srt and subtitles.Cue is shared.Cue
    assert subtitle_translate.guess_language is shared.guess_language
    from worker.errors import BadMedia
    with pytest.raises(BadMedia, match="overlaps"):
        subtitle_translate.parse_document(
            b"1\n00:00:01,000 --> 00:00:03,000\na\n\n2\n00:00:02,000 --> 00:00:04,000\nb\n")


@pytest.mark.parametrize("name, code", [
    ("talk.es.srt", "es"), ("Talk.EN.vtt", "en"), ("movie.pt-BR.srt", "pt"),
    ("movie.pt_BR.srt", "pt"), ("C:\\films\\talk.fr.srt", "fr"), ("/x/y/talk.de.vtt", "de"),
    ("talk.srt", None), ("talk.final.srt", None), ("talk.xx.srt", None), ("", None), (None, None),
])
def test_language_from_filename(name, code):
    assert language_from_filename(name) == code


def _cues(*texts: str) -> list[Cue]:
    return [Cue(i, i + 1, t) for i, t in enumerate(texts)]


def test_pick_language_between_source_and_target():
    spanish = _cues("Hola a todos, el gato está en la mesa", "y los perros que no se ven")
    english = _cues("The cat is on the table and you are here", "with the dog")
    assert pick_language(spanish, ["en", "es"]) == "es"
    assert pick_language(english, ["en", "es"]) == "en"
    assert pick_language(_cues("1234 !!"), ["en", "es"]) is None  # nothing to go by
    assert pick_language(_cues("the"), ["en", "es"]) is None  # one word is too little
    # a language without a word list wins when the text shows none of the other's words
    assert pick_language(_cues("こんにちは、みなさん", "今日は晴れです"), ["ja", "en"]) == "ja"
    assert pick_language(english, ["ja", "en"]) == "en"


def test_subtitles_language_order_name_then_words():
    english = _cues("The cat is on the table and you are here", "with the dog")
    # the file name wins over the words
    assert subtitles_language(english, "talk.es.srt", "en", "es") == "es"
    assert subtitles_language(english, "talk.srt", "en", "es") == "en"
    assert subtitles_language(english, None, "auto", "es") == "en"
    spanish = _cues("Hola a todos, el gato está en la mesa", "y los perros que no se ven")
    assert subtitles_language(spanish, None, "auto", "es") == "es"
    assert subtitles_language(_cues("12 34"), None, "auto", "es") is None


def test_a_tie_between_related_languages_goes_to_the_preferred_one():
    # "a", "de", "la", "y": Spanish and Portuguese score the same on these common words
    text = _cues("Hola a todos y bienvenidos.", "Hoy vamos a hablar de la casa.")
    assert pick_language(text, ["es", "pt", "ca"]) is None
    assert pick_language(text, ["es", "pt", "ca"], prefer="es") == "es"
    assert subtitles_language(text, None, "auto", "es") == "es"
