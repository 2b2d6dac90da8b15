"""Run every benchmark (`make bench`): protocol figures, peers side by side, hostile clients, LLM runtimes, then the media pipeline.

Each runs as its own process (the pipeline bench must pay model loading itself); a failing
bench does not stop the next one, but makes this script exit non-zero.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RUNS = (
    ("protocol", [BENCH / "bench_protocol.py", "all"]),
    ("peers", [BENCH / "bench_peers.py"]),
    ("hostile", [BENCH / "bench_hostile.py", "all"]),
    ("llm", [BENCH / "bench_llm.py", "--out", BENCH / "results" / "llm-runtimes.json"]),
    ("pipeline", [BENCH / "bench_pipeline.py"]),
)


def run(name: str, args: list) -> bool:
    """Run one bench script with this interpreter; True if it succeeded."""
    print(f"== {name}: {' '.join(str(a) for a in args)}", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call([sys.executable, *map(str, args)], cwd=BENCH.parent)
    print(f"== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    return code == 0


def main() -> int:
    """Run all benches; 0 if every one succeeded."""
    results = {name: run(name, args) for name, args in RUNS}
    failed = [name for name, ok in results.items() if not ok]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    print(f"figures in {BENCH / 'results'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
