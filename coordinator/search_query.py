"""Search input and output: the query syntax, languages' stemming, and highlighted snippets.

One query syntax on both databases, PostgreSQL's `websearch_to_tsquery` style: words (all must
match), `"a phrase"`, `or` between alternatives, `-word` to exclude. On SQLite it is rewritten
into an FTS5 expression made only of quoted strings and operators, so no input is ever FTS5
syntax (`NEAR(`, `*`, `"` are plain text). Snippets mark matches with two control characters
(stripped from indexed text) and leave here as plain text plus [start, end) offsets: nothing
from a transcript is ever HTML.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ValidationFailed

KINDS = ("source", "translation")
MARK_START, MARK_END = "\x02", "\x03"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TERM = re.compile(r'"[^"]*"?|\S+')
# The API document states these two patterns as they are checked here (Python `re`):
# a query needs a word (letters or digits) at its start or after a space, so that it has
# something to find whatever else it excludes.
QUERY_PATTERN = r"(^| )[^\W_]"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,2}$"
_QUERY = re.compile(QUERY_PATTERN)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)

# SQLite: languages indexed with the Porter stemmer ("running" finds "run"); every other
# language gets unicode61 alone (case and diacritics folded, no stemming).
SQLITE_STEMMED = frozenset({"en"})
# PostgreSQL: the text search configuration (stemmer and stop words) of each language; others
# use `simple` (folded case, no stemming).
PG_CONFIGS = {
    "ar": "arabic", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "fi": "finnish", "fr": "french", "ga": "irish", "hu": "hungarian",
    "id": "indonesian", "it": "italian", "lt": "lithuanian", "ne": "nepali", "nl": "dutch",
    "no": "norwegian", "nb": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian",
    "sv": "swedish", "ta": "tamil", "tr": "turkish",
}
PG_SIMPLE = "simple"


@dataclass(frozen=True)
class SearchRequest:
    """A checked search: the query text and its filters."""

    q: str
    limit: int = 20
    offset: int = 0
    language: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Snippet:
    """Text around the match and the [start, end) offsets of the matched words in it."""

    text: str
    highlights: tuple[tuple[int, int], ...]


def base_language(code: str | None) -> str:
    """"en-US" -> "en"; blank -> "und"."""
    code = (code or "").strip().lower().replace("_", "-")
    return code.split("-")[0][:8] or "und"


def pg_config(language: str) -> str:
    """The PostgreSQL text search configuration for `language`."""
    return PG_CONFIGS.get(base_language(language), PG_SIMPLE)


def clean_text(text: str) -> str:
    """Indexed text: control characters (the snippet marks among them) become spaces."""
    return _CONTROL.sub(" ", text).strip()


def check_request(q: str | None, max_chars: int, language: str | None = None,
                  kind: str | None = None, limit: int = 20, offset: int = 0) -> SearchRequest:
    """A SearchRequest, or 422 for an empty or too long query or a bad filter."""
    if not clean_text(q or ""):
        raise ValidationFailed("the search query is empty", field="q")
    if len(q) > max_chars:
        raise ValidationFailed(f"the search query is longer than {max_chars} characters "
                               "(MAX_SEARCH_QUERY_CHARS)", field="q")
    if not _QUERY.search(q):
        raise ValidationFailed("the search query has no word to find: it needs a word that "
                               "starts with a letter or digit (-word only excludes)", field="q")
    q = clean_text(q)
    if kind and kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if language and not _LANGUAGE.match(language):
        raise ValidationFailed("language must be a language code such as en or pt-BR",
                               field="language")
    fts_query(q)  # refuses a query with nothing to find, on every database alike
    return SearchRequest(q, limit, offset, base_language(language) if language else None,
                         kind or None)


def _words(text: str) -> str | None:
    """A term as an FTS5 string ("..." with no quotes inside), or None when it has no word."""
    text = text.replace('"', " ").replace("*", " ").strip()
    return f'"{text}"' if any(ch.isalnum() for ch in text) else None


def fts_query(q: str) -> str:
    """The FTS5 expression of a websearch-style query; 422 when nothing in it can match."""
    positive: list[str] = []
    negative: list[str] = []
    pending_or = False
    for term in _TERM.findall(q):
        if term.lower() == "or" and positive:
            pending_or = True
            continue
        excluded = term.startswith("-") and len(term) > 1
        words = _words(term[1:] if excluded else term)
        if words is None:
            continue
        if excluded:
            negative.append(words)
        else:
            if positive:
                positive.append("OR" if pending_or else "AND")
            positive.append(words)
        pending_or = False
    if not positive:
        raise ValidationFailed("the search query has no word to find (an excluded -word alone "
                               "matches nothing)", field="q")
    expression = "(" + " ".join(positive) + ")"
    return " NOT ".join([expression, *negative])


def snippet_of(marked: str) -> Snippet:
    """Split a marked snippet into plain text and highlight offsets."""
    text: list[str] = []
    spans: list[tuple[int, int]] = []
    length, start = 0, None
    for part in re.split(f"([{MARK_START}{MARK_END}])", marked):
        if part == MARK_START:
            start = length
        elif part == MARK_END:
            if start is not None and length > start:
                spans.append((start, length))
            start = None
        else:
            text.append(part)
            length += len(part)
    return Snippet("".join(text), tuple(spans))


def snippet_parts(text: str, highlights: list | tuple) -> list[tuple[str, bool]]:
    """(piece, highlighted) pieces of a snippet, for a page to render (escaped) with <mark>."""
    parts: list[tuple[str, bool]] = []
    at = 0
    for start, end in highlights:
        if start < at or end > len(text):
            continue
        if start > at:
            parts.append((text[at:start], False))
        parts.append((text[start:end], True))
        at = end
    if at < len(text):
        parts.append((text[at:], False))
    return parts
