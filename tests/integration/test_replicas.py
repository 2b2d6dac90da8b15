"""Two coordinator replicas on one PostgreSQL database and one data directory behave as one.

Real processes throughout: two `coordinator serve` replicas, echo workers split across them. A
worker long-polling replica A is woken by a submit to replica B; then 1,000 jobs run while
replica A is SIGKILLed and restarted on the same port. Every job completes exactly once.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from dubfleet.api import parse_sse
from tests.conftest import POSTGRES_TEST_URL, _postgres
from tests.integration.procs import ADMIN_KEY, Api, Coordinator, start_worker, stop_all

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JOBS = 1000
WORKERS_PER_REPLICA = 4
# Short leases so jobs held by workers of the killed replica come back while it is down; a long
# claim re-check so that only a cross-replica wake-up can make a pickup fast.
REPLICA_ENV = {"LEASE_SECONDS": "5", "START_LEASE_SECONDS": "5", "REAPER_INTERVAL": "0.5",
               "CLAIM_RECHECK_SECONDS": "30", "RATELIMIT_ENABLED": "0", "CALLBACKS_ENABLED": "0",
               "EVENT_STREAM_MAX_SECONDS": "20"}
DOWN_SECONDS = 8.0  # longer than a lease: the other replica reaps what the dead one's workers held
# What a worker logs when it loses a job's lease or gives the job up.
GAVE_UP = "lease lost|unreachable past the lease|could not report|attempt failed"
WORKER_ARGS = ("--kinds", "echo", "--claim-wait", "20", "--poll-interval", "0.5")
SLOW = ("--max-transfer-rate", "1")  # replica A's workers: a large job keeps one busy for seconds


@pytest.fixture
def database_url():
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    from sqlalchemy.engine import make_url
    name = f"dubfleet_replicas_{uuid.uuid4().hex[:10]}"
    _postgres(f"CREATE DATABASE {name}")
    yield make_url(POSTGRES_TEST_URL).set(database=name).render_as_string(hide_password=False)
    _postgres(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _sql(url: str, query: str) -> list[tuple]:
    """Rows of one query on the test database."""
    import psycopg
    with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=5) as conn:
        return conn.execute(query).fetchall()


@pytest.fixture
def replicas(tmp_path, database_url):
    """Replicas A and B (started one after the other) on one database and one data directory."""
    data_dir = tmp_path / "shared-data"
    made = []
    for name in ("a", "b"):
        coord = Coordinator(data_dir, env={"DATABASE_URL": database_url, **REPLICA_ENV})
        coord.log_path = tmp_path / f"replica-{name}.log"
        made.append(coord.start())
    yield made
    for coord in made:
        coord.kill()


def _workers(replica, names: range, prefix: str, work_dir: Path, *extra: str) -> list:
    return [start_worker(replica.url, work_dir, f"{prefix}{n}", *WORKER_ARGS, *extra)
            for n in names]


def _pickup_seconds(url: str, job_id: str) -> float:
    [(created, started)] = _sql(url, f"SELECT created_at, started_at FROM jobs WHERE id = '{job_id}'")
    return started - created


def test_replicas_share_one_queue_through_a_replica_crash(replicas, database_url, tmp_path):
    a, b = replicas
    on_a, on_b = Api(a.url, ADMIN_KEY), Api(b.url, ADMIN_KEY)
    work_dir = tmp_path / "w"
    _stream_on_a_follows_changes_on_b(on_a, on_b)  # before any worker: the job stays queued
    workers = _workers(a, range(1), "a", work_dir, *SLOW)
    try:
        # A worker long-polling replica A is woken by submits to replica B (A re-checks only
        # every 30 s, and the worker's own poll lasts 20 s: a fast pickup needs the wake-up).
        on_b.wait_status(on_a.submit_bytes(b"warm-up")["job_id"], {"completed"}, timeout=60)
        for n in range(3):
            time.sleep(0.5)  # the worker is back in its long poll on A
            job_id = on_b.submit_bytes(f"wake-{n}".encode())["job_id"]
            on_b.wait_status(job_id, {"completed"}, timeout=60)
            assert _pickup_seconds(database_url, job_id) < 3.0

        workers += _workers(a, range(1, WORKERS_PER_REPLICA), "a", work_dir, *SLOW)
        workers += _workers(b, range(WORKERS_PER_REPLICA), "b", work_dir)
        expected = _run_with_crash(a, on_a, on_b, database_url, done_before=4)
        _check_jobs(database_url, expected, work_dir, _coordinator_logs(a, b))
        _check_logs(a, b, database_url, work_dir, total=4 + len(expected))
    finally:
        stop_all(workers)


def _stream_on_a_follows_changes_on_b(on_a: Api, on_b: Api) -> None:
    """A job's event stream on replica A sees the job cancelled through replica B, once."""
    job_id = on_b.submit_bytes(b"watched")["job_id"]
    resp = on_a.get(f"/jobs/{job_id}/events", stream=True, timeout=(10, 30))
    assert resp.status_code == 200
    resp.encoding = "utf-8"
    feed = [(int(m.id), json.loads(m.data)["status"])
            for m in _until_cancelled(parse_sse(resp.iter_lines(chunk_size=None, decode_unicode=True)),
                                      on_b, job_id)]
    assert [status for _, status in feed] == ["queued", "cancelled"]  # the stream then ends
    assert feed[1][0] > feed[0][0]


