"""POST /jobs/<id>/redub with object storage (STORAGE_URL=s3://…, moto's S3 server)."""
from __future__ import annotations


import pytest

pytest.importorskip("psutil")  # the object storage tests' helpers need it

from tests.integration.procs import WORKER_KEY, Api  # noqa: E402
from tests.integration.test_redub import BUNDLE, EDIT, REPORT, VIDEO  # noqa: E402
from tests.integration.test_s3_storage import (  # noqa: E402,F401 (s3, s3_env: fixtures)
    _claim, _fetch, _store_outputs, s3, s3_env)

pytestmark = pytest.mark.integration


def test_redub_with_object_storage(coordinator_factory, s3, s3_env):
    """With STORAGE_URL=s3://…: the parent's input and bundle are copied inside the bucket and
    the re-dub's worker is redirected to them."""
    coord = coordinator_factory(env=s3_env).start()
    alice, worker = Api(coord.url, coord.create_key("client", "alice")), Api(coord.url, WORKER_KEY)
    parent = alice.submit_bytes(VIDEO, kind="dub", target_language="es")["job_id"]
    token = _claim(coord, parent)["lease_token"]
    _store_outputs(worker, parent, token, (("dub_report.json", REPORT, 0),
                                           ("dub_segments.tar", BUNDLE, 0),
                                           ("dubbed_video.mp4", b"dubbed", 1)))
    resp = alice.post(f"/jobs/{parent}/redub", json=EDIT)
    assert resp.status_code == 201, resp.text
    child = resp.json()["job_id"]
    claimed = _claim(coord, child)
    assert claimed["input_url"]
    lease = {"X-Lease-Token": claimed["lease_token"]}
    assert _fetch(worker, f"/jobs/{child}/download-parent", **lease)[1].content == BUNDLE
    assert _fetch(worker, f"/jobs/{child}/download-input", **lease)[1].content == VIDEO
