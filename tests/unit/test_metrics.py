"""GET /metrics: Prometheus text for admins only, fed by real queue activity."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_follow_the_queue(app, client, make_key):
    from coordinator.reaper import Reaper
    admin, worker, user = make_key("admin"), make_key("worker"), make_key("client")
    raw = {"Content-Type": "application/octet-stream"}
    for _ in range(3):
        client.post("/jobs?kind=echo", data=b"x", headers={"X-API-Key": user, **raw})
    client.post("/jobs?kind=dub", data=b"x", headers={"X-API-Key": user, **raw})
    wh = {"X-API-Key": worker, "X-Worker-Session": "s1"}
    body = {"worker": {"worker_id": "w1", "kinds": ["echo"]}}
    done = client.post("/jobs/claim", json=body, headers=wh).get_json()
    token = {**wh, "X-Lease-Token": done["lease_token"]}
    client.post(f"/jobs/{done['job_id']}/heartbeat", json={"stage": "downloading"}, headers=token)
    client.post(f"/jobs/{done['job_id']}/heartbeat", json={"stage": "uploading"}, headers=token)
    client.post(f"/jobs/{done['job_id']}/upload-result", data=b"y", headers=token)
    again = client.post(f"/jobs/{done['job_id']}/upload-result", data=b"y", headers=token)
    assert again.get_json()["repeated"] is True  # a retry after a lost reply: counted once below
    repeat = client.post(f"/jobs/{done['job_id']}/complete", json={"main_artifact": "result"}, headers=token)
    assert repeat.status_code == 200  # the same completion again: still counted once
    retried = client.post("/jobs/claim", json=body, headers=wh).get_json()
    client.post(f"/jobs/{retried['job_id']}/fail", json={"reason": "flaky", "retryable": True},
                headers={**wh, "X-Lease-Token": retried["lease_token"]})
    Reaper(app, 1.0).run_once()

    queued = client.get("/jobs?status=queued", headers={"X-API-Key": user}).get_json()["jobs"]
    dub = next(j for j in queued if j["kind"] == "dub")
    client.delete(f"/jobs/{dub['job_id']}", headers={"X-API-Key": user})  # ends without a claim

    assert client.get("/metrics", headers={"X-API-Key": user}).status_code == 403
    assert client.get("/metrics").status_code == 401
    reply = client.get("/metrics", headers={"X-API-Key": admin})
    assert reply.status_code == 200 and reply.mimetype == "text/plain"
    m = _samples(reply.get_data(as_text=True))
    assert m[("dubfleet_jobs", (("kind", "echo"), ("status", "queued")))] == 2
    assert m[("dubfleet_jobs", (("kind", "echo"), ("status", "completed")))] == 1
    assert m[("dubfleet_jobs", (("kind", "dub"), ("status", "cancelled")))] == 1
    assert m[("dubfleet_jobs_finished_total", (("kind", "dub"), ("status", "cancelled")))] == 1
    finished = {labels: v for (name, labels), v in m.items() if name == "dubfleet_jobs_finished_total"}
    assert sum(finished.values()) == 2, finished  # one completion, one cancel: nothing twice
    assert m[("dubfleet_workers_online", ())] == 1
    assert m[("dubfleet_claims_total", (("kind", "echo"),))] == 2
    assert m[("dubfleet_retries_total", (("kind", "echo"),))] == 1
    assert m[("dubfleet_jobs_finished_total", (("kind", "echo"), ("status", "completed")))] == 1
    assert m[("dubfleet_job_duration_seconds_count", (("kind", "echo"), ("status", "completed")))] == 1
    assert m[("dubfleet_job_stage_seconds_count", (("kind", "echo"), ("stage", "downloading")))] == 1
    assert m[("dubfleet_job_stage_seconds_count", (("kind", "echo"), ("stage", "uploading")))] == 1
    posts = m[("dubfleet_http_request_duration_seconds_count",
               (("method", "POST"), ("route", "/jobs"), ("status", "202")))]
    assert posts == 4


def test_reaper_outcomes_are_counted(app_factory):
    from coordinator.state import get_state
    metrics = get_state(app_factory()).metrics
    metrics.reaped({"requeued": 2, "failed": 0, "unstarted": 1})
    text = metrics.exposition().get_data(as_text=True)
    assert 'dubfleet_lease_expiries_total{outcome="requeued"} 2.0' in text
    assert 'dubfleet_lease_expiries_total{outcome="unstarted"} 1.0' in text
    assert 'outcome="failed"' not in text


def test_request_timings_have_bounded_labels_whatever_the_method(client, make_key):
    """A client inventing methods gets its 405s counted under "other", never a series per token."""
    admin = make_key("admin")
    for n in range(20):
        assert client.open("/health", method=f"BREW{n}").status_code == 405
    for _ in range(3):
        client.get("/health")
    m = _samples(client.get("/metrics", headers={"X-API-Key": admin}).get_data(as_text=True))
    timed = {dict(labels)["method"]: value for (name, labels), value in m.items()
             if name == "dubfleet_http_request_duration_seconds_count" and dict(labels)["route"] in ("/health", "unmatched")}
    assert timed == {"other": 20, "GET": 3}