def _until_cancelled(messages, on_b: Api, job_id: str):
    """The stream's messages; after the first (the snapshot), cancel the job through B."""
    for n, message in enumerate(messages):
        yield message
        if n == 0:
            assert on_b.request("DELETE", f"/jobs/{job_id}").status_code == 200


# -- the run ------------------------------------------------------------------------------------

def _run_with_crash(a: Coordinator, on_a: Api, on_b: Api, url: str,
                    done_before: int) -> dict[str, str]:
    """Submit JOBS jobs through both replicas; SIGKILL A mid-run, while one of its workers holds
    a job, and restart it. Returns tag -> sha256 of the input of every job submitted."""
    expected = {f"job-{i}": hashlib.sha256(_payload(i)).hexdigest() for i in range(JOBS)}
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_submit_share, args=(api, start, errors))
               for start, api in enumerate((on_a, on_b))]
    for thread in threads:
        thread.start()
    _wait_completed(on_b, done_before + JOBS // 4, timeout=120)
    expected.update(_hold_a_job_on_a(on_b, url))
    a.kill()
    time.sleep(DOWN_SECONDS)
    a.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    _wait_completed(on_b, done_before + len(expected), timeout=180)
    return expected


def _hold_a_job_on_a(api: Api, url: str) -> dict[str, str]:
    """Submit large jobs until a worker of replica A is busy with one (A's workers move data at
    1 MiB/s); returns their tags and digests."""
    submitted: dict[str, str] = {}
    for n in range(10):
        data = bytes([n]) * (3 * 1024 * 1024)
        tag = f"big-{n}"
        submitted[tag] = hashlib.sha256(data).hexdigest()
        job_id = api.submit_bytes(data, options=json.dumps({"tag": tag}))["job_id"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            [(status, worker)] = _sql(url, f"SELECT status, worker_id FROM jobs WHERE id = '{job_id}'")
            if status == "running" and worker.startswith("a"):
                return submitted
            if status == "completed":
                break
            time.sleep(0.05)
    raise AssertionError("no worker of replica A took one of the large jobs")


def _payload(i: int) -> bytes:
    return f"replica payload {i:05d} ".encode() * 4


def _submit_share(api: Api, start: int, errors: list) -> None:
    """Submit every second job through one replica, retrying (same Idempotency-Key) while
    that replica is down."""
    try:
        for i in range(start, JOBS, 2):
            _submit_until_accepted(api, i)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def _submit_until_accepted(api: Api, i: int, timeout: float = 90) -> None:
    tag = f"job-{i}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resp = api.post("/jobs", params={"kind": "echo", "options": f'{{"tag": "{tag}"}}'},
                            data=_payload(i), timeout=5,
                            headers={"Content-Type": "application/octet-stream",
                                     "Idempotency-Key": tag})
            if resp.status_code in (200, 202):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"could not submit {tag}")


