"""dubfleet side by side with its peers and its framework floor, in one run (`make bench`).

- throughput: no-op jobs/s with 8 worker processes: dubfleet (echo jobs over HTTP), RQ (local
  Redis), procrastinate (local PostgreSQL); a peer whose service is absent is skipped with a note;
  while dubfleet's workers run, a client polls a job's view every 50 ms (its p50/p99 under load);
- endpoints: requests/s, p50 and p99 of a hello-world Flask app and of dubfleet's status and
  worker endpoints, both on dubfleet's waitress stack with the same settings (4 threads);
- pickup: submit → claimed latency with idle long-polling workers.

Rounds are interleaved (every system once per round) and the medians reported. With
`--before DIR` (a copy of older code, e.g. `git archive <rev> | tar -x -C DIR`) the dubfleet
rows are measured for that code too, in the same rounds.

Run: `.venv/bin/python bench/bench_peers.py [--rounds 3] [--jobs 600] [--before DIR]`; figures
are printed and written to bench/results/peers.json.
"""
from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import httpload, peers  # noqa: E402
from bench.bench_protocol import BENCH_ENV, bench_latency  # noqa: E402
from dubfleet.local import free_port  # noqa: E402
from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api, Coordinator, start_worker  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SERVER_THREADS = 4
WORKERS = 8
BATCH = 8  # the --batch of the batching fleet (a side-by-side system of its own)


def _code_env(root: Path | None) -> dict[str, str]:
    """Environment that makes the coordinator and workers run the code under `root`."""
    return {"PYTHONPATH": str(root)} if root else {}


# --- throughput ---------------------------------------------------------------------------

class StatusPoller(threading.Thread):
    """A client polling one job's view every POLL_SECONDS while the fleet runs (its latencies)."""

    POLL_SECONDS = 0.05

    def __init__(self, base: str, job_id: str):
        super().__init__(daemon=True)
        self.target = httpload.Target("poll", "GET", f"/jobs/{job_id}", {"X-API-Key": ADMIN_KEY})
        self.base, self.latencies = base, []
        self.done = threading.Event()

    def run(self) -> None:
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while not self.done.wait(self.POLL_SECONDS):
            t0 = time.perf_counter()
            conn.request("GET", self.target.path, headers=self.target.headers)
            conn.getresponse().read()
            self.latencies.append(time.perf_counter() - t0)
        conn.close()

    def figures(self) -> dict:
        """p50 and p99 (ms) of the polls."""
        lat = sorted(self.latencies)
        if not lat:
            return {}
        return {"poll_p50_ms": round(statistics.median(lat) * 1000, 2),
                "poll_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2),
                "poll_latencies_ms": [round(x * 1000, 2) for x in self.latencies]}


def dubfleet_throughput(tmp: Path, jobs: int, root: Path | None = None, batch: int = 1) -> dict:
    """Echo jobs/s with WORKERS burst worker processes (jobs submitted first; `batch` > 1: the
    workers' `--batch`), and the latency of a client polling the last job's view meanwhile."""
    coord = Coordinator(tmp, env={**BENCH_ENV, **_code_env(root)}).start()
    try:
        admin = Api(coord.url, ADMIN_KEY)
        last = [admin.submit_bytes(f"tiny {i}".encode()) for i in range(jobs)][-1]["job_id"]
        poller = StatusPoller(coord.url, last)
        poller.start()
        for proc in start_fleet(coord.url, tmp, root, batch):
            proc.wait(600)
        poller.done.set()
        poller.join(30)
        views = admin.all_jobs()
    finally:
        coord.stop()
    rate = drained_rate(views, jobs)
    return {**rate, **poller.figures()} if "jobs_per_s" in rate else rate


def start_fleet(url: str, tmp: Path, root: Path | None = None, batch: int = 1) -> list[subprocess.Popen]:
    """WORKERS burst echo worker processes (running the code under `root`)."""
    extra = ("--batch", str(batch)) if batch > 1 else ()
    return [start_worker(url, tmp / "w", f"w{n}", "--burst", "--kinds", "echo", "--claim-wait", "0",
                         *extra, env=_code_env(root)) for n in range(WORKERS)]


