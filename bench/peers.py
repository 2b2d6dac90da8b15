"""The peers run side by side with dubfleet: RQ on the local Redis, procrastinate on the local
PostgreSQL, each with the same no-op jobs and the same number of worker processes.

Each runner returns {"jobs_per_s": ...} or {"skipped": "<why>"} when its service or package is
absent; throughput is the span from the first job started to the last one finished.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(extra or {})}


def _wait_all(procs: list[subprocess.Popen], timeout: float = 600) -> None:
    for proc in procs:
        proc.wait(timeout)


# --- RQ -----------------------------------------------------------------------------------

def _redis():
    """A Redis client, or the reason there is none."""
    try:
        import redis
        import rq  # noqa: F401
    except ImportError as exc:
        return None, f"not installed ({exc.name}); `pip install -e .[bench]`"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        return None, f"no Redis at {REDIS_URL} ({exc})"
    return client, ""


def run_rq(jobs: int, workers: int, log_dir: Path) -> dict:
    """`rq worker --burst` × workers over `jobs` no-op jobs (the default forking worker)."""
    client, why = _redis()
    if client is None:
        return {"skipped": why}
    from rq import Queue
    from rq.job import Job
    queue = Queue(f"bench-{uuid.uuid4().hex[:8]}", connection=client)
    with client.pipeline() as pipe:
        enqueued = queue.enqueue_many([Queue.prepare_data("bench.peer_tasks.noop", result_ttl=600)
                                       for _ in range(jobs)], pipeline=pipe)
        pipe.execute()
    ids = [job.id for job in enqueued]
    procs = [_start(log_dir / f"rq{n}.log", [str(BIN / "rq"), "worker", "--burst", "--url", REDIS_URL,
                                             "--name", f"bench-{uuid.uuid4().hex[:8]}", queue.name])
             for n in range(workers)]
    _wait_all(procs)
    done = [j for j in Job.fetch_many(ids, connection=client) if j is not None]
    try:
        finished = [j for j in done if j.ended_at is not None and j.started_at is not None]
        if len(finished) != jobs:
            return {"skipped": f"only {len(finished)} of {jobs} RQ jobs finished"}
        span = (max(j.ended_at for j in finished) - min(j.started_at for j in finished)).total_seconds()
        return {"jobs_per_s": round(jobs / span, 1)}
    finally:
        for job in done:
            job.delete()
        queue.delete(delete_jobs=True)


# --- procrastinate ------------------------------------------------------------------------

def _psycopg():
    try:
        import procrastinate  # noqa: F401
        import psycopg
    except ImportError as exc:
        return None, f"not installed ({exc.name}); `pip install -e .[bench]`"
    try:
        psycopg.connect(PG_ADMIN_DSN, connect_timeout=3, autocommit=True).close()
    except psycopg.Error as exc:
        return None, f"no PostgreSQL at {PG_ADMIN_DSN.split('@')[-1]} ({str(exc).strip()[:120]})"
    return psycopg, ""


def _pg_dsn(database: str) -> str:
    """The admin DSN pointing at another database."""
    head, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{head}/{database}"


def run_procrastinate(jobs: int, workers: int, log_dir: Path) -> dict:
    """`procrastinate worker --one-shot` × workers (concurrency 1 each) on a fresh database."""
    psycopg, why = _psycopg()
    if psycopg is None:
        return {"skipped": why}
    name = f"bench_procrastinate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        return _procrastinate_round(psycopg, _pg_dsn(name), jobs, workers, log_dir)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _procrastinate_round(psycopg, dsn: str, jobs: int, workers: int, log_dir: Path) -> dict:
    env = {"BENCH_PG_DSN": dsn}
    subprocess.run([str(BIN / "procrastinate"), "--app=bench.peer_procrastinate.app", "schema", "--apply"],
                   env=_env(env), check=True, capture_output=True)
    _defer(dsn, jobs)
    cmd = [str(BIN / "procrastinate"), "--app=bench.peer_procrastinate.app", "worker", "--one-shot",
           "--concurrency", "1", "--queues", "bench"]
    procs = [_start(log_dir / f"procrastinate{n}.log", cmd, env) for n in range(workers)]
    _wait_all(procs)
    with psycopg.connect(dsn) as conn:
        done = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'").fetchone()[0]
        start, end = conn.execute(
            "SELECT min(at) FILTER (WHERE type = 'started'), max(at) FILTER (WHERE type = 'succeeded') "
            "FROM procrastinate_events").fetchone()
    if done != jobs:
        return {"skipped": f"only {done} of {jobs} procrastinate jobs succeeded"}
    return {"jobs_per_s": round(jobs / (end - start).total_seconds(), 1)}


def _defer(dsn: str, jobs: int) -> None:
    """Defer the jobs in one batch (in a subprocess: the task module reads BENCH_PG_DSN)."""
    code = ("from bench.peer_procrastinate import app\n"
            "with app.open():\n"
            f"    app.tasks['noop'].batch_defer(*[{{}}] * {jobs})\n")
    subprocess.run([sys.executable, "-c", code], env=_env({"BENCH_PG_DSN": dsn}), check=True, cwd=ROOT)


def _start(log: Path, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=_env(env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something listens on 127.0.0.1:`port`."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")
