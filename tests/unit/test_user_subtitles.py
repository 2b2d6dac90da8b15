"""worker.stages.user_subtitles: the pure part (reading the job's subtitles, which text they
stand for, what the transcript says). The dubbing itself is in tests/media/test_user_subtitles.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.protocol import ClaimedJob
from shared.subtitles import Cue
from worker.errors import BadMedia, JobFailed
from worker.stages import user_subtitles
from worker.stages.types import Transcript, Translation, TranslatedSegment

SRT = """1
00:00:01,000 --> 00:00:02,000
<i>Hola</i> a   todos.

2
00:00:03,000 --> 00:00:04,000
{\\an8}<font color="red">Hoy</font> hablamos de la casa.

3
00:00:05,000 --> 00:00:05,500
<i> </i>

4
00:00:09,000 --> 00:00:10,000
Los créditos, después del final.
""".encode()


def _ctx(tmp_path, data: bytes | None, **job):
    path = None
    if data is not None:
        path = tmp_path / "subtitles.txt"
        path.write_bytes(data)
    fields = {"source_language": "en", "target_language": "es", "subtitles_sha256": "0" * 64,
              **job}
    claimed = ClaimedJob(job_id="j", kind="dub", lease_token="t", lease_expires_at=0, attempt=1,
                         max_attempts=3, heartbeat_interval=10, **fields)
    return SimpleNamespace(job=claimed, subtitles_path=path)


def test_target_subtitles_are_cleaned_and_cues_past_the_end_dropped(tmp_path):
    ctx = _ctx(tmp_path, SRT, options={"subtitles_language": "es", "subtitles": "target"})
    user = user_subtitles.load(ctx, duration=8.0)
    assert (user.language, user.role, user.format, user.dropped) == ("es", "target", "srt", 1)
    assert user.cues == (Cue(1.0, 2.0, "Hola a todos."), Cue(3.0, 4.0, "Hoy hablamos de la casa."))
    segments = user_subtitles.as_segments(user.cues)
    assert [(s.index, s.start, s.end, s.words) for s in segments] == [(0, 1.0, 2.0, ()),
                                                                      (1, 3.0, 4.0, ())]


def test_source_subtitles_and_a_language_told_from_the_words(tmp_path):
    english = (b"1\n00:00:01,000 --> 00:00:02,000\nThe cat is on the table.\n\n"
               b"2\n00:00:03,000 --> 00:00:04,000\nAnd you are here with the dog.\n")
    assert user_subtitles.load(_ctx(tmp_path, english, options={"subtitles_language": "en"}),
                               10.0).role == "source"
    # an older coordinator recorded nothing: the words decide (en against es)
    assert user_subtitles.load(_ctx(tmp_path, english), 10.0).language == "en"
    assert user_subtitles.load(_ctx(tmp_path, SRT), 20.0).role == "target"


def test_no_subtitles_and_missing_download(tmp_path):
    assert user_subtitles.load(_ctx(tmp_path, None, subtitles_sha256=None), 5.0) is None
    with pytest.raises(JobFailed, match="not downloaded"):
        user_subtitles.load(_ctx(tmp_path, None), 5.0)
    bare = SimpleNamespace(job=_ctx(tmp_path, None, subtitles_sha256=None).job)
    assert user_subtitles.load(bare, 5.0) is None  # a context without the attribute


@pytest.mark.parametrize("data, options, duration, reason", [
    (b"just text\n", {"subtitles_language": "es"}, 10.0, "not SRT or WebVTT"),
    (b"1\n00:00:01,000 --> 00:00:03,000\na\n\n2\n00:00:02,000 --> 00:00:04,000\nb\n",
     {"subtitles_language": "es"}, 10.0, "overlaps"),
    (SRT, {"subtitles_language": "es"}, 0.5, "before the end of the media"),
    (SRT, {"subtitles_language": "zz"}, 10.0, "not a known language"),
    (b"1\n00:00:01,000 --> 00:00:02,000\n12345\n", {}, 10.0, "could not tell"),
])
def test_bad_subtitles_fail_the_job_permanently(tmp_path, data, options, duration, reason):
    with pytest.raises(BadMedia, match=reason):
        user_subtitles.load(_ctx(tmp_path, data, options=options), duration)


def test_transcript_says_the_text_came_from_the_users_subtitles():
    user = user_subtitles.UserSubtitles("es", "target", "srt", (Cue(1.0, 2.0, "Hola."),), 0)
    transcript = Transcript(language="", language_probability=0.0, duration=5.0, segments=())
    translation = Translation("", "es", (TranslatedSegment(0, 1.0, 2.0, "", "Hola.", "user"),),
                              "user")
    data = user_subtitles.transcript_dict(transcript, translation, user)
    assert data["text_source"] == "user_subtitles" and data["model"] is None
    assert data["language"] is None and data["segments"] == []
    assert data["user_subtitles"] == {"language": "es", "used_as": "target", "format": "srt",
                                      "cues": 1, "dropped_after_end": 0}
    assert data["translation"]["engine"] == "user"
    assert data["translation"]["segments"][0]["text"] == "Hola."