def drained_rate(views: list[dict], jobs: int) -> dict:
    """{"jobs_per_s"} from the first start to the last finish, or {"skipped"} when not all
    `jobs` completed."""
    done = [v for v in views if v["status"] == "completed"]
    if len(done) != jobs:
        return {"skipped": f"only {len(done)} of {jobs} jobs completed"}
    span = max(v["finished_at"] for v in done) - min(v["started_at"] for v in done)
    return {"jobs_per_s": round(jobs / span, 1)}


def throughput(tmp: Path, rounds: int, jobs: int, before: Path | None) -> dict:
    """Interleaved rounds of every system; the median jobs/s of each."""
    systems = {"dubfleet": lambda d: dubfleet_throughput(d, jobs),
               f"dubfleet_batch{BATCH}": lambda d: dubfleet_throughput(d, jobs, batch=BATCH),
               "rq": lambda d: peers.run_rq(jobs, WORKERS, d),
               "procrastinate": lambda d: peers.run_procrastinate(jobs, WORKERS, d)}
    if before:
        systems["dubfleet_before"] = lambda d: dubfleet_throughput(d, jobs, before)
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    for r in range(rounds):
        for name, run in systems.items():
            result = run(tmp / f"tp-{name}-{r}")
            shown = {k: v for k, v in result.items() if k != "poll_latencies_ms"}
            click.echo(f"throughput round {r + 1}: {name}: {shown}")
            runs[name].append(result)
    return {name: _median_rate(results) for name, results in runs.items()}


