"""Profile the coordinator's hot path in one process (pyinstrument): the per-job worker calls
(claim, download-input unless inline, upload-result final=1) and the status calls (GET /jobs/<id>,
GET /health), through the whole Flask app on a real SQLite file, without the HTTP server.

Run: `.venv/bin/python bench/profile_hot_path.py [--jobs 300] [--html out.html]`; prints the
call tree and the per-request cost of each call.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import coordinator_test_config  # noqa: E402

WORKER = {"worker_id": "prof", "session_id": "prof-session", "kinds": ["echo"]}


def _keys(app) -> tuple[str, str]:
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        client = create_key(db.session, KeyKind.CLIENT, "prof-client")[1]
        worker = create_key(db.session, KeyKind.WORKER, "prof-worker")[1]
        db.session.remove()
    return client, worker


def _one_job(http, wkey: str) -> None:
    """The worker's calls for one echo job."""
    wh = {"X-API-Key": wkey, "X-Worker-Session": WORKER["session_id"]}
    claimed = http.post("/jobs/claim", json={"worker": WORKER}, headers=wh).get_json()
    lease = {**wh, "X-Lease-Token": claimed["lease_token"]}
    job_id = claimed["job_id"]
    data = b"tiny"
    if claimed.get("input_inline") is None:
        data = http.get(f"/jobs/{job_id}/download-input", headers=lease).data
    reply = http.post(f"/jobs/{job_id}/upload-result?name=result&final=1", data=data,
                      headers={**lease, "Content-Type": "application/octet-stream"})
    assert reply.status_code == 200, reply.get_json()


def _timed(label: str, count: int, call) -> None:
    t0 = time.perf_counter()
    for _ in range(count):
        call()
    per = (time.perf_counter() - t0) / count * 1000
    click.echo(f"{label}: {per:.2f} ms per call ({count} calls)")


@click.command()
@click.option("--jobs", default=300, show_default=True)
@click.option("--html", type=click.Path(dir_okay=False), default=None, help="Also write an HTML report.")
def main(jobs: int, html: str | None) -> None:
    """Profile claim/download/upload and the status endpoints."""
    from pyinstrument import Profiler
    from coordinator import create_app
    with tempfile.TemporaryDirectory(prefix="dubfleet-prof-") as tmp:
        app = create_app(coordinator_test_config(Path(tmp), RATELIMIT_ENABLED=False))
        ckey, wkey = _keys(app)
        http = app.test_client()
        ids = [http.post("/jobs?kind=echo", data=b"tiny", headers={
            "X-API-Key": ckey, "Content-Type": "application/octet-stream"}).get_json()["job_id"]
            for _ in range(jobs + 2)]
        profiler = Profiler(interval=0.0005)
        profiler.start()
        _timed("job (claim + download + upload)", jobs, lambda: _one_job(http, wkey))
        _timed("GET /jobs/<id> (queued)", jobs, lambda: http.get(f"/jobs/{ids[-1]}", headers={"X-API-Key": ckey}))
        _timed("GET /health", jobs, lambda: http.get("/health"))
        wh = {"X-API-Key": wkey, "X-Worker-Session": WORKER["session_id"]}
        held = http.post("/jobs/claim", json={"worker": WORKER}, headers=wh).get_json()
        beat = {**wh, "X-Lease-Token": held["lease_token"]}
        _timed("POST heartbeat", jobs, lambda: http.post(f"/jobs/{held['job_id']}/heartbeat",
                                                         json={"progress": 10.0}, headers=beat))
        empty = {"worker": {**WORKER, "kinds": ["subtitle"]}, "wait": 0}
        _timed("POST /jobs/claim (nothing to claim)", jobs, lambda: http.post("/jobs/claim", json=empty, headers=wh))
        profiler.stop()
        click.echo(profiler.output_text(unicode=True, color=False, show_all=False))
        if html:
            Path(html).write_text(profiler.output_html())


if __name__ == "__main__":
    main()
