"""Re-dub benchmark: dub a 20-line English talk, correct one line, re-dub; compare the walls.

Run on demand (not in `make test`): `.venv/bin/python bench/bench_redub.py [--sentences N]`.
A real coordinator and one real worker (models loaded by a warm-up dub first, so neither timed
job pays for loading them). The goal (issue 8): the re-dub reports exactly 1 line re-voiced and
takes < 25 % of the original dub's wall time (each job's started_at -> finished_at on the
coordinator). Printed as JSON and written to bench/results/redub.json.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dubfleet.sample import make_sample_video  # noqa: E402
from tests.integration.procs import (ADMIN_KEY, Api, Coordinator, start_worker,  # noqa: E402
                                     stop_all)

RESULTS = ROOT / "bench" / "results"
GOAL = 0.25
SENTENCES = tuple(line.strip() for line in (ROOT / "bench" / "talk_sentences.txt")
                  .read_text(encoding="utf-8").splitlines() if line.strip())


def _dub(api: Api, video: Path) -> dict:
    """Submit a dub and wait for it."""
    with open(video, "rb") as fh:
        resp = api.post("/jobs", params={"filename": video.name, "kind": "dub",
                                         "source_language": "en", "target_language": "es"},
                        data=fh, headers={"Content-Type": "application/octet-stream"})
    resp.raise_for_status()
    return _wait(api, resp.json()["job_id"])


def _wait(api: Api, job_id: str) -> dict:
    view = api.wait_status(job_id, {"completed", "failed", "cancelled"}, timeout=3600)
    if view["status"] != "completed":
        raise click.ClickException(f"job {job_id} {view['status']}: {view.get('error')}")
    return view


def _report(api: Api, view: dict) -> dict:
    return api.get(f"/jobs/{view['job_id']}/artifacts/dub_report.json").json()


def _wall(view: dict) -> float:
    return round(view["finished_at"] - view["started_at"], 3)


@click.command()
@click.option("--sentences", type=click.IntRange(2), default=20, show_default=True,
              help="Lines in the talk.")
def main(sentences: int) -> None:
    """Dub, edit one line's text, re-dub; print the figures as JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-redub-") as tmp:
        root = Path(tmp)
        coord = Coordinator(root / "coord").start()
        worker = start_worker(coord.url, root / "w", "bench-worker", "--claim-wait", "5")
        try:
            api = Api(coord.url, ADMIN_KEY)
            warm = root / "warm.mp4"
            make_sample_video(warm, SENTENCES[:2], pause=0.9)
            _dub(api, warm)  # model loads
            video = root / "talk.mp4"
            make_sample_video(video, SENTENCES[:sentences], pause=0.9)
            parent = _dub(api, video)
            rows = _report(api, parent)["segments"]
            edited = rows[len(rows) // 2]["index"]
            resp = api.post(f"/jobs/{parent['job_id']}/redub", json={"segments": [
                {"index": edited, "text": "Esta frase fue corregida a mano."}]})
            resp.raise_for_status()
            child = _wait(api, resp.json()["job_id"])
            report = _report(api, child)
        finally:
            stop_all([worker])
            coord.kill()
    result = {"lines": len(rows), "edited": edited, "dub_wall_s": _wall(parent),
              "redub_wall_s": _wall(child), "revoiced": report["revoiced"],
              "reused": report["reused"], "redub_timings": report.get("timings"), "goal": GOAL}
    result["ratio"] = round(result["redub_wall_s"] / max(result["dub_wall_s"], 1e-6), 3)
    result["ok"] = result["ratio"] < GOAL and len(report["revoiced"]) == 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "redub.json").write_text(json.dumps(result, indent=2))
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
