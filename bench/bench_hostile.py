"""Latency of legitimate clients while hostile or heavy clients load the coordinator.

Scenarios, each measuring `GET /health` and a raw-body submit (`POST /jobs`, kind echo) from a
client that opens a new connection per request (like a new visitor):
  unloaded   nothing else going on;
  slow       200 connections held open sending their headers one byte a second (reconnecting
             when the server closes them, like a slowloris attacker);
  list       16 threads (in another process) polling `GET /jobs?limit=500` with one client key
             over its 1000 jobs, while an admin client submits.
Each runs against the hardened `coordinator serve` ("tuned") and against the same app on plain
`waitress.serve` with the settings used before (connection_limit max(100, threads*4), no header
timeout, select() loop: "plain").

Run: `.venv/bin/python bench/bench_hostile.py [unloaded|slow|list|all]`; figures are printed and
written to bench/results/hostile.json.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import click
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.procs import ADMIN_KEY, Coordinator, wait_http  # noqa: E402

RESULTS = ROOT / "bench" / "results"
THREADS = 32
TIMEOUT = 3.0  # a request not answered by then counts as a timeout (and as TIMEOUT seconds)
GIVE_UP_AFTER = 5  # consecutive timeouts before a series stops early
SLOW_CONNECTIONS = 200
POLLERS = 16
LIST_JOBS = 1000

# The app on plain waitress, configured as `coordinator serve` was before the hardening.
PLAIN_SERVER = """
import sys, waitress
from coordinator import create_app
app = create_app({"THREADS": %(threads)d})
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=%(threads)d, ident="dubfleet",
               max_request_body_size=app.config["MAX_UPLOAD_BYTES"] + 2 * 1024 * 1024,
               connection_limit=max(100, %(threads)d * 4), channel_timeout=120)
""" % {"threads": THREADS}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_percent(pid: int, work: Callable[[], object]) -> float:
    """CPU a process used while `work` ran, in percent of one core."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    work()
    return round(100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), 1)


# A checkout of the code before the hardening (`git worktree add /tmp/before 2abe323`): when set
# (--before), the "plain" server runs that code, so "plain" is the whole before-state.
BEFORE: dict[str, str] = {}


def start_server(kind: str, data_dir: Path) -> Coordinator:
    """Start a tuned (`coordinator serve`) or plain (old waitress settings) server."""
    coord = Coordinator(data_dir, threads=THREADS)
    if kind == "plain" and BEFORE.get("root"):
        coord.env["PYTHONPATH"] = BEFORE["root"]
    if kind == "tuned":
        return coord.start()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(coord.log_path, "ab")
    coord.proc = subprocess.Popen([sys.executable, "-c", PLAIN_SERVER, str(coord.port)],
                                  env=coord.env, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=BEFORE.get("root"))  # `-c` imports from the cwd first
    log.close()
    wait_http(f"{coord.url}/health", 30, coord.proc)
    return coord


# --- the legitimate client --------------------------------------------------------------------

def _health(url: str) -> requests.Response:
    return requests.get(f"{url}/health", timeout=TIMEOUT, headers={"Connection": "close"})


def _submit(url: str) -> requests.Response:
    return requests.post(f"{url}/jobs", params={"kind": "echo", "filename": "b.bin"},
                         data=b"bench", timeout=TIMEOUT,
                         headers={"X-API-Key": ADMIN_KEY, "Connection": "close",
                                  "Content-Type": "application/octet-stream"})


def series(call: Callable[[str], requests.Response], url: str, samples: int,
           expect: int) -> dict:
    """Latency of `samples` sequential calls; stops after GIVE_UP_AFTER timeouts in a row."""
    times: list[float] = []
    statuses: Counter[str] = Counter()
    streak = 0
    for _ in range(samples):
        t0 = time.perf_counter()
        try:
            statuses[str(call(url).status_code)] += 1
            streak = 0
        except requests.Timeout:
            statuses["timeout"] += 1
            streak += 1
        except requests.RequestException as exc:
            statuses[type(exc).__name__] += 1
        times.append(min(time.perf_counter() - t0, TIMEOUT) * 1000)
        if streak >= GIVE_UP_AFTER:
            break
    return {"samples": len(times), "ok": statuses[str(expect)], "statuses": dict(statuses),
            **percentiles(times)}


def percentiles(times: list[float]) -> dict:
    """p50, p99 and max of latencies in ms."""
    times = sorted(times)
    return {"p50_ms": round(statistics.median(times), 1),
            "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 1),
            "max_ms": round(times[-1], 1)}


