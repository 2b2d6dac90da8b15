"""Summaries: sentence splitting, ranking, key points, chapters and rendering, on fake embeddings."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

np = pytest.importorskip("numpy")

from shared.summary import SummaryError, SummaryLimits, parse_summary, to_markdown  # noqa: E402
from worker.stages import summary, summary_llm  # noqa: E402
from worker.stages.options import MediaOptions  # noqa: E402
from worker.stages.summary_rank import (  # noqa: E402
    choose_cuts, depth_scores, key_point_count, mmr, shorten, split_sentences, textrank,
)
from worker.stages.types import Segment, Transcript, Translation, TranslatedSegment  # noqa: E402


class BagOfWords:
    """A fake embedder: the normalised sum of a fixed random vector per word (shared words →
    similar sentences), enough to exercise the ranking without a model."""

    name = "bag-of-words"

    def encode(self, texts):
        rows = []
        for text in texts:
            vec = np.zeros(64)
            for word in re.findall(r"\w+", text.lower()):
                if len(word) > 3:
                    seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
                    vec += np.random.default_rng(seed).standard_normal(64)
            norm = np.linalg.norm(vec)
            rows.append(vec / norm if norm else vec)
        return np.array(rows)


TOPICS = {
    "river": "The river water flows downhill through the valley river bed",
    "bread": "The baker kneads bread dough and bakes the bread loaves",
    "stars": "The telescope shows distant stars and bright galaxies at night",
}


def _talk(per_topic: int = 8, seconds: float = 5.0) -> list[Segment]:
    """Three topics in a row, each sentence a variation on its topic's words."""
    segs = []
    for topic, words in TOPICS.items():
        base = words.split()
        for i in range(per_topic):
            text = " ".join(base[i % 3:] + base[:i % 3]) + f" number {topic}{i}."
            n = len(segs)
            segs.append(Segment(n, n * seconds, (n + 1) * seconds - 0.5, text))
    return segs


def test_split_sentences_shares_time_by_length_and_joins_short_pieces():
    segs = [Segment(0, 0.0, 10.0, "First sentence is here. Second one is here too."),
            Segment(1, 10.0, 12.0, "Yes."), Segment(2, 12.0, 16.0, "and then it ends well.")]
    out = split_sentences(segs)
    assert [s.text for s in out] == ["First sentence is here.", "Second one is here too.",
                                    "Yes. and then it ends well."]
    assert out[0].start == 0.0 and 4.0 < out[0].end < 5.5 and out[1].end == pytest.approx(10.0)
    assert out[2].start == 10.0 and out[2].end == 16.0
    assert out[2].parts == ((1, 0, 1), (2, 0, 1))


def test_split_sentences_keeps_an_unfinished_tail():
    out = split_sentences([Segment(0, 0.0, 3.0, "no punctuation at all")])
    assert [(s.text, s.start, s.end) for s in out] == [("no punctuation at all", 0.0, 3.0)]
    assert split_sentences([]) == []


def test_textrank_prefers_the_sentence_most_like_the_others():
    emb = BagOfWords().encode(["river water valley", "river water flows", "river valley water",
                               "bread dough"])
    scores = textrank(np.clip(emb @ emb.T, 0, None) - np.eye(4))
    assert scores.argmin() == 3 and scores.sum() == pytest.approx(1.0)


def test_key_point_count_is_three_to_seven():
    assert [key_point_count(n) for n in (1, 2, 3, 9, 30, 49, 200)] == [1, 2, 3, 3, 5, 7, 7]