def _wait_completed(api: Api, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = api.get("/jobs", params={"status": "completed", "limit": 1}).json()["total"]
        if done >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {done} of {count} jobs completed")


# -- the checks ---------------------------------------------------------------------------------

def _claimed_by_replica_a(work_dir: Path, coordinator_logs: str) -> set[str]:
    """Jobs that replica A claimed for one of its workers at some point: those a worker of A
    logged as claimed, and those a reaper took back from the lease of a worker of A. The second
    covers a claim-on-complete whose reply died with A: the worker never saw that claim, and a
    claim that carried its input inline counts as started (it uses an attempt when reaped)."""
    found: set[str] = set()
    sessions: set[str] = set()
    for log in work_dir.glob("a*.log"):
        text = log.read_text(errors="replace")
        found |= set(re.findall(r"job (\w+): claimed", text))
        sessions |= set(re.findall(r"worker a\d+ \(session (\w+)\) starting", text))
    for job_id, session in re.findall(r"reaper: job (\w+) \w+ \(lease of worker session (\w+) expired",
                                      coordinator_logs):
        if session in sessions:
            found.add(job_id)
    return found


def _coordinator_logs(*replicas: Coordinator) -> str:
    return "".join(coord.log_path.read_text(errors="replace") for coord in replicas)


def _mentions(job_id: str, work_dir: Path, coordinator_logs: str) -> list[str]:
    """Every log line about one job, for a failure message."""
    texts = [coordinator_logs, *(log.read_text(errors="replace") for log in work_dir.glob("*.log"))]
    return [line for text in texts for line in text.splitlines() if job_id in line]


def _check_jobs(url: str, expected: dict[str, str], work_dir: Path, coordinator_logs: str) -> None:
    """Each submitted job exists once, completed, with one result of the right bytes."""
    rows = _sql(url, "SELECT j.id, j.options::json->>'tag', j.status, j.attempts, j.run_number, "
                     "a.attempt, a.sha256 FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id "
                     "AND a.name = j.main_artifact WHERE j.options::json->>'tag' IS NOT NULL")
    tags = Counter(row[1] for row in rows)
    assert set(tags) == set(expected) and max(tags.values()) == 1, "a job was lost or duplicated"
    from_a = _claimed_by_replica_a(work_dir, coordinator_logs)
    for job_id, tag, status, attempts, run, artifact_run, digest in rows:
        assert status == "completed", (job_id, status)
        assert artifact_run == run and digest == expected[tag], (job_id, "wrong or missing result")
        assert attempts == 1 or job_id in from_a, \
            (job_id, attempts, "re-run, but not A's", _mentions(job_id, work_dir, coordinator_logs))
    results = _sql(url, "SELECT job_id, count(*) FROM artifacts GROUP BY job_id HAVING count(*) > 1")
    assert results == [], "a job has more than one result"


def _check_logs(a: Coordinator, b: Coordinator, url: str, work_dir: Path, total: int) -> None:
    """No job completed twice; every job a reaper took back was given up out loud by each worker
    that claimed it and did not complete it (never silently)."""
    coordinator_logs = _coordinator_logs(a, b)
    completions = Counter(re.findall(r"job (\w+): completed by", coordinator_logs))
    assert not [job for job, n in completions.items() if n > 1], "a job completed twice"
    # A SIGKILL may cut the log lines of its last few completions, never more.
    assert len(completions) >= total - 2 * WORKERS_PER_REPLICA
    reaped = set(re.findall(r"reaper: job (\w+) (?:requeued|unstarted)", coordinator_logs))
    assert reaped, "the crash took no job from its worker"  # A died while its worker held one
    rerun = {row[0] for row in _sql(url, "SELECT id FROM jobs WHERE attempts > 1")}
    assert rerun <= reaped, "a job ran twice without a reaper taking it back"
    deadline = time.monotonic() + 60
    while (silent := _silent_losses(reaped, work_dir)) and time.monotonic() < deadline:
        time.sleep(1)  # a worker of A may still be retrying its report
    assert not silent, f"leases lost without a word from their worker: {silent}"


def _silent_losses(reaped: set[str], work_dir: Path) -> set[str]:
    """Reaped jobs that some worker claimed and neither completed nor reported giving up."""
    silent: set[str] = set()
    for log in work_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        silent |= {job for job in reaped if f"job {job}: claimed" in text
                   and not re.search(rf"job {job}: .*(completed|{GAVE_UP})", text)}
    return silent
