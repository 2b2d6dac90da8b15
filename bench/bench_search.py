"""Search benchmark: 10,000 indexed transcript lines, query latency p50/p99 (goal < 50 ms).

Run on demand (not in `make test`): `.venv/bin/python bench/bench_search.py [--segments N]`.
A coordinator app on a fresh SQLite file (or `--database-url postgresql+psycopg://...` on an
empty database) gets jobs of several owners whose transcripts are lines of the bench talk
(bench/talk_sentences.txt, shuffled and paired, so common and rare words both occur), indexed
through `coordinator.search` as a worker's upload would. Each query class is then timed over
many queries, as a client key would run them through GET /search on the Flask test client
(auth, validation, the search, snippets and JSON), and the engine call alone. Printed as JSON
and written to bench/results/search.json.
"""
from __future__ import annotations

import collections
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator import create_app, search  # noqa: E402
from coordinator.auth import create_key  # noqa: E402
from coordinator.extensions import db  # noqa: E402
from coordinator.models import Job  # noqa: E402
from coordinator.search_query import check_request  # noqa: E402
from shared.protocol import KeyKind  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_MS = 50.0
SENTENCES = tuple(line.strip() for line in (ROOT / "bench" / "talk_sentences.txt")
                  .read_text(encoding="utf-8").splitlines() if line.strip())
OWNERS = 5
LINES_PER_JOB = 100


def _vocabulary() -> tuple[list[str], list[str]]:
    """(common, rare) words of the talk: in many lines, in exactly one."""
    counts = collections.Counter(w.strip(".,?!'\"").lower() for s in SENTENCES
                                 for w in set(s.split()))
    words = [w for w in counts if len(w) > 3 and w.isalpha()]
    common = sorted(words, key=lambda w: -counts[w])[:20]
    rare = [w for w in words if counts[w] == 1][:60]
    return common, rare


def _queries(rng: random.Random) -> dict[str, list[str]]:
    """The query classes."""
    common, rare = _vocabulary()
    phrases = [" ".join(s.split()[1:3]) for s in SENTENCES if len(s.split()) > 3]
    return {"common word": common, "rare word": rare,
            "two words": [f"{rng.choice(common)} {rng.choice(rare)}" for _ in range(40)],
            "phrase": [f'"{p}"' for p in phrases[:40]],
            "or / exclude": [f"{rng.choice(rare)} or {rng.choice(rare)} -{rng.choice(common)}"
                             for _ in range(40)]}


def _fill(app, segments: int, rng: random.Random) -> list[str]:
    """Jobs and their indexed lines; returns the client keys (one per owner)."""
    keys, owners = [], []
    with app.app_context():
        for n in range(OWNERS):
            row, plain = create_key(db.session, KeyKind.CLIENT, f"bench-{n}")
            keys.append(plain)
            owners.append(row.id)
        now = time.time()
        for number in range(-(-segments // LINES_PER_JOB)):
            job_id = f"{number:032x}"
            owner = owners[number % OWNERS]
            db.session.add(Job(id=job_id, owner_key_id=owner, kind="transcribe", status="completed",
                               source_language="en", target_language="es", max_attempts=3,
                               available_at=now, created_at=now, updated_at=now,
                               input_name=f"talk-{number}.mp4"))
            count = min(LINES_PER_JOB, segments - number * LINES_PER_JOB)
            entries = [search.Entry("source", "en", i, i * 4.0, i * 4.0 + 4.0,
                                    f"{rng.choice(SENTENCES)} {rng.choice(SENTENCES)}")
                       for i in range(count)]
            search.index_entries(db.session, job_id, owner, entries)
            db.session.commit()
        db.session.remove()
    return keys


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "queries": len(ordered)}


def _time_http(client, key: str, queries: list[str], rounds: int) -> tuple[list[float], int]:
    samples, hits = [], 0
    for _ in range(rounds):
        for q in queries:
            started = time.perf_counter()
            reply = client.get("/search", query_string={"q": q}, headers={"X-API-Key": key})
            samples.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.get_json()
            hits += reply.get_json()["total"]
    return samples, hits


def _time_engine(app, queries: list[str], rounds: int, owner: int) -> list[float]:
    samples = []
    with app.app_context():
        for _ in range(rounds):
            for q in queries:
                request = check_request(q, 256)
                started = time.perf_counter()
                search.search(db.session, request, owner)
                samples.append(time.perf_counter() - started)
                db.session.rollback()
        db.session.remove()
    return samples


@click.command()
@click.option("--segments", default=10_000, show_default=True, help="Indexed transcript lines.")
@click.option("--rounds", default=5, show_default=True, help="Times each query list is run.")
@click.option("--database-url", default=None, help="An empty PostgreSQL database (default: SQLite).")
def main(segments: int, rounds: int, database_url: str | None) -> None:
    """Index `segments` lines, time the query classes, print JSON."""
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"DATA_DIR": tmp, "DATABASE_URL": database_url, "STORAGE_URL": None,
                          "CALLBACKS_ENABLED": False, "RATELIMIT_ENABLED": False})
        started = time.perf_counter()
        keys = _fill(app, segments, rng)
        indexed_s = time.perf_counter() - started
        client, classes = app.test_client(), {}
        for name, queries in _queries(rng).items():
            samples, hits = _time_http(client, keys[0], queries, rounds)
            engine = _time_engine(app, queries, rounds, owner=1)
            classes[name] = {"http": _stats(samples), "engine": _stats(engine),
                             "mean_total_hits": round(hits / len(samples), 1)}
        worst = max(c["http"]["p99_ms"] for c in classes.values())
        result = {"segments": segments, "owners": OWNERS, "database": app.config["SQLALCHEMY_DATABASE_URI"]
                  .split(":")[0], "index_seconds": round(indexed_s, 2), "classes": classes,
                  "worst_http_p99_ms": worst, "goal_ms": GOAL_MS, "goal_met": worst < GOAL_MS}
        with app.app_context():
            db.engine.dispose()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