def test_mmr_picks_diverse_sentences_in_spoken_order():
    segs = _talk()
    emb = BagOfWords().encode([s.text for s in segs])
    chosen = mmr(emb, textrank(np.clip(emb @ emb.T, 0, None)), 3)
    assert chosen == sorted(chosen)
    assert {c // 8 for c in chosen} == {0, 1, 2}  # one from each topic, not three alike


def test_depth_and_cuts_find_the_valleys():
    gaps = np.array([0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.3, 0.9, 0.9])
    depths = depth_scores(gaps)
    assert depths.argmax() == 2
    assert choose_cuts(depths, most=5, min_run=2) == [3, 7]
    assert choose_cuts(depths, most=1, min_run=2) == [3]
    assert choose_cuts(depths, most=5, min_run=5) == []  # too close to an end


def test_shorten_titles():
    assert shorten("The river floods.") == "The river floods"
    assert shorten(" ".join(f"w{i}" for i in range(20)), 5) == "w0 w1 w2 w3 w4…"


def test_summary_of_three_topics_has_three_chapters_covering_the_duration():
    segs = _talk()
    duration = 130.0
    [found] = summary.summarize(segs, duration, "en", BagOfWords())
    assert 3 <= len(found.key_points) <= 7
    texts = {s.text for s in segs}
    assert all(p.text in texts for p in found.key_points)
    assert [p.start for p in found.key_points] == sorted(p.start for p in found.key_points)
    chapters = found.chapters
    assert len(chapters) == 3
    assert chapters[0].start == 0.0 and chapters[-1].end == duration
    assert all(a.end == b.start for a, b in zip(chapters, chapters[1:]))
    assert [c.start for c in chapters[1:]] == [segs[8].start, segs[16].start]
    assert "river" in chapters[0].title and "bread" in chapters[1].title
    assert found.title and found.method == "extractive"


def test_short_media_gets_one_chapter_and_few_points():
    segs = [Segment(0, 0.0, 4.0, "The river is long."), Segment(1, 4.0, 9.0, "It floods in spring.")]
    [found] = summary.summarize(segs, 10.0, "en", BagOfWords())
    assert len(found.key_points) == 2
    assert [(c.start, c.end) for c in found.chapters] == [(0.0, 10.0)]


def test_translation_uses_the_same_choices_piece_by_piece():
    segs = _talk()
    translated = {s.index: f"ES {s.index} uno." for s in segs}
    original, target = summary.summarize(segs, 130.0, "en", BagOfWords(), translated, "es")
    assert target.language == "es"
    assert [p.start for p in target.key_points] == [p.start for p in original.key_points]
    assert [c.start for c in target.chapters] == [c.start for c in original.chapters]
    assert all(p.text.startswith("ES ") for p in target.key_points)
    two = [Segment(0, 0.0, 6.0, "One long sentence here. Another long sentence there.")]
    assert summary.target_texts(split_sentences(two), {0: "Una frase. Otra frase."}) == \
        ["Una frase.", "Otra frase."]
    assert summary.target_texts(split_sentences(two), {0: "Todo junto"}) == \
        ["Todo junto", "Todo junto"]  # both sentences come from that one line


def test_job_summaries_writes_both_languages(tmp_path):
    segs = tuple(_talk())
    transcript = Transcript("en", 1.0, 130.0, segs)
    translation = Translation("en", "es", tuple(TranslatedSegment(s.index, s.start, s.end, s.text,
                                                                  f"Frase {s.index}.") for s in segs))
    files, note = summary.job_summaries(tmp_path, transcript, translation, 130.0, "auto", BagOfWords())
    assert sorted(f.name for f in files) == ["summary.es.json", "summary.es.md", "summary.json",
                                              "summary.md"]
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["version"] == 1 and data["chapters"][-1]["end"] == 130.0
    assert (tmp_path / "summary.md").read_text().startswith("# ")
    assert note["summary"] == "extractive"


def test_job_summaries_never_raise(tmp_path):
    class Broken:
        def encode(self, texts):
            raise RuntimeError("model exploded")

    transcript = Transcript("en", 1.0, 10.0, (Segment(0, 0, 5, "The river is long and wide."),))
    files, note = summary.job_summaries(tmp_path, transcript, None, 10.0, "auto", Broken())
    assert files == [] and "model exploded" in note["summary"]
    assert summary.job_summaries(tmp_path, transcript, None, 10.0, "off", Broken()) == \
        ([], {"summary": "off"})
    empty = Transcript("en", 1.0, 10.0, ())
    assert summary.job_summaries(tmp_path, empty, None, 10.0, "auto", BagOfWords())[0] == []


def test_markdown_escapes_markup():
    found = parse_summary({"title": "<b>Hi</b> [x](javascript:1)", "key_points": [
        {"text": "*bold* point", "start": 61, "end": 62}],
        "chapters": [{"start": 0, "end": 3725, "title": "# All"}]}, SummaryLimits())
    md = to_markdown(found)
    assert "\\<b\\>Hi\\</b\\> \\[x\\](javascript:1)" in md
    assert "- \\*bold\\* point (1:01)" in md and "- 0:00–1:02:05 \\# All" in md


@pytest.mark.parametrize("body, field", [
    ({"key_points": [], "chapters": []}, "title"),
    ({"title": "t", "key_points": "x", "chapters": []}, "key_points"),
    ({"title": "t", "key_points": [{"text": ""}], "chapters": []}, "key_points[0].text"),
    ({"title": "t", "key_points": [], "chapters": [{"start": 5, "end": 1, "title": "a"}]},
     "chapters[0]"),
    ({"title": "t", "key_points": [], "chapters": [{"start": 0, "end": 5, "title": "a"},
                                                   {"start": 4, "end": 9, "title": "b"}]},
     "chapters[1]"),
    ({"title": "t" * 1001, "key_points": [], "chapters": []}, "title"),
    ({"title": "t", "key_points": [{"text": "a", "start": True}], "chapters": []},
     "key_points[0].start"),
])
def test_parse_summary_names_the_bad_field(body, field):
    with pytest.raises(SummaryError) as err:
        parse_summary(body, SummaryLimits())
    assert err.value.field == field


def test_summary_option():
    class Job:
        asr_model = None

        def __init__(self, options):
            self.options = options

    assert MediaOptions.from_job(Job({})).summary == "auto"
    assert MediaOptions.from_job(Job({"summary": False})).summary == "off"
    assert MediaOptions.from_job(Job({"summary": "abstractive"})).summary == "abstractive"
    with pytest.raises(Exception):
        MediaOptions.from_job(Job({"summary": "bogus"}))


def test_supported_guard():
    source = "The river floods every spring because the snow melts in the mountains."
    assert summary_llm.supported("Spring floods come from melting mountain snow", source)
    assert not summary_llm.supported("The government builds new dams for electricity", source)


def test_abstractive_endpoint_answer_is_guarded_and_falls_back(monkeypatch):
    segs = _talk()
    answers = {"reply": json.dumps({"title": "Rivers, bread and stars", "key_points": [
        "The river water flows downhill", "The baker bakes bread loaves",
        "The telescope shows distant galaxies", "Aliens built the pyramids"]})}
    monkeypatch.setattr(summary_llm, "configured_url", lambda: "http://llm.invalid/v1")
    monkeypatch.setattr(summary_llm, "http_ask", lambda url: lambda system, user: answers["reply"])
    [found] = summary.summarize(segs, 130.0, "en", BagOfWords(), mode="auto")
    assert found.method == "abstractive"
    assert [p.text for p in found.key_points] == ["The river water flows downhill",
                                                  "The baker bakes bread loaves",
                                                  "The telescope shows distant galaxies"]
    answers["reply"] = "sorry, I cannot do that"
    [found] = summary.summarize(segs, 130.0, "en", BagOfWords(), mode="auto")
    assert found.method == "extractive" and "extractive kept" in found.notes[0]


def test_local_rewrite_keeps_unsupported_points(monkeypatch):
    segs = _talk()
    answers = iter(["River water flows through the valley", "Unicorns dance on rainbows",
                    "Distant stars and galaxies"] * 3)
    monkeypatch.setattr(summary_llm, "configured_url", lambda: None)
    monkeypatch.setattr(summary_llm, "local_ask", lambda: lambda system, user: next(answers))
    [plain] = summary.summarize(segs, 130.0, "en", BagOfWords(), mode="extractive")
    [found] = summary.summarize(segs, 130.0, "en", BagOfWords(), mode="abstractive")
    assert found.method == "abstractive"
    assert found.key_points[1].text == plain.key_points[1].text  # the unicorn answer was refused
    assert found.key_points[0].text == "River water flows through the valley"
