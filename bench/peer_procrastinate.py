"""The procrastinate side of bench/peers.py: an App on BENCH_PG_DSN with a no-op task.

Loaded by `procrastinate --app=bench.peer_procrastinate.app` with the repository root on
PYTHONPATH.
"""
from __future__ import annotations

import os

import procrastinate

app = procrastinate.App(connector=procrastinate.PsycopgConnector(
    conninfo=os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")))


@app.task(name="noop", queue="bench")
def noop() -> None:
    """Do nothing."""
