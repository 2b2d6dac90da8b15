"""`make run`: start a coordinator and one worker locally, dub a sample English video into Spanish.

Everything stays on this machine: SQLite + files under ./data (or $DUBFLEET_DATA_DIR), offline
models from installed packages. Pass a video path to dub your own file instead of the sample.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubfleet.local import BIN, Coordinator, start_worker, stop_all  # noqa: E402


def main() -> int:
    """Run the demo; return the client's exit code."""
    data = Path(os.environ.get("DUBFLEET_DATA_DIR", ROOT / "data")).resolve()
    video = Path(sys.argv[1]) if len(sys.argv) > 1 else _sample(data)
    target = os.environ.get("DUBFLEET_TARGET_LANGUAGE", "es")
    coord = Coordinator(data / "coordinator", worker_key="dfw_" + secrets.token_urlsafe(24),
                        admin_key="dfa_" + secrets.token_urlsafe(24), threads=16)
    print(f"coordinator: starting on {coord.url} (data in {coord.data_dir})", flush=True)
    coord.start(timeout=60)
    client_key = coord.create_key("client", "make-run")
    worker = start_worker(coord.url, data / "worker", "local-worker", "--max-jobs", "1",
                          api_key=coord.env["WORKER_API_KEY"])
    print(f"worker: started (log: {data / 'worker' / 'local-worker.log'})", flush=True)
    out_dir = data / "results"
    env = {**os.environ, "DUBFLEET_API_URL": coord.url, "DUBFLEET_API_KEY": client_key}
    try:
        rc = subprocess.call([str(BIN / "dubfleet"), "submit", str(video), "--kind", "dub",
                              "--to", target, "--wait", "--output", str(out_dir)], env=env)
    finally:
        stop_all([worker])
        coord.stop()
    if rc == 0:
        print(f"\nresults are in {out_dir}/ (dubbed video, dubbed audio, subtitles, transcript, "
              "dub_report.json)")
    return rc


def _sample(data: Path) -> Path:
    path = data / "sample" / "sample_en.mp4"
    if not path.exists():
        from dubfleet.sample import make_sample_video

        print(f"sample: generating {path} (English speech by Piper over a test pattern)", flush=True)
        make_sample_video(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
