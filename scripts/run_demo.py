"""`make run`: start a coordinator and one worker locally, dub a sample English video into Spanish.

Everything stays on this machine: SQLite + files under ./data (or $DUBFLEET_DATA_DIR), offline
models from installed packages. Pass a video path to dub your own file instead of the sample.
It prints the web app's address and a one-time sign-in link first, so the job can be watched live
in a browser; run from a terminal, it keeps the coordinator (and the worker) serving at the end
until Ctrl+C, so the result can be watched, corrected and re-dubbed there.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
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
    client_key, key_id, link = _client_key(coord)
    print(f"web app: {coord.url}/app/ — open this one-time link to sign in and watch the job live:\n"
          f"  {link}", flush=True)
    interactive = sys.stdin.isatty()
    # Kept serving at the end (interactive runs), the worker stays too: re-dubs need it.
    worker = start_worker(coord.url, data / "worker", "local-worker",
                          *(() if interactive else ("--max-jobs", "1")),
                          api_key=coord.env["WORKER_API_KEY"])
    print(f"worker: started (log: {data / 'worker' / 'local-worker.log'})", flush=True)
    out_dir = data / "results"
    env = {**os.environ, "DUBFLEET_API_URL": coord.url, "DUBFLEET_API_KEY": client_key}
    try:
        rc = subprocess.call([str(BIN / "dubfleet"), "submit", str(video), "--kind", "dub",
                              "--to", target, "--wait", "--output", str(out_dir)], env=env)
        if rc == 0:
            print(f"\nresults are in {out_dir}/ (dubbed video, dubbed audio, subtitles, transcript, "
                  "dub_report.json)")
        if interactive:
            _keep_serving(coord, key_id)
    finally:
        stop_all([worker])
        coord.stop()
    return rc


def _client_key(coord: Coordinator) -> tuple[str, int, str]:
    """A client key for the demo, its id, and a one-time web sign-in link for it."""
    done = subprocess.run([str(BIN / "coordinator"), "create-key", "--kind", "client", "--name",
                           "make-run", "--sign-in-link", "--url", coord.url],
                          env=coord.env, capture_output=True, text=True, check=True)
    key, link = done.stdout.split()[:2]
    return key, int(re.search(r"key #(\d+)", done.stderr).group(1)), link


def _keep_serving(coord: Coordinator, key_id: int) -> None:
    """Serve until Ctrl+C, with a fresh sign-in link (the first may be used or expired)."""
    link = subprocess.run([str(BIN / "coordinator"), "sign-in-link", "--id", str(key_id), "--url",
                           coord.url], env=coord.env, capture_output=True, text=True,
                          check=True).stdout.strip()
    print(f"\nweb app: {coord.url}/app/ (watch, correct and re-dub the result there)\n"
          f"  sign in: {link}\npress Ctrl+C to stop", flush=True)
    try:
        while coord.proc is not None and coord.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)


def _sample(data: Path) -> Path:
    path = data / "sample" / "sample_en.mp4"
    if not path.exists():
        from dubfleet.sample import make_sample_video

        print(f"sample: generating {path} (English speech by Piper over a test pattern)", flush=True)
        make_sample_video(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
