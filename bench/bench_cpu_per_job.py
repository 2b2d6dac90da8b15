"""CPU per no-op job, coordinator and workers apart, with and without `--before` code.

jobs/s on this 2-core machine moves by tens of percent from run to run; the CPU each side spends
per job moves much less, and says where a change went. Each run queues `--jobs` echo jobs, then
8 burst worker processes drain them; the coordinator's CPU is read from /proc around the drain,
the workers' from their rusage once they exit (their start-up included: about 0.45 s of CPU each
here, so use a few thousand jobs). Runs of the two trees are interleaved. `coordinator_cores` is
jobs/s × the coordinator's CPU per job: near 1.0, its one interpreter lock is what bounds jobs/s.

Run: `.venv/bin/python bench/bench_cpu_per_job.py [--rounds 3] [--jobs 2000] [--before DIR]
[--batch 8] [--profile DIR]` (Linux: reads /proc; `--batch` adds batching workers as a third
system; `--profile` keeps py-spy samples of the coordinator per run).
"""
from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_peers import _code_env, drained_rate, start_fleet  # noqa: E402
from bench.bench_protocol import BENCH_ENV  # noqa: E402
from tests.integration.procs import ADMIN_KEY, Api, Coordinator  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _children_cpu() -> float:
    """User + system CPU seconds of the reaped child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(tmp: Path, jobs: int, root: Path | None, batch: int = 1, profile: Path | None = None) -> dict:
    """Drain `jobs` echo jobs with WORKERS burst workers (`batch`: their --batch); jobs/s and ms
    of CPU per job (`profile`: py-spy's raw samples of the coordinator meanwhile)."""
    coord = Coordinator(tmp, env={**BENCH_ENV, **_code_env(root)}).start()
    try:
        admin = Api(coord.url, ADMIN_KEY)
        for i in range(jobs):
            admin.submit_bytes(f"tiny {i}".encode())
        coord_before, workers_before = _process_cpu(coord.proc.pid), _children_cpu()
        spy = _py_spy(coord.proc.pid, profile) if profile else None
        for proc in start_fleet(coord.url, tmp, root, batch):
            proc.wait(1800)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        coord_cpu, workers_cpu = _process_cpu(coord.proc.pid) - coord_before, _children_cpu() - workers_before
        views = admin.all_jobs()
    finally:
        coord.stop()
    rate = drained_rate(views, jobs)
    if "jobs_per_s" not in rate:
        return rate
    # The coordinator's cores while draining: near 1.0, its interpreter lock bounds jobs/s.
    return {**rate, "coordinator_ms_per_job": round(coord_cpu / jobs * 1000, 2),
            "workers_ms_per_job": round(workers_cpu / jobs * 1000, 2),
            "coordinator_cores": round(rate["jobs_per_s"] * coord_cpu / jobs, 2)}


def _py_spy(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling `pid` (its GIL holder only) into `out` until interrupted."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-f", "raw", "--gil", "--nonblocking",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@click.command()
@click.option("--rounds", default=3, show_default=True)
@click.option("--jobs", default=2000, show_default=True)
@click.option("--before", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A copy of older dubfleet code (e.g. `git archive <rev> | tar -x -C DIR`).")
@click.option("--batch", default=1, show_default=True, help="Also run workers with this --batch (> 1).")
@click.option("--profile", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write py-spy raw samples of the coordinator per run here (pip install py-spy).")
def main(rounds: int, jobs: int, before: Path | None, batch: int, profile: Path | None) -> None:
    """Measure CPU per job on both sides of the queue."""
    trees = {"now": (None, 1), **({"before": (before.resolve(), 1)} if before else {}),
             **({f"now_batch{batch}": (None, batch)} if batch > 1 else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="dubfleet-cpu-") as tmp:
        for r in range(rounds):
            for name, (root, size) in trees.items():
                if profile:
                    profile.mkdir(parents=True, exist_ok=True)
                result = one_run(Path(tmp) / f"{name}-{r}", jobs, root, size,
                                 profile / f"{name}-{r}.txt" if profile else None)
                click.echo(f"round {r + 1} {name}: {result}")
                runs[name].append(result)
                time.sleep(1)
    for name, results in runs.items():
        good = [x for x in results if "jobs_per_s" in x]
        if good:
            medians = {key: statistics.median(x[key] for x in good) for key in good[0]}
            click.echo(f"{name} (medians of {len(good)}): {medians}")


if __name__ == "__main__":
    main()
