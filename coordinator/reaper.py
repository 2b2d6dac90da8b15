"""The background thread that rescues jobs whose leases expired."""
from __future__ import annotations

import logging
import threading

from flask import Flask

from . import jobs
from .extensions import db
from .state import get_state

logger = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Runs `jobs.reap` every `interval` seconds until stopped."""

    def __init__(self, app: Flask, interval: float):
        super().__init__(name="reaper", daemon=True)
        self.app = app
        self.interval = interval
        self._stop_event = threading.Event()

    def run_once(self) -> dict[str, int]:
        """One pass over expired leases."""
        with self.app.app_context():
            try:
                return jobs.reap(db.session, events=get_state(self.app).events)
            finally:
                db.session.remove()

    def run(self) -> None:
        """Loop until `stop()`; a failing pass is logged and retried next interval."""
        logger.info("reaper started (every %.1fs)", self.interval)
        while not self._stop_event.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # keep rescuing jobs even after a transient database error
                logger.exception("reaper pass failed")

    def stop(self) -> None:
        """Ask the loop to end."""
        self._stop_event.set()


def start_reaper(app: Flask) -> Reaper:
    """Start the reaper thread for `app`."""
    reaper = Reaper(app, float(app.config["REAPER_INTERVAL"]))
    reaper.start()
    return reaper
