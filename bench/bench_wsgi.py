"""The app's own cost per call, without any HTTP server: the coordinator's WSGI callable called
directly (a prebuilt environ, a fresh body each call) for the hot calls, beside Flask's hello
world; with `--before DIR` (e.g. `git archive <rev> | tar -x -C DIR`) the same calls on older
code. Every run is a fresh process; runs of the two trees are interleaved.

Run: `.venv/bin/python bench/bench_wsgi.py [--runs 3] [--calls 3000] [--batches 30] [--before DIR]`.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]


def _environ(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> dict:
    """A WSGI environ as waitress builds it for a small keep-alive request."""
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
           "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.version": (1, 0),
           "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
           "wsgi.errors": sys.stderr, "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
           "CONTENT_TYPE": "application/json", "HTTP_HOST": "127.0.0.1", "HTTP_CONNECTION": "keep-alive"}
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return {"env": env, "body": body}


def _per_call_us(app, request: dict, calls: int, batches: int = 1) -> float:
    """µs per call after a warm-up: the mean of `calls` calls, or with `batches` > 1 the best
    batch's mean (`calls` split into `batches`; the best batch is the least disturbed by the
    rest of a shared machine). Runs are repeated by the caller."""
    def one() -> None:
        env = dict(request["env"], **{"wsgi.input": io.BytesIO(request["body"])})
        out = app(env, lambda status, headers, exc_info=None: None)
        for _ in out:
            pass
        getattr(out, "close", lambda: None)()
    for _ in range(200):
        one()
    size = max(1, calls // batches)
    best = float("inf")
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(size):
            one()
        best = min(best, (time.perf_counter() - started) / size * 1e6)
    return best


def measure(calls: int, batches: int = 1) -> dict[str, float]:
    """One run in this process: µs per call of hello world and of each hot call."""
    from bench.hello_app import hello_app
    from bench.profile_hot_path import WORKER, _keys
    from coordinator import create_app
    from tests.conftest import coordinator_test_config
    config = coordinator_test_config(Path(tempfile.mkdtemp(prefix="dubfleet-wsgi-")))
    config["RATELIMIT_ENABLED"] = False  # as in bench_peers: the limiter is not the hot path
    app = create_app(config)
    client_key, worker_key = _keys(app)
    http = app.test_client()
    job_id = http.post("/jobs", data={"file": (io.BytesIO(b"hello"), "a.txt"), "kind": "echo"},
                       headers={"X-API-Key": client_key}).get_json()["job_id"]
    worker = {"X-API-Key": worker_key, "X-Worker-Session": WORKER["session_id"]}
    claimed = http.post("/jobs/claim", json={"worker": WORKER}, headers=worker).get_json()  # now running
    empty = json.dumps({"worker": {**WORKER, "kinds": ["subtitle"]}, "wait": 0}).encode()
    calls_of = {
        "job_view": _environ("GET", f"/jobs/{job_id}", {"X-API-Key": client_key}),
        "claim_empty": _environ("POST", "/jobs/claim", worker, empty),
        "heartbeat": _environ("POST", f"/jobs/{job_id}/heartbeat",
                              {**worker, "X-Lease-Token": claimed["lease_token"]},
                              json.dumps({"progress": 10.0, "message": "bench"}).encode()),
    }
    out = {"hello_world": _per_call_us(hello_app(), _environ("GET", "/", {}), calls, batches)}
    out.update({name: _per_call_us(app, request, calls, batches) for name, request in calls_of.items()})
    return out


def _run(root: Path, calls: int, batches: int) -> dict[str, float]:
    """One run in a fresh process on the code under `root`."""
    code = (f"import json, runpy, sys; sys.path.insert(0, {str(root)!r}); "  # this file, that code
            f"print(json.dumps(runpy.run_path({__file__!r})['measure']({calls}, {batches})))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--runs", default=3, show_default=True)
@click.option("--calls", default=3000, show_default=True)
@click.option("--batches", default=1, show_default=True,
              help="Split the calls into batches and report the best batch's mean (1: the mean).")
@click.option("--before", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None)
def main(runs: int, calls: int, batches: int, before: Path | None) -> None:
    """Print µs per call, run by run (now, then before, interleaved)."""
    for run in range(runs):
        for label, root in (("now", ROOT), ("before", before)):
            if root is None:
                continue
            figures = _run(root.resolve(), calls, batches)
            click.echo(f"run {run + 1} {label:6s} " + "  ".join(f"{k} {v:.0f} µs" for k, v in figures.items()))


if __name__ == "__main__":
    main()
