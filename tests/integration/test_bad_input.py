"""Bad requests against a real server: clear 4xx JSON errors, nothing stored, never a 500."""
from __future__ import annotations

import pytest

from tests.integration.procs import Api

pytestmark = pytest.mark.integration


def _is_error(resp, status: int) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str)


def test_keys(coordinator, admin: Api, worker_api: Api):
    anon = Api(coordinator.url, "")
    anon.session.headers.pop("X-API-Key")
    _is_error(anon.get("/jobs"), 401)
    _is_error(Api(coordinator.url, "dfc_wrong").get("/jobs"), 401)
    _is_error(worker_api.get("/jobs"), 403)
    client = Api(coordinator.url, coordinator.create_key("client", "alice"))
    _is_error(client.get("/jobs/next"), 403)


def test_other_clients_job_is_404(coordinator):
    alice = Api(coordinator.url, coordinator.create_key("client", "alice"))
    bob = Api(coordinator.url, coordinator.create_key("client", "bob"))
    job_id = alice.submit_bytes(b"secret")["job_id"]
    for method, path in [("GET", f"/jobs/{job_id}"), ("DELETE", f"/jobs/{job_id}"),
                         ("POST", f"/jobs/{job_id}/retry"), ("GET", f"/jobs/{job_id}/download")]:
        _is_error(bob.request(method, path), 404)
    assert [j["job_id"] for j in bob.get("/jobs").json()["jobs"]] == []
    assert alice.get(f"/jobs/{job_id}").status_code == 200


def test_oversize_upload_is_413(coordinator_factory):
    coord = coordinator_factory(env={"MAX_UPLOAD_MB": "1"}).start()
    admin = Api(coord.url, "dfa_test_admin_key_0123456789abcdef")
    resp = admin.post("/jobs", params={"kind": "echo"}, data=b"x" * (2 * 1024 * 1024),
                      headers={"Content-Type": "application/octet-stream"})
    _is_error(resp, 413)
    assert admin.get("/jobs").json()["total"] == 0


@pytest.mark.parametrize("params", [
    {"kind": "karaoke"},
    {"kind": "dub", "target_language": "xx"},
    {"kind": "dub", "source_language": "klingon"},
    {"kind": "echo", "priority": "high"},
    {"kind": "echo", "priority": "100000"},
    {"kind": "echo", "options": "[1,2"},
    {"kind": "echo", "options": "[1,2]"},
    {"kind": "echo", "callback_url": "file:///etc/passwd"},
])
def test_malformed_fields_are_422_or_400(coordinator, admin: Api, params):
    resp = admin.post("/jobs", params=params, data=b"abc",
                      headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code in (400, 422), resp.text
    _is_error(resp, resp.status_code)
    assert admin.get("/jobs").json()["total"] == 0


def test_missing_and_empty_file(coordinator, admin: Api):
    _is_error(admin.post("/jobs", data={"kind": "echo"}), 400)
    _is_error(admin.post("/jobs", files={"file": ("a.mp4", b"")}, data={"kind": "echo"}), 400)
    _is_error(admin.post("/jobs", data=b"{not json", headers={"Content-Type": "application/json"}), 400)


def test_traversal_names_never_become_paths(coordinator, admin: Api, worker_api: Api):
    job = admin.post("/jobs", files={"file": ("../../../../etc/passwd", b"data")},
                     data={"kind": "echo"})
    assert job.status_code == 202, job.text
    job_id = job.json()["job_id"]
    assert not (coordinator.data_dir.parent / "etc").exists()
    claim = worker_api.post("/jobs/claim", json={"worker": {"worker_id": "w", "session_id": "s1",
                                                            "kinds": ["echo"]}})
    token = claim.json()["lease_token"]
    lease = {"X-Lease-Token": token}
    for name in ["../evil", "..", "a/b", "/abs", ".hidden", "x" * 300]:
        resp = worker_api.post(f"/jobs/{job_id}/upload-result", params={"name": name},
                               data=b"1", headers=lease)
        assert resp.status_code in (400, 422), (name, resp.text)
    _is_error(admin.get(f"/jobs/{job_id}/artifacts/..%2F..%2Fcoordinator.log"), 404)
    assert admin.get(f"/jobs/{job_id}").json()["status"] == "running"


def test_unknown_routes_and_methods_are_json(coordinator, admin: Api):
    _is_error(admin.get("/nope"), 404)
    _is_error(admin.request("PUT", "/jobs"), 405)
    _is_error(admin.get("/jobs/does-not-exist"), 404)
