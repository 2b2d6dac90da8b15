"""Search end to end: a real waitress coordinator, a worker publishing transcript.json over HTTP,
the real `dubfleet search` and `coordinator reindex` / `prune` commands as subprocesses."""
from __future__ import annotations

import json
import os
import subprocess

from dubfleet.local import BIN
from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api

SESSION = "search-session"
TRANSCRIPT = {
    "language": "en", "duration": 9.0,
    "segments": [
        {"index": 0, "start": 0.0, "end": 4.0, "text": "Welcome to the lighthouse keepers' meeting."},
        {"index": 1, "start": 4.0, "end": 9.0, "text": "The keepers were running out of lamp oil."},
    ],
    "translation": {"target_language": "fr", "segments": [
        {"index": 0, "start": 0.0, "end": 4.0, "text": "Bienvenue à la réunion des gardiens de phare."},
        {"index": 1, "start": 4.0, "end": 9.0, "text": "Les gardiens manquaient d'huile pour les lampes."},
    ]},
}


def publish_transcript(base: str, client: Api, name: str) -> str:
    """A subtitle job that a worker (speaking the real protocol) completes with TRANSCRIPT."""
    job_id = client.submit_bytes(b"video bytes", kind="subtitle", filename=name,
                                 source_language="en", target_language="fr")["job_id"]
    worker = Api(base, WORKER_KEY)
    info = {"worker_id": "search-w", "session_id": SESSION, "kinds": ["subtitle"],
            "asr_models": ["base"], "target_languages": ["fr"]}
    claim = worker.post(f"/jobs/{job_id}/claim", json=info, headers={"X-Worker-Session": SESSION})
    assert claim.status_code == 200, claim.text
    headers = {"X-Worker-Session": SESSION, "X-Lease-Token": claim.json()["lease_token"],
               "Content-Type": "application/octet-stream"}
    for artifact, final in (("transcript.json", False), ("subtitles.fr.srt", True)):
        body = json.dumps(TRANSCRIPT).encode() if final is False else b"1\n00:00:00,000 --> 00:00:04,000\nx\n"
        reply = worker.post(f"/jobs/{job_id}/upload-result", data=body, headers=headers,
                            params={"name": artifact, "final": int(final)})
        assert reply.status_code == 200, reply.text
    return job_id


def dubfleet(url: str, key: str, *args: str) -> subprocess.CompletedProcess:
    """The real client CLI."""
    env = {**os.environ, "DUBFLEET_API_URL": url, "DUBFLEET_API_KEY": key}
    return subprocess.run([str(BIN / "dubfleet"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def coordinator_cli(coord, *args: str) -> str:
    """The real coordinator CLI on the running coordinator's data."""
    return subprocess.run([str(BIN / "coordinator"), *args], env=coord.env, capture_output=True,
                          text=True, check=True, timeout=120).stdout


def test_published_transcript_is_searchable_by_its_owner_only_until_pruned(coordinator):
    alice_key, bob_key = coordinator.create_key(name="alice"), coordinator.create_key(name="bob")
    alice, bob = Api(coordinator.url, alice_key), Api(coordinator.url, bob_key)
    job_id = publish_transcript(coordinator.url, alice, "keepers.mp4")

    found = alice.get("/search", params={"q": "run lamp"}).json()
    assert [(h["job_id"], h["segment_index"], h["start"], h["end"]) for h in found["results"]] == [
        (job_id, 1, 4.0, 9.0)]
    french = alice.get("/search", params={"q": "phare", "kind": "translation"}).json()["results"]
    assert [(h["language"], h["segment_index"]) for h in french] == [("fr", 0)]
    assert bob.get("/search", params={"q": "lamp"}).json() == {
        "q": "lamp", "results": [], "total": 0, "limit": 20, "offset": 0}
    assert Api(coordinator.url, ADMIN_KEY).get("/search", params={"q": "lamp"}).json()["total"] == 1

    cli = dubfleet(coordinator.url, alice_key, "search", "keepers running")
    assert cli.returncode == 0, cli.stderr
    assert job_id in cli.stdout and "0:04.0-0:09.0" in cli.stdout and "keepers.mp4" in cli.stdout
    assert "1 of 1 result(s)" in cli.stderr
    refused = dubfleet(coordinator.url, alice_key, "search", "--", "-lamp")
    assert refused.returncode != 0 and "no word to find" in refused.stderr + refused.stdout

    assert "indexed 4 lines of 1 jobs" in coordinator_cli(coordinator, "reindex")
    assert alice.get("/search", params={"q": "lamp"}).json()["total"] == 1
    assert "pruned 1 jobs" in coordinator_cli(coordinator, "prune", "--days", "0")
    assert Api(coordinator.url, ADMIN_KEY).get("/search", params={"q": "lamp"}).json()["total"] == 0
