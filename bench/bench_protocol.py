"""Protocol benchmarks on real processes: throughput, pickup latency, transfer speed, idle CPU.

Run on demand: `.venv/bin/python bench/bench_protocol.py [throughput|latency|transfer|idle|all]`.
Figures are printed and written to bench/results/protocol.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import requests

# The bench submits thousands of jobs from one key as fast as it can: the per-key rate limit
# (CLIENT_RATE_LIMIT, 50/s by default) would measure the limiter, not the queue.
BENCH_ENV = {"RATELIMIT_ENABLED": "0"}

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.transfer import file_sha256  # noqa: E402
from tests.integration.procs import (  # noqa: E402
    ADMIN_KEY, WORKER_KEY, Api, Coordinator, start_worker, stop_all,
)

RESULTS = ROOT / "bench" / "results"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _epoch(view: dict, key: str) -> float:
    return float(view[key])


def bench_throughput(tmp: Path, jobs: int = 400) -> dict:
    """Tiny echo jobs per second through HTTP with 1, 4 and 8 worker processes."""
    out = {}
    for count in (1, 4, 8):
        coord = Coordinator(tmp / f"tp{count}", env=BENCH_ENV).start()
        admin = Api(coord.url, ADMIN_KEY)
        for i in range(jobs):
            admin.submit_bytes(f"tiny {i}".encode())
        procs = [start_worker(coord.url, tmp / f"tpw{count}", f"w{n}", "--burst", "--kinds", "echo",
                              "--claim-wait", "0") for n in range(count)]
        for proc in procs:
            proc.wait(600)
        views = admin.all_jobs()
        assert all(v["status"] == "completed" for v in views) and len(views) == jobs
        span = max(_epoch(v, "finished_at") for v in views) - min(_epoch(v, "started_at") for v in views)
        out[f"{count}_workers_jobs_per_s"] = round(jobs / span, 1)
        click.echo(f"throughput: {count} worker(s): {jobs / span:.1f} jobs/s")
        coord.stop()
    return out


def bench_latency(tmp: Path, samples: int = 60, idle_workers: int = 4) -> dict:
    """Submit → claimed latency with idle workers at default settings."""
    coord = Coordinator(tmp / "lat", env=BENCH_ENV).start()
    admin = Api(coord.url, ADMIN_KEY)
    procs = [start_worker(coord.url, tmp / "latw", f"w{n}", "--kinds", "echo")
             for n in range(idle_workers)]
    time.sleep(3)  # let every worker start and go idle (long-polling)
    lat = []
    for i in range(samples):
        job_id = admin.submit_bytes(f"lat {i}".encode())["job_id"]
        view = admin.wait_status(job_id, {"completed"}, timeout=30)
        lat.append((_epoch(view, "started_at") - _epoch(view, "created_at")) * 1000)
        time.sleep(0.3)
    stop_all(procs)
    coord.stop()
    lat.sort()
    res = {"pickup_p50_ms": round(statistics.median(lat), 1),
           "pickup_p95_ms": round(lat[int(len(lat) * 0.95) - 1], 1),
           "pickup_max_ms": round(lat[-1], 1)}
    click.echo(f"latency: {res}")
    return res


def bench_transfer(tmp: Path, size_mb: int = 1024) -> dict:
    """Upload and download of a large file through the coordinator; its peak RSS."""
    coord = Coordinator(tmp / "xfer", env={**BENCH_ENV, "MAX_UPLOAD_MB": str(size_mb + 64)}).start()
    src = tmp / "big.bin"
    _write_random(src, size_mb)
    admin = Api(coord.url, ADMIN_KEY)
    t0 = time.perf_counter()
    with open(src, "rb") as fh:
        resp = admin.post("/jobs", params={"kind": "echo", "filename": "big.bin"}, data=fh,
                          headers={"Content-Type": "application/octet-stream"}, timeout=600)
    up_s = time.perf_counter() - t0
    job_id = resp.json()["job_id"]
    worker = Api(coord.url, WORKER_KEY)
    claim = worker.post("/jobs/claim", json={"worker": {"worker_id": "bench", "session_id": "b",
                                                        "kinds": ["echo"]}}).json()
    t0 = time.perf_counter()
    digest = _download(f"{coord.url}/jobs/{job_id}/download-input",
                       {"X-API-Key": WORKER_KEY, "X-Lease-Token": claim["lease_token"]})
    down_s = time.perf_counter() - t0
    rss = peak_rss_mb(coord.proc.pid)
    coord.stop()
    assert digest == file_sha256(src)
    res = {"upload_MB_per_s": round(size_mb / up_s, 1), "download_MB_per_s": round(size_mb / down_s, 1),
           "coordinator_peak_rss_MB": round(rss, 1), "size_MB": size_mb}
    click.echo(f"transfer: {res}")
    return res


def bench_idle(tmp: Path, count: int = 50, seconds: float = 60) -> dict:
    """CPU used by idle workers (and the coordinator serving them) over a window."""
    coord = Coordinator(tmp / "idle", env=BENCH_ENV).start()
    procs = [start_worker(coord.url, tmp / "idlew", f"w{n}", "--kinds", "echo") for n in range(count)]
    time.sleep(10)  # imports and first polls are start-up cost, not idle cost
    pids = [p.pid for p in procs]
    before = sum(cpu_seconds(pid) for pid in pids)
    coord_before = cpu_seconds(coord.proc.pid)
    time.sleep(seconds)
    used = sum(cpu_seconds(pid) for pid in pids) - before
    coord_used = cpu_seconds(coord.proc.pid) - coord_before
    stop_all(procs)
    coord.stop()
    res = {"idle_workers": count, "workers_cpu_percent_of_core": round(100 * used / seconds, 2),
           "coordinator_cpu_percent_of_core": round(100 * coord_used / seconds, 2)}
    click.echo(f"idle: {res}")
    return res


def _write_random(path: Path, size_mb: int) -> None:
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for i in range(size_mb):
            fh.write(block[i % 997:] + block[:i % 997])


def _download(url: str, headers: dict) -> str:
    digest = hashlib.sha256()
    with requests.get(url, headers=headers, stream=True, timeout=600) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


BENCHES = {"throughput": bench_throughput, "latency": bench_latency,
           "transfer": bench_transfer, "idle": bench_idle}


@click.command()
@click.argument("which", type=click.Choice([*BENCHES, "all"]), default="all")
def main(which: str) -> None:
    """Run protocol benchmarks and record the figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "protocol.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    names = list(BENCHES) if which == "all" else [which]
    with tempfile.TemporaryDirectory(prefix="dubfleet-bench-") as tmp:
        for name in names:
            results[name] = BENCHES[name](Path(tmp))
    path.write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
