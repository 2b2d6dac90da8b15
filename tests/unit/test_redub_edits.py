"""Re-dub requests: the edits' validation and the parent checks (coordinator.redub), no server."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from coordinator import redub
from coordinator.errors import Conflict, ValidationFailed

LIMITS = redub.RedubLimits(max_edits=3, max_chars=20)


def parse(segments, limits=LIMITS):
    return redub.parse_edits({"segments": segments}, limits)


def test_text_and_source_text_edits_are_kept_in_index_order():
    edits = parse([{"index": 4, "source_text": " Hello   there "}, {"index": 1, "text": "Hola"}])
    assert edits == [redub.Edit(1, text="Hola"), redub.Edit(4, source_text="Hello there")]
    assert [e.to_dict() for e in edits] == [{"index": 1, "text": "Hola"},
                                            {"index": 4, "source_text": "Hello there"}]


@pytest.mark.parametrize("segments, words", [
    ([], "non-empty"),
    ("x", "non-empty"),
    ([{"index": 1}], "exactly one"),
    ([{"index": 1, "text": "a", "source_text": "b"}], "exactly one"),
    ([{"index": -1, "text": "a"}], "index"),
    ([{"index": True, "text": "a"}], "index"),
    ([{"index": "1", "text": "a"}], "index"),
    ([{"index": 1, "text": "   "}], "empty"),
    ([{"index": 1, "text": 5}], "string"),
    ([{"index": 1, "text": "x" * 21}], "MAX_REDUB_TEXT_CHARS"),
    ([{"index": i, "text": "a"} for i in range(4)], "MAX_REDUB_EDITS"),
    ([{"index": 2, "text": "a"}, {"index": 2, "source_text": "b"}], "twice"),
    ([{"index": 2, "text": "a", "voice": "x"}], "unknown field"),
    (["line"], "object"),
])
def test_bad_edits_are_422_naming_the_problem(segments, words):
    with pytest.raises(ValidationFailed) as err:
        parse(segments)
    assert err.value.status_code == 422 and words in err.value.message


def test_unknown_top_level_field_is_422():
    with pytest.raises(ValidationFailed):
        redub.parse_edits({"segments": [{"index": 0, "text": "a"}], "extra": 1}, LIMITS)


def test_limits_come_from_the_settings():
    limits = redub.RedubLimits.from_config({"MAX_REDUB_EDITS": 7, "MAX_REDUB_TEXT_CHARS": 9})
    assert limits == redub.RedubLimits(7, 9)


def _job(**kw):
    base = dict(id="a" * 32, kind="dub", status="completed", options={}, parent_job_id=None,
                source_language="en", target_language="es", priority=0, callback_url=None,
                asr_model=None, input_sha256="f" * 64, source_url=None, input_name="talk.mp4")
    return SimpleNamespace(**{**base, **kw})


def test_only_completed_dubs_can_be_re_dubbed():
    redub.check_parent(_job())
    with pytest.raises(ValidationFailed):
        redub.check_parent(_job(kind="subtitle"))
    for status in ("queued", "running", "failed", "cancelled"):
        with pytest.raises(Conflict):
            redub.check_parent(_job(status=status))


def test_edit_indices_are_checked_against_the_parents_lines():
    report = json.dumps({"segments": [{"index": 0}, {"index": 2}]}).encode()
    indices = redub.line_indices(report)
    assert indices == {0, 2}
    redub.check_indices([redub.Edit(2, text="a")], indices)
    with pytest.raises(ValidationFailed, match="no line with index 1"):
        redub.check_indices([redub.Edit(1, text="a")], indices)
    with pytest.raises(Conflict):
        redub.line_indices(b"not json")


def test_new_job_keeps_the_parents_settings_and_carries_the_edits():
    parent = _job(options={"voice": "ef_dora", "keep_original": False, "subtitles": "target",
                           "subtitles_language": "es", "redub": {"old": 1}})
    bundle = SimpleNamespace(sha256="b" * 64, size=1234)
    new = redub.new_job(parent, [redub.Edit(3, text="Hola")], bundle)
    assert new.kind == "dub" and new.target_language == "es" and new.source_url is None
    assert new.options["voice"] == "ef_dora" and new.options["keep_original"] is False
    assert "subtitles" not in new.options and "subtitles_language" not in new.options
    assert new.options["redub"] == {"parent_job_id": "a" * 32, "bundle_sha256": "b" * 64,
                                    "bundle_size": 1234, "edits": [{"index": 3, "text": "Hola"}]}


def test_a_source_url_parent_without_a_stored_input_fetches_it_again():
    parent = _job(input_sha256=None, source_url="https://example.com/v.mp4")
    new = redub.new_job(parent, [redub.Edit(0, text="a")], SimpleNamespace(sha256="b" * 64, size=1))
    assert new.source_url == "https://example.com/v.mp4"


def test_bundle_of_names_only_re_dubs():
    job = _job(parent_job_id="c" * 32, options={"redub": {"bundle_sha256": "d" * 64,
                                                          "bundle_size": 9}})
    assert redub.bundle_of(job) == ("d" * 64, 9)
    assert redub.bundle_of(_job()) is None


def test_a_submit_cannot_pose_as_a_re_dub():
    from coordinator.validation import parse_options

    with pytest.raises(ValidationFailed) as err:
        parse_options({"redub": {"parent_job_id": "a" * 32, "edits": []}})
    assert err.value.extra["field"] == "options.redub"


def test_missing_parent_files_are_a_conflict_not_a_server_error(tmp_path, monkeypatch):
    from coordinator.storage import Storage

    storage = Storage(tmp_path)
    storage.prepare()
    artifacts = [SimpleNamespace(name="dub_segments.tar", path="gone/b", sha256="b" * 64, size=1),
                 SimpleNamespace(name="dub_report.json", path="gone/r")]
    monkeypatch.setattr(redub.queries, "visible_artifacts", lambda session, job: artifacts)
    with pytest.raises(Conflict, match="missing"):
        redub.submit(None, storage, _job(), [redub.Edit(0, text="a")], owner_key_id=1,
                     default_max_attempts=3)
