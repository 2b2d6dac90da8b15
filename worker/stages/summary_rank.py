"""Extractive summarising over sentence embeddings: sentences, TextRank, MMR, topic-shift chapters.

Pure logic on numpy arrays (unit-tested with fake embeddings): `embeddings` are L2-normalised
rows, one per sentence, so a dot product is the cosine similarity.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_SENTENCE_END = re.compile(r"(?:(?<=[.!?…。！？])|(?<=[.!?…。！？][\"»”')\]]))\s+")
_FINAL = re.compile(r"[.!?…。！？][\"»”')\]]*$")
_MIN_WORDS = 3  # shorter pieces ("Yes." "Thank you.") join the next sentence


@dataclass(frozen=True)
class Sentence:
    """One sentence of the transcript with its (estimated) time.

    `parts` says where its text came from: (segment index, piece number, pieces in that
    segment) for each piece, so a translation of the same segments can be cut the same way.
    """

    position: int
    start: float
    end: float
    text: str
    parts: tuple[tuple[int, int, int], ...] = ()


def pieces(text: str) -> list[str]:
    """A text cut after each sentence-ending punctuation mark."""
    return [p.strip() for p in _SENTENCE_END.split(text.strip()) if p.strip()]


def _split_segment(segment) -> list[tuple[float, float, str, tuple[int, int, int]]]:
    """A segment's pieces with times shared out by their length in characters."""
    found = pieces(segment.text)
    total = sum(len(p) for p in found) or 1
    span, at, out = max(0.0, segment.end - segment.start), segment.start, []
    for number, piece in enumerate(found):
        end = at + span * len(piece) / total
        out.append((at, end, piece, (segment.index, number, len(found))))
        at = end
    return out


def _complete(text: str) -> bool:
    return bool(_FINAL.search(text)) and len(text.split()) >= _MIN_WORDS


def split_sentences(segments: Sequence) -> list[Sentence]:
    """Sentences of timed segments (objects with index, start, end, text), in order.

    A sentence running over several segments is joined; very short pieces join the next one.
    """
    sentences: list[Sentence] = []
    start, texts, parts = 0.0, [], []
    for segment in segments:
        for piece_start, piece_end, text, part in _split_segment(segment):
            start = start if texts else piece_start
            texts.append(text)
            parts.append(part)
            joined = " ".join(texts)
            if _complete(joined):
                sentences.append(Sentence(len(sentences), start, piece_end, joined, tuple(parts)))
                texts, parts = [], []
    if texts:
        end = segments[-1].end if segments else start
        sentences.append(Sentence(len(sentences), start, end, " ".join(texts), tuple(parts)))
    return sentences


def similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarities (rows are normalised), negatives clipped, diagonal zero."""
    sim = np.clip(embeddings @ embeddings.T, 0.0, None)
    np.fill_diagonal(sim, 0.0)
    return sim


def textrank(sim: np.ndarray, damping: float = 0.85, iterations: int = 100) -> np.ndarray:
    """Centrality of each sentence: PageRank on the weighted similarity graph."""
    n = sim.shape[0]
    if n == 0:
        return np.zeros(0)
    out = sim.sum(axis=1, keepdims=True)
    walk = np.divide(sim, out, out=np.full_like(sim, 1.0 / n), where=out > 0)
    scores = np.full(n, 1.0 / n)
    for _ in range(iterations):
        updated = (1 - damping) / n + damping * walk.T @ scores
        if np.abs(updated - scores).sum() < 1e-9:
            return updated
        scores = updated
    return scores


def key_point_count(n: int, least: int = 3, most: int = 7) -> int:
    """How many key points n sentences deserve: about √n, 3–7 (fewer only when n is smaller)."""
    return min(n, max(least, min(most, round(math.sqrt(n)))))


def mmr(embeddings: np.ndarray, scores: np.ndarray, k: int, balance: float = 0.7) -> list[int]:
    """Pick k central but mutually different sentences (maximal marginal relevance), in order."""
    n = len(scores)
    if n == 0 or k <= 0:
        return []
    relevance = scores / scores.max() if scores.max() > 0 else scores
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < min(k, n):
        redundancy = (embeddings @ embeddings[chosen].T).max(axis=1)
        value = balance * relevance - (1 - balance) * redundancy
        value[chosen] = -np.inf
        chosen.append(int(np.argmax(value)))
    return sorted(chosen)


def _window_mean(embeddings: np.ndarray, lo: int, hi: int) -> np.ndarray:
    vec = embeddings[max(0, lo):hi].mean(axis=0)
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else vec


def gap_similarity(embeddings: np.ndarray, window: int) -> np.ndarray:
    """For each gap before sentence i (1..n-1): similarity of the windows on either side."""
    n = embeddings.shape[0]
    return np.array([float(_window_mean(embeddings, i - window, i)
                           @ _window_mean(embeddings, i, min(n, i + window)))
                     for i in range(1, n)])


def depth_scores(gaps: np.ndarray) -> np.ndarray:
    """TextTiling depth: how far each gap dips below the highest points on both sides."""
    depths = np.zeros_like(gaps)
    for i, value in enumerate(gaps):
        left = gaps[:i + 1].max()
        right = gaps[i:].max()
        depths[i] = (left - value) + (right - value)
    return depths


def choose_cuts(depths: np.ndarray, most: int, min_run: int) -> list[int]:
    """Sentence positions that start a new chapter: the deepest valleys above the TextTiling
    threshold (mean − std/2), at least `min_run` sentences apart, at most `most` of them."""
    if depths.size == 0 or most <= 0:
        return []
    threshold = max(depths.mean() - depths.std() / 2, 1e-6)
    n = depths.size + 1
    cuts: list[int] = []
    for gap in np.argsort(-depths, kind="stable"):
        position = int(gap) + 1  # the gap before sentence `position`
        if depths[gap] < threshold or len(cuts) >= most:
            break
        if position < min_run or n - position < min_run:
            continue
        if all(abs(position - c) >= min_run for c in cuts):
            cuts.append(position)
    return sorted(cuts)


def central(embeddings: np.ndarray, lo: int, hi: int) -> int:
    """The sentence of [lo, hi) closest to the group's mean (its most representative)."""
    centre = _window_mean(embeddings, lo, hi)
    return lo + int(np.argmax(embeddings[lo:hi] @ centre))


def shorten(text: str, max_words: int = 12) -> str:
    """A title from a sentence: at most `max_words` words, without the final full stop."""
    words = text.split()
    short = " ".join(words[:max_words]).rstrip(" ,;:—-")
    if len(words) > max_words:
        return short.rstrip(".!?…") + "…"
    return short.rstrip(".。") or text.strip()
