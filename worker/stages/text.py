"""Small text helpers shared by the subtitle writer and the TTS text splitter."""
from __future__ import annotations


def greedy_pack(pieces: list[str], limit: int) -> list[str]:
    """Join neighbouring pieces with spaces while each result stays within `limit` characters."""
    packed: list[str] = []
    for piece in pieces:
        if packed and len(packed[-1]) + 1 + len(piece) <= limit:
            packed[-1] = f"{packed[-1]} {piece}"
        else:
            packed.append(piece)
    return packed