def measure(url: str, samples: int) -> dict:
    """Health and submit latency from a fresh-connection client."""
    return {"health": series(_health, url, samples, 200),
            "submit": series(_submit, url, max(10, samples // 2), 202)}


# --- hostile and heavy clients ----------------------------------------------------------------

class Slowloris(threading.Thread):
    """Holds `count` connections sending header bytes once a second; reconnects closed ones."""

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.socks: list[socket.socket] = []
        self.reconnects = 0
        self._halt = threading.Event()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
        sock.setblocking(False)
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        """True while the server has neither answered (408) nor closed the connection."""
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def run(self) -> None:
        self.socks = [self._connect() for _ in range(self.count)]
        while not self._halt.wait(1.0):
            for i, sock in enumerate(self.socks):
                try:
                    if not self._alive(sock):
                        raise OSError("closed by the server")
                    sock.send(b"x")
                except OSError:
                    sock.close()
                    self.socks[i] = self._connect()
                    self.reconnects += 1

    def stop(self) -> None:
        """Stop and close every connection."""
        self._halt.set()
        self.join(10)
        for sock in self.socks:
            sock.close()


def _poll_lists(url: str, key: str, threads: int, seconds: float,
                out: "multiprocessing.Queue") -> None:
    """(In a child process) poll GET /jobs?limit=500 from `threads` threads for `seconds`."""
    deadline = time.monotonic() + seconds
    times: list[float] = []
    sizes: list[int] = []
    statuses: Counter[str] = Counter()

    def loop() -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = key
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            resp = session.get(f"{url}/jobs", params={"limit": 500}, timeout=30)
            times.append((time.perf_counter() - t0) * 1000)
            statuses[str(resp.status_code)] += 1
            if resp.status_code == 200:
                sizes.append(len(resp.json()["jobs"]))

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put({"threads": threads, "requests_per_s": round(len(times) / seconds, 1),
             "pages_per_s": round(statuses["200"] / seconds, 1),
             "jobs_per_page": max(sizes, default=0), "statuses": dict(statuses),
             **percentiles(times)})


# --- scenarios --------------------------------------------------------------------------------

def bench_unloaded(tmp: Path, samples: int) -> dict:
    """Both servers with nothing else going on."""
    out = {}
    for kind in ("tuned", "plain"):
        coord = start_server(kind, tmp / f"unloaded-{kind}")
        out[kind] = measure(coord.url, samples)
        coord.stop()
        click.echo(f"unloaded {kind}: {out[kind]}")
    return out


def bench_slow(tmp: Path, samples: int) -> dict:
    """Both servers while 200 slow-header connections are held."""
    out = {}
    for kind in ("tuned", "plain"):
        coord = start_server(kind, tmp / f"slow-{kind}")
        attack = Slowloris(coord.port, SLOW_CONNECTIONS)
        attack.start()
        time.sleep(2)  # every connection open and trickling
        hold = _cpu_percent(coord.proc.pid, lambda: time.sleep(7))
        # The tuned server's 10 s header timeout closes the attackers during the series.
        result = measure(coord.url, samples)
        result["server_cpu_percent_holding_attackers"] = hold
        result["attacker_reconnects"] = attack.reconnects
        attack.stop()
        coord.stop()
        out[kind] = result
        click.echo(f"slow {kind}: {result}")
    return out


def bench_list(tmp: Path, samples: int, seconds: float = 15.0) -> dict:
    """Both servers while 16 threads poll big job lists; latency of another client."""
    return {kind: _list_load(kind, tmp / f"list-{kind}", samples, seconds)
            for kind in ("tuned", "plain")}


def _list_load(kind: str, data_dir: Path, samples: int, seconds: float) -> dict:
    """One server under list polling: the pollers' figures, then submit and health latency."""
    coord = start_server(kind, data_dir)
    key = coord.create_key("client", "poller")  # the pollers' own jobs, seen through their key
    session = requests.Session()
    session.headers["X-API-Key"] = key
    for i in range(LIST_JOBS):
        session.post(f"{coord.url}/jobs", params={"kind": "echo", "filename": f"{i}.bin"},
                     data=b"x", headers={"Content-Type": "application/octet-stream"}, timeout=30)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    poller = multiprocessing.Process(target=_poll_lists,
                                     args=(coord.url, key, POLLERS, seconds, queue))
    poller.start()
    time.sleep(1)  # pollers up to speed
    submit = series(_submit, coord.url, samples, 202)
    health = series(_health, coord.url, samples, 200)
    lists = queue.get(timeout=seconds + 120)
    poller.join(30)
    coord.stop()
    result = {"jobs_in_db": LIST_JOBS, "list": lists, "submit": submit, "health": health}
    click.echo(f"list {kind}: {result}")
    return result


BENCHES = {"unloaded": bench_unloaded, "slow": bench_slow, "list": bench_list}


@click.command()
@click.argument("which", type=click.Choice([*BENCHES, "all"]), default="all")
@click.option("--samples", default=200, show_default=True, help="Requests per health series.")
@click.option("--before", type=click.Path(file_okay=False, exists=True), default=None,
              help="A checkout of the code before the hardening: the 'plain' server runs it.")
def main(which: str, samples: int, before: str | None) -> None:
    """Run the hostile-client benchmarks and record the figures."""
    if before:
        BEFORE["root"] = str(Path(before).resolve())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "hostile.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    names = list(BENCHES) if which == "all" else [which]
    with tempfile.TemporaryDirectory(prefix="dubfleet-hostile-") as tmp:
        for name in names:
            results[name] = BENCHES[name](Path(tmp), samples)
    results["when"] = time.strftime("%Y-%m-%d %H:%M")
    results["plain_code"] = f"checkout {BEFORE['root']}" if BEFORE else "this checkout"
    results["cpus"] = os.cpu_count()
    path.write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
