"""The background thread that rescues jobs whose leases expired and sweeps orphaned files.

Every coordinator process runs one. With several replicas on PostgreSQL each pass first takes
its task's advisory lock (`database.exclusive`) and is skipped when another replica holds it,
so a sweep never runs twice at once. (A reap pass is safe even without it: its UPDATEs move
only rows still running with an expired lease, so a row moved by one replica is not moved, or
announced, again by another.)
"""
from __future__ import annotations

import logging
import threading
import time

from flask import Flask

from . import jobs, retention
from .database import exclusive
from .extensions import db
from .state import get_state
from .sweeper import SweepReport, make_sweeper

logger = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Runs `jobs.reap` every `interval` seconds, and the orphan sweep every `sweep_interval`."""

    def __init__(self, app: Flask, interval: float, sweep_interval: float | None = None):
        super().__init__(name="reaper", daemon=True)
        self.app = app
        self.interval = interval
        self.sweep_interval = float(sweep_interval or app.config["ORPHAN_SWEEP_INTERVAL"])
        self.sweeper = make_sweeper(get_state(app).storage, float(app.config["ORPHAN_GRACE_SECONDS"]))
        self.retention = retention.RetentionPolicy.from_config(app.config)
        self._next_sweep = time.monotonic() + self.sweep_interval
        self._stop_event = threading.Event()

    def sweep_once(self) -> SweepReport:
        """One housekeeping pass: retention, then the orphan sweep (skipped while another
        replica runs its own)."""
        with self.app.app_context(), exclusive(db.engine, "sweep") as mine:
            if not mine:
                logger.debug("sweep skipped: another replica is sweeping")
                return SweepReport()
            try:
                if self.retention.active:
                    retention.apply(db.session, get_state(self.app).storage, self.retention)
                return self.sweeper.sweep(db.session)
            finally:
                db.session.remove()

    def _maybe_sweep(self) -> None:
        """Sweep when the interval has passed."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_interval
            self.sweep_once()

    def run_once(self) -> dict[str, int]:
        """One pass over expired leases (skipped while another replica runs its own)."""
        with self.app.app_context(), exclusive(db.engine, "reap") as mine:
            if not mine:
                return dict.fromkeys(("requeued", "failed", "cancelled", "unstarted"), 0)
            try:
                state = get_state(self.app)
                counts = jobs.reap(db.session, events=state.events)
                state.metrics.reaped(counts)
                return counts
            finally:
                db.session.remove()

    def run(self) -> None:
        """Loop until `stop()`; a failing pass is logged and retried next interval."""
        logger.info("reaper started (every %.1fs)", self.interval)
        while not self._stop_event.wait(self.interval):
            try:
                self.run_once()
                self._maybe_sweep()
            except Exception:  # keep rescuing jobs even after a transient database error
                logger.exception("reaper pass failed")

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stop_event.set()


def start_reaper(app: Flask) -> Reaper:
    """Sweep orphaned files once (start-up: before serving), then start the reaper thread."""
    reaper = Reaper(app, float(app.config["REAPER_INTERVAL"]))
    try:
        reaper.sweep_once()
    except Exception:  # a failing sweep must not stop the coordinator from serving
        logger.exception("start-up sweep failed")
    reaper.start()
    return reaper
