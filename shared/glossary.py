"""The `glossary` job option: terms the translation must render a fixed way.

`{"term": "translation", ...}`: at most MAX_ENTRIES entries of non-empty strings of at most
MAX_CHARS characters. The coordinator checks it at submit (422); the worker checks it again.
"""
from __future__ import annotations

from typing import Any

MAX_ENTRIES = 200
MAX_CHARS = 100


def parse_glossary(value: Any) -> dict[str, str]:
    """The validated glossary ({} when absent); ValueError with a readable reason otherwise."""
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        raise ValueError('glossary must be an object like {"term": "translation"}')
    if len(value) > MAX_ENTRIES:
        raise ValueError(f"glossary may hold at most {MAX_ENTRIES} terms")
    out = {}
    for term, translation in value.items():
        if not isinstance(translation, str) or not term.strip() or not translation.strip():
            raise ValueError("glossary terms and translations must be non-empty strings")
        if len(term) > MAX_CHARS or len(translation) > MAX_CHARS:
            raise ValueError(f"glossary terms and translations are at most {MAX_CHARS} characters")
        out[" ".join(term.split())] = " ".join(translation.split())
    return out
