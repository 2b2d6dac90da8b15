"""Sound measurements for media tests, made on decoded output and independent of the pipeline."""
from __future__ import annotations

import numpy as np


def sound_onsets(audio: np.ndarray, rate: int = 16000, frame: float = 0.005,
                 floor_db: float = -45, min_quiet: float = 0.03) -> list[float]:
    """Times where sound (frames above `floor_db` dBFS) starts after at least `min_quiet` s of
    silence."""
    hop = int(rate * frame)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    loud = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9) > floor_db
    onsets, quiet = [], 10**9
    for i, is_loud in enumerate(loud):
        if is_loud and quiet * frame >= min_quiet:
            onsets.append(i * frame)
        quiet = 0 if is_loud else quiet + 1
    return onsets
