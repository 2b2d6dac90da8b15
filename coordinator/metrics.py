"""Prometheus metrics at `GET /metrics` (admin key): queue depth, claims, lease expiries, retries,
job and stage durations, HTTP latency by route and status, workers online.

Each app has its own registry. Queue depth and workers online are read from the database at
scrape time (one GROUP BY); the rest are counted as things happen in this process.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

from flask import Flask, Request, Response, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _QueueCollector:
    """Jobs by status and kind, and workers online, read when Prometheus scrapes."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .extensions import db
        from .models import Job
        from .workers import workers_online
        depth = GaugeMetricFamily("dubfleet_jobs", "Jobs by status and kind", labels=["status", "kind"])
        online = GaugeMetricFamily("dubfleet_workers_online", "Worker sessions seen recently")
        with self.app.app_context():
            try:
                rows = db.session.execute(select(Job.status, Job.kind, func.count())
                                          .group_by(Job.status, Job.kind)).all()
                seen = workers_online(db.session, float(self.app.config["WORKER_ONLINE_SECONDS"]))
            finally:
                db.session.remove()
        for status, kind, count in rows:
            depth.add_metric([status, kind], count)
        online.add_metric([], seen)
        yield depth
        yield online


class Metrics:
    """The app's metric objects and the hooks that feed them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # no describe-by-collect: no query at start-up
        r = self.registry
        self.claims = Counter("dubfleet_claims", "Jobs claimed by workers", ["kind"], registry=r)
        self.lease_expiries = Counter("dubfleet_lease_expiries", "Expired leases handled by the reaper",
                                      ["outcome"], registry=r)
        self.retries = Counter("dubfleet_retries", "Failed attempts requeued for another try", ["kind"],
                               registry=r)
        self.finished = Counter("dubfleet_jobs_finished", "Jobs that reached a final status",
                                ["kind", "status"], registry=r)
        self.job_seconds = Histogram("dubfleet_job_duration_seconds", "Claim to final status",
                                     ["kind", "status"], buckets=DURATION_BUCKETS, registry=r)
        self.stage_seconds = Histogram("dubfleet_job_stage_seconds", "Time spent in each worker stage",
                                       ["kind", "stage"], buckets=DURATION_BUCKETS, registry=r)
        self.http_seconds = Histogram("dubfleet_http_request_duration_seconds", "HTTP request latency",
                                      ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self._jobs: dict[str, list] = {}  # job -> [kind, claimed at, stage, stage since]
        self._lock = threading.Lock()

    def watch_queue(self, app: Flask) -> None:
        """Register the scrape-time queue collector."""
        self.registry.register(_QueueCollector(app))

    def claimed(self, job_id: str, kind: str, now: float | None = None) -> None:
        """A worker claimed a job: count it and start its timers."""
        self.claims.labels(kind).inc()
        with self._lock:
            if len(self._jobs) > 100_000:  # jobs whose end this process never saw
                self._jobs.clear()
            self._jobs[job_id] = [kind, time.monotonic() if now is None else now, None, None]

    def stage_seen(self, job_id: str, stage: str | None, now: float | None = None) -> None:
        """A heartbeat reported `stage`: close the previous stage's timer when it changed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            state = self._jobs.get(job_id)
            if state is None or not stage or state[2] == stage:
                return
            kind, previous, since = state[0], state[2], state[3]
            state[2], state[3] = stage, now
        if previous is not None:
            self.stage_seconds.labels(kind, previous).observe(now - since)

    def ended(self, job_id: str, status: str, kind: str | None = None, now: float | None = None) -> None:
        """A job's attempt ended with `status` (final, or queued again for a retry)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            state = self._jobs.pop(job_id, None)
        kind = kind or (state[0] if state else "unknown")
        if state is not None and state[2] is not None:
            self.stage_seconds.labels(kind, state[2]).observe(now - state[3])
        if status == "queued":
            self.retries.labels(kind).inc()
            return
        self.finished.labels(kind, status).inc()
        if state is not None:
            self.job_seconds.labels(kind, status).observe(now - state[1])

    def reaped(self, counts: dict[str, int]) -> None:
        """Count the reaper's outcomes."""
        for outcome, count in counts.items():
            if count:
                self.lease_expiries.labels(outcome).inc(count)

    def exposition(self) -> Response:
        """The text format Prometheus scrapes."""
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST)


# Methods counted under their own name; any other token a client sends is "other", so no
# client can add series to the exposition (or entries to the children below) at will.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_http_timing(app: Flask, metrics: Metrics) -> None:
    """Time every request by method, route template and status (all bounded label values)."""
    children: dict[tuple[str, str, int], Any] = {}  # the histogram's children, found once each
    app.request_class = TimedRequest

    @app.after_request
    def _stop(response: Any) -> Any:
        current = request._get_current_object()  # one context lookup, not one per attribute
        method, rule = current.method, current.url_rule
        key = (method if method in HTTP_METHODS else "other",
               rule.rule if rule is not None else "unmatched", response.status_code)
        child = children.get(key)
        if child is None:
            child = children[key] = metrics.http_seconds.labels(key[0], key[1], str(key[2]))
        child.observe(time.perf_counter() - current.started)  # every request is a TimedRequest
        return response


class TimedRequest(Request):
    """A request that notes when it was made (the start of its latency), so timing it needs no
    `before_request` hook of its own."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()