def _median_rate(results: list[dict]) -> dict:
    rates = [r["jobs_per_s"] for r in results if "jobs_per_s" in r]
    if not rates:
        return {"skipped": results[0].get("skipped", "no result")}
    polls = sorted(r["poll_p99_ms"] for r in results if "poll_p99_ms" in r)
    extra = {"poll_p99_ms_rounds": polls} if polls else {}
    pooled = sorted(x for r in results for x in r.get("poll_latencies_ms", ()))
    if pooled:  # one run has a few dozen polls: its p99 is its slowest; the rounds together, more
        extra.update(polls_pooled=len(pooled), poll_p50_ms_pooled=pooled[len(pooled) // 2],
                     poll_p99_ms_pooled=pooled[min(len(pooled) - 1, int(len(pooled) * 0.99))])
    return {"jobs_per_s": round(statistics.median(rates), 1), "rounds": rates, **extra}


# --- endpoints ----------------------------------------------------------------------------

def _hello_server() -> tuple[subprocess.Popen, str]:
    """The hello-world app on dubfleet's waitress stack, SERVER_THREADS threads."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "hello_app.py"), str(port),
                             str(SERVER_THREADS)], env=peers._env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peers.wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def _dubfleet_targets(coord: Coordinator) -> list[httpload.Target]:
    """GET /health, GET /jobs/<id> (a client key from the database), heartbeat (repeated, and
    with new progress each time), empty claim."""
    client_key = coord.create_key("client", "bench")
    client = Api(coord.url, client_key)
    queued = client.submit_bytes(b"view me")["job_id"]
    client.submit_bytes(b"run me", kind="transcribe", target_language="en")
    worker = Api(coord.url, WORKER_KEY)
    info = {"worker_id": "bench", "session_id": "bench-session", "kinds": ["transcribe"]}
    claimed = worker.post("/jobs/claim", json={"worker": info}).json()
    lease = {"X-API-Key": WORKER_KEY, "X-Lease-Token": claimed["lease_token"],
             "X-Worker-Session": "bench-session", "Content-Type": "application/json"}
    empty = json.dumps({"worker": {**info, "kinds": ["subtitle"]}, "wait": 0}).encode()
    return [
        httpload.Target("health", "GET", "/health"),
        httpload.Target("job_view", "GET", f"/jobs/{queued}", {"X-API-Key": client_key}),
        httpload.Target("heartbeat", "POST", f"/jobs/{claimed['job_id']}/heartbeat", lease,
                        json.dumps({"progress": 10.0, "message": "bench"}).encode()),
        # Every beat carries new progress, so every one is a write (the one above repeats itself
        # and, after the first, is answered from a read).
        httpload.Target("heartbeat_progress", "POST", f"/jobs/{claimed['job_id']}/heartbeat", lease,
                        bodies=tuple(json.dumps({"progress": n / 10}).encode() for n in range(1000))),
        httpload.Target("claim_empty", "POST", "/jobs/claim",
                        {"X-API-Key": WORKER_KEY, "X-Worker-Session": "bench-session",
                         "Content-Type": "application/json"}, empty, ok=(204,)),
    ]


def endpoints(tmp: Path, rounds: int, seconds: float, before: Path | None) -> dict:
    """Interleaved rounds over every dubfleet target, each run between two runs of hello world:
    a target's ratio is its rate over the mean of the hello-world runs right before and after it
    (this machine's speed drifts within a round); medians over the rounds."""
    hello, hello_url = _hello_server()
    # The heartbeat targets' job is claimed when the servers start and beaten only in its slots,
    # minutes apart: leases long enough that it is still theirs in the last round.
    env = {**BENCH_ENV, "LEASE_SECONDS": "3600", "START_LEASE_SECONDS": "3600"}
    servers = {"": Coordinator(tmp / "ep", env=env, threads=SERVER_THREADS).start()}
    if before:
        servers["before_"] = Coordinator(tmp / "ep-before", env={**env, **_code_env(before)},
                                         threads=SERVER_THREADS).start()
    hello_target = httpload.Target("hello", "GET", "/")
    try:
        plan = [(prefix + t.name, coord.url, t) for prefix, coord in servers.items()
                for t in _dubfleet_targets(coord)]
        runs: dict[str, list[dict]] = {name: [] for name in ["hello_world"] + [name for name, _, _ in plan]}
        for r in range(rounds):
            floor = httpload.run(hello_url, hello_target, seconds=seconds)
            runs["hello_world"].append(floor)
            for name, url, target in plan:
                figures = httpload.run(url, target, seconds=seconds)
                after = httpload.run(hello_url, hello_target, seconds=seconds)
                runs["hello_world"].append(after)
                figures["x_hello"] = round(figures["rps"] / (((floor["rps"] + after["rps"]) / 2) or 1), 3)
                runs[name].append(figures)
                click.echo(f"endpoints round {r + 1}: {name}: {figures} (hello world {floor['rps']}, "
                           f"{after['rps']} req/s)")
                floor = after
    finally:
        hello.terminate()
        hello.wait(10)
        for coord in servers.values():
            coord.stop()
    out = {name: httpload.median_of(results) for name, results in runs.items()}
    for name, results in runs.items():
        if name != "hello_world":
            out[name]["x_hello_rounds"] = [r["x_hello"] for r in results]
    return out


@click.command()
@click.option("--rounds", default=3, show_default=True, help="Interleaved rounds (medians reported).")
@click.option("--jobs", default=600, show_default=True, help="No-op jobs per throughput run.")
@click.option("--seconds", default=3.0, show_default=True, help="Load time per endpoint per round.")
@click.option("--before", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A copy of older dubfleet code to measure in the same rounds.")
@click.option("--only", type=click.Choice(["all", "throughput", "endpoints", "pickup"]), default="all")
def main(rounds: int, jobs: int, seconds: float, before: Path | None, only: str) -> None:
    """Measure dubfleet against RQ, procrastinate and Flask's hello world."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "peers.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="dubfleet-peers-") as tmp:
        if only in ("all", "endpoints"):
            results["endpoints"] = endpoints(Path(tmp), rounds, seconds, before.resolve() if before else None)
        if only in ("all", "throughput"):
            results["throughput"] = throughput(Path(tmp), rounds, jobs, before.resolve() if before else None)
        if only in ("all", "pickup"):
            results["pickup"] = bench_latency(Path(tmp) / "pickup")
    path.write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
