"""The summary step of transcribe, subtitle and dub jobs: `summary.json` + `summary.md`.

Extractive by default and offline: the transcript's sentences are embedded
(`summary_model`), ranked by TextRank and picked for diversity by MMR (3–7 key points in spoken
order), the most central sentence gives the title, and chapters are cut at the deepest topic
shifts between neighbouring windows (`summary_rank`); chapters cover [0, duration] in order.
For a job with a translation the same choices are rendered from the translated lines too
(`summary.<target>.json/.md`). A failure here never fails the job: it is logged and the
artifact is skipped.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.summary import Chapter, KeyPoint, Summary, to_markdown
from worker.context import OutputFile
from worker.stages import summary_llm
from worker.stages.summary_rank import (
    Sentence, central, choose_cuts, depth_scores, gap_similarity, key_point_count, mmr, pieces,
    shorten, similarity, split_sentences, textrank,
)

logger = logging.getLogger(__name__)

OFF, AUTO, EXTRACTIVE, ABSTRACTIVE = "off", "auto", "extractive", "abstractive"
MODES = (OFF, AUTO, EXTRACTIVE, ABSTRACTIVE)
CHAPTER_SECONDS = 60.0  # at most one chapter per minute of media


@dataclass(frozen=True)
class Plan:
    """Which sentences make the summary: title, key points, and chapters as sentence ranges."""

    title: int
    points: tuple[int, ...]
    chapters: tuple[tuple[int, int, int], ...]  # (first sentence, end sentence, title sentence)


def chapter_ranges(embeddings: np.ndarray, duration: float) -> list[tuple[int, int]]:
    """Sentence ranges [lo, hi) of the chapters, cut at topic shifts."""
    n = embeddings.shape[0]
    window = max(2, min(5, n // 10))
    min_run = max(3, window)
    most = min(n // min_run - 1, int(duration // CHAPTER_SECONDS), 12)
    cuts = choose_cuts(depth_scores(gap_similarity(embeddings, window)), most, min_run) \
        if n > 2 * min_run else []
    bounds = [0, *cuts, n]
    return list(zip(bounds, bounds[1:]))


def plan(embeddings: np.ndarray, duration: float) -> Plan:
    """Choose the title, key points and chapters from sentence embeddings."""
    scores = textrank(similarity(embeddings))
    points = mmr(embeddings, scores, key_point_count(len(scores)))
    chapters = tuple((lo, hi, central(embeddings, lo, hi))
                     for lo, hi in chapter_ranges(embeddings, duration))
    return Plan(int(np.argmax(scores)), tuple(points), chapters)


def render(chosen: Plan, sentences: Sequence[Sentence], texts: Sequence[str], language: str,
           duration: float, method: str = "extractive", notes: Sequence[str] = ()) -> Summary:
    """The summary of a plan, with `texts` (one per sentence, in any language)."""
    end = max(duration, sentences[-1].end if sentences else 0.0)
    starts = [0.0] + [sentences[lo].start for lo, _, _ in chosen.chapters[1:]]
    chapters = tuple(Chapter(start, stop, shorten(texts[title], 10))
                     for (_, _, title), start, stop in zip(chosen.chapters, starts,
                                                            starts[1:] + [end]))
    points, seen = [], set()
    for i in chosen.points:  # two sentences of one translated line read the same: once
        if texts[i] not in seen:
            seen.add(texts[i])
            points.append(KeyPoint(texts[i], sentences[i].start, sentences[i].end))
    return Summary(shorten(texts[chosen.title], 12), tuple(points), chapters, language, end, method,
                   tuple(notes))


def target_texts(sentences: Sequence[Sentence], translated: dict[int, str]) -> list[str]:
    """Each sentence in the translation: the matching piece of its segment's translated line
    when that line has as many sentences, else the whole line."""
    out = []
    for sentence in sentences:
        parts: list[str] = []
        for segment, number, count in sentence.parts:
            line = translated.get(segment, "")
            cut = pieces(line)
            text = cut[number] if len(cut) == count else line
            if text and (not parts or parts[-1] != text):
                parts.append(text)
        out.append(" ".join(parts) or sentence.text)
    return out


def _abstractive(summary: Summary, sentences: Sequence[Sentence], embedder) -> Summary:
    """The summary with key points (and title) from an LLM, or unchanged with a note."""
    url = summary_llm.configured_url()
    texts = [s.text for s in sentences]
    try:
        if url:
            title, points = summary_llm.abstract(summary_llm.http_ask(url), texts)
            return _with_points(summary, sentences, embedder, title, points)
        rewritten, changed = summary_llm.rewrite(summary_llm.local_ask(),
                                                 [p.text for p in summary.key_points],
                                                 " ".join(texts))
    except Exception as exc:  # any endpoint or model trouble: keep the extractive summary
        logger.warning("abstractive summary failed, keeping the extractive one: %s", exc)
        return _note(summary, f"abstractive summary failed ({str(exc)[:200]}); extractive kept")
    points = tuple(KeyPoint(t, p.start, p.end) for t, p in zip(rewritten, summary.key_points))
    return Summary(summary.title, points, summary.chapters, summary.language, summary.duration,
                   "abstractive" if changed else summary.method, summary.notes)


def _note(summary: Summary, note: str) -> Summary:
    return Summary(summary.title, summary.key_points, summary.chapters, summary.language,
                   summary.duration, summary.method, (*summary.notes, note))


def _with_points(summary: Summary, sentences: Sequence[Sentence], embedder, title: str,
                 points: Sequence[str]) -> Summary:
    """Abstractive points, each timed at the sentence it is closest to."""
    sentence_vectors = embedder.encode([s.text for s in sentences])
    nearest = np.argmax(embedder.encode(list(points)) @ sentence_vectors.T, axis=1)
    timed = sorted(zip(nearest, points), key=lambda pair: int(pair[0]))
    key_points = tuple(KeyPoint(text, sentences[int(i)].start, sentences[int(i)].end)
                       for i, text in timed)
    return Summary(title or summary.title, key_points, summary.chapters, summary.language,
                   summary.duration, "abstractive", summary.notes)


def summarize(segments: Sequence, duration: float, language: str, embedder,
              translated: dict[int, str] | None = None, target: str | None = None,
              mode: str = AUTO) -> list[Summary]:
    """The summary of timed segments, and of their translation when given (empty: no speech)."""
    sentences = split_sentences(segments)
    if not sentences:
        return []
    chosen = plan(embedder.encode([s.text for s in sentences]), duration)
    summary = render(chosen, sentences, [s.text for s in sentences], language, duration)
    if mode == ABSTRACTIVE or (mode == AUTO and summary_llm.configured_url()):
        summary = _abstractive(summary, sentences, embedder)
    out = [summary]
    if translated is not None and target and target != language:
        out.append(render(chosen, sentences, target_texts(sentences, translated), target,
                          duration, notes=("key points and chapters chosen on the original "
                                           "and shown in its translation",)))
    return out


def write(out_dir: Path, summary: Summary, suffix: str = "") -> list[OutputFile]:
    """Write summary[.<lang>].json and .md."""
    base = f"summary{'.' + suffix if suffix else ''}"
    data, md = out_dir / f"{base}.json", out_dir / f"{base}.md"
    data.write_text(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
    md.write_text(to_markdown(summary), encoding="utf-8")
    return [OutputFile(data.name, data, "application/json"),
            OutputFile(md.name, md, "text/markdown")]


def job_summaries(out_dir: Path, transcript, translation, duration: float, mode: str,
                  embedder=None) -> tuple[list[OutputFile], dict]:
    """The pipeline's hook: summary artifacts of a job, and a note for its report.

    Never raises (but for cancellation): a failed summary is logged and left out."""
    if mode == OFF:
        return [], {"summary": "off"}
    t0 = time.monotonic()
    try:
        if embedder is None:
            from worker.stages.summary_model import shared_embedder

            embedder = shared_embedder()
        translated = {t.index: t.text for t in translation.segments} if translation else None
        target = translation.target_language if translation else None
        found = summarize(transcript.segments, duration, transcript.language, embedder,
                          translated, target, mode)
        files = [f for i, s in enumerate(found) for f in write(out_dir, s, s.language if i else "")]
    except Exception as exc:  # the summary is an extra: the job's real outputs must not depend on it
        logger.warning("summary skipped: %s", exc, exc_info=True)
        return [], {"summary": f"failed: {str(exc)[:300]}"}
    note = "no speech" if not found else found[0].method
    return files, {"summary": note, "summary_seconds": round(time.monotonic() - t0, 3)}
