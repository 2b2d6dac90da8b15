"""Object storage settings, the slot/publish logic and the sweep, on moto's in-process S3 fake
(the real S3-protocol server runs in tests/integration/test_s3_storage.py)."""
from __future__ import annotations

import hashlib
import time
import uuid

import boto3
import pytest
import requests
from moto import mock_aws

from coordinator import config
from coordinator.direct import check_key
from coordinator.errors import ValidationFailed
from coordinator.s3sweep import S3Sweeper
from coordinator.s3storage import MIB, S3Storage
from coordinator.state import get_state
from coordinator.storage import Storage, parse_storage_url
from shared.protocol import UploadSlot
from worker.objectstore import StorageRefused, UrlExpired, _UploadState, check_url, raise_for_store
from worker.transfer import TransientTransferError

BUCKET = "unit-bucket"
JOB = "c" * 32


def keys_of(app) -> dict[str, str]:
    """A client and a worker key for `app`."""
    from coordinator.auth import create_key
    from coordinator.extensions import db
    from shared.protocol import KeyKind
    with app.app_context():
        made = {kind: create_key(db.session, KeyKind(kind), kind)[1] for kind in ("client", "worker")}
        db.session.remove()
    return made


def submit(client, keys, data: bytes) -> str:
    """A raw-body echo job."""
    reply = client.post("/jobs?kind=echo", data=data, headers={"X-API-Key": keys["client"],
                                                               "Content-Type": "application/octet-stream"})
    assert reply.status_code == 202, reply.get_json()
    return reply.get_json()["job_id"]


def claim(client, keys, job_id: str) -> dict:
    """Claim `job_id` as an echo worker."""
    reply = client.post(f"/jobs/{job_id}/claim", headers={"X-API-Key": keys["worker"]},
                        json={"worker_id": "w", "session_id": "s", "kinds": ["echo"]})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()


def worker_headers(keys, token: str, **extra: str) -> dict[str, str]:
    """The worker key and the lease."""
    return {"X-API-Key": keys["worker"], "X-Lease-Token": token, **extra}


@pytest.mark.parametrize("url, expected", [
    ("s3://bucket", ("bucket", "")), ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b")),
])
def test_storage_urls(url, expected):
    assert parse_storage_url(url) == expected


@pytest.mark.parametrize("url", ["bucket", "https://bucket/x", "s3://B", "s3://bucket/a/../b",
                                 "s3://bucket/a b"])
def test_bad_storage_urls_are_refused_at_start(url, tmp_path):
    with pytest.raises(ValueError, match="STORAGE_URL"):
        config.build({"DATA_DIR": str(tmp_path), "STORAGE_URL": url}, environ={})


def test_object_storage_settings(tmp_path):
    env = {"DUBFLEET_DATA_DIR": str(tmp_path), "AWS_REGION": "eu-west-1", "PRESIGN_TTL_SECONDS": "60",
           "S3_PART_SIZE_MB": "8"}
    built = config.build(environ=env)
    assert built["S3_REGION"] == "eu-west-1" and built["STORAGE_URL"] is None
    assert config.build(environ={**env, "S3_REGION": "auto"})["S3_REGION"] == "auto"
    assert built["PRESIGN_TTL_SECONDS"] == 60.0 and built["S3_PART_SIZE_MB"] == 8
    for bad in ({"PRESIGN_TTL_SECONDS": 0}, {"S3_PART_SIZE_MB": 4}, {"PRESIGN_TTL_SECONDS": 8 * 86400}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            config.build({"DATA_DIR": str(tmp_path), **bad}, environ={})


def test_local_storage_is_the_default_and_keeps_todays_endpoints(app_factory):
    app = app_factory()
    client, keys = app.test_client(), keys_of(app)
    assert isinstance(get_state(app).storage, Storage)
    job_id = submit(client, keys, b"bytes")
    claimed = claim(client, keys, job_id)
    assert claimed["direct_upload"] is False and claimed["input_url"] is None
    token = claimed["lease_token"]
    slot = client.post(f"/jobs/{job_id}/upload-slot", headers=worker_headers(keys, token),
                       json={"name": "result", "size": 5, "sha256": "0" * 64})
    assert slot.status_code == 404
    named = client.post(f"/jobs/{job_id}/upload-result?key=k&size=5", headers=worker_headers(
        keys, token, **{"X-Content-SHA256": "0" * 64}))
    assert named.status_code == 404
    got = client.get(f"/jobs/{job_id}/download-input", headers=worker_headers(keys, token))
    assert got.status_code == 200 and got.data == b"bytes"


def test_slot_keys_belong_to_one_artifact_of_one_run():
    check_key(f"artifacts/{JOB}/a2/dub.mp4~0123456789abcdef", JOB, 2, "dub.mp4")
    for key in (f"artifacts/{JOB}/a1/dub.mp4~0123456789abcdef", f"artifacts/{JOB}/a2/dub.mp3~0123456789abcdef",
                f"artifacts/{JOB}/a2/dub.mp4~0123", f"inputs/{JOB}/input", f"artifacts/{JOB}/a2/../x"):
        with pytest.raises(ValidationFailed):
            check_key(key, JOB, 2, "dub.mp4")


def test_part_sizes_keep_slots_under_a_thousand_parts():
    store = S3Storage(client=None, bucket=BUCKET, part_size=64 * MIB)
    assert store.part_size_for(10) == 64 * MIB and store.part_size_for(64 * 1000 * MIB) == 64 * MIB
    assert store.part_size_for(100 * 1000 * MIB) == 100 * MIB


@pytest.fixture
def s3_app(app_factory, monkeypatch):
    """A coordinator on moto's in-process S3: bucket `unit-bucket`, prefix `pre`, 5 MiB parts."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield app_factory(STORAGE_URL=f"s3://{BUCKET}/pre", S3_PART_SIZE_MB=5, MAX_UPLOAD_MB=20)


def test_both_stores_write_the_coordinators_own_artifacts_alike(s3_app, tmp_path):
    """`write_artifact` (an edited summary) is one public call on the disk and the bucket store."""
    local = Storage(tmp_path / "data")
    local.prepare()
    for store in (local, get_state(s3_app).storage):
        stored = store.write_artifact(JOB, 2, "summary.edited.md", b"# Edited\n")
        assert stored.relpath.startswith(f"artifacts/{JOB}/a2/summary.edited.md~")
        assert (stored.size, stored.sha256) == (9, hashlib.sha256(b"# Edited\n").hexdigest())
        assert store.read_bytes(stored.relpath, 100) == b"# Edited\n"
        again = store.write_artifact(JOB, 2, "summary.edited.md", b"")  # a new file each time
        assert again.relpath != stored.relpath and again.size == 0
        assert store.read_bytes(stored.relpath, 100) == b"# Edited\n"


def test_inputs_stream_into_the_bucket_and_workers_get_urls(s3_app):
    client, keys, store = s3_app.test_client(), keys_of(s3_app), get_state(s3_app).storage
    data = bytes(range(256)) * (40 * 1024 + 7)  # 10 MiB and a bit: two parts of the input stream
    job_id = submit(client, keys, data)
    body = store.client.get_object(Bucket=BUCKET, Key=f"pre/inputs/{job_id}/input")["Body"].read()
    assert body == data
    claimed = claim(client, keys, job_id)
    assert claimed["direct_upload"] is True and f"/pre/inputs/{job_id}/input" in claimed["input_url"]
    lease = worker_headers(keys, claimed["lease_token"])
    redirect = client.get(f"/jobs/{job_id}/download-input", headers=lease)
    assert redirect.status_code == 302
    assert redirect.headers["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()
    assert client.get("/health").get_json()["storage"] == "ok"


def test_slots_renewals_and_publication(s3_app):
    client, keys, store = s3_app.test_client(), keys_of(s3_app), get_state(s3_app).storage
    job_id = submit(client, keys, b"in")
    token = claim(client, keys, job_id)["lease_token"]
    data = b"r" * (12 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    asked = {"name": "result", "size": len(data), "sha256": sha}
    slot = client.post(f"/jobs/{job_id}/upload-slot", json=asked,
                       headers=worker_headers(keys, token)).get_json()
    assert slot["upload_id"] and len(slot["urls"]) == 3 and slot["part_size"] == 5 * MIB
    fresh = client.post(f"/jobs/{job_id}/upload-slot", headers=worker_headers(keys, token),
                        json={**asked, "key": slot["key"], "upload_id": slot["upload_id"]}).get_json()
    assert (fresh["key"], fresh["upload_id"]) == (slot["key"], slot["upload_id"])
    for body in ({**asked, "key": slot["key"]}, {**asked, "size": 21 * MIB}, {**asked, "size": "12"},
                 {**asked, "key": slot["key"].replace("result~", "other~"), "upload_id": "x"}):
        refused = client.post(f"/jobs/{job_id}/upload-slot", json=body, headers=worker_headers(keys, token))
        assert refused.status_code in (413, 422), (body, refused.get_json())
    for number in (1, 2, 3):
        store.client.upload_part(Bucket=BUCKET, Key="pre/" + slot["key"], UploadId=slot["upload_id"],
                                 PartNumber=number, Body=data[(number - 1) * 5 * MIB:number * 5 * MIB])
    query = f"name=result&key={slot['key']}&upload_id={slot['upload_id']}&size={len(data)}"
    done = client.post(f"/jobs/{job_id}/upload-result?{query}",
                       headers=worker_headers(keys, token, **{"X-Content-SHA256": sha}))
    assert done.status_code == 200 and done.get_json()["status"] == "completed", done.get_json()
    download = client.get(f"/jobs/{job_id}/download", headers={"X-API-Key": keys["client"]})
    assert download.status_code == 302 and "response-content-disposition" in download.headers["Location"]


def test_the_sweep_removes_what_no_row_needs(s3_app):
    client, keys, store = s3_app.test_client(), keys_of(s3_app), get_state(s3_app).storage
    running = submit(client, keys, b"running input")
    claim(client, keys, running)  # run 1 of a running job: its worker may still publish
    finished = submit(client, keys, b"queued input")
    ghost = uuid.uuid4().hex
    objects = {f"inputs/{ghost}/input": False, f"artifacts/{ghost}/a1/x~0123456789abcdef": False,
               f"artifacts/{running}/a1/result~0123456789abcdef": True,
               f"artifacts/{running}/a0/old~0123456789abcdef": False,
               f"artifacts/{finished}/a1/stray~0123456789abcdef": False}
    for relpath in objects:
        store.client.put_object(Bucket=BUCKET, Key="pre/" + relpath, Body=b"x")
    store.client.create_multipart_upload(Bucket=BUCKET, Key=f"pre/artifacts/{ghost}/a1/big~0123456789abcdef")
    store.client.create_multipart_upload(Bucket=BUCKET, Key=f"pre/artifacts/{running}/a1/big~0123456789abcdef")
    with s3_app.app_context():
        from coordinator.extensions import db
        young = S3Sweeper(store, 3600).sweep(db.session, now=time.time())
        report = S3Sweeper(store, 3600).sweep(db.session, now=time.time() + 7200)
        db.session.remove()
    assert young.job_folders == young.files == 0
    left = {relpath for relpath, _, _ in [*store.objects("inputs"), *store.objects("artifacts")]}
    assert left == {f"inputs/{running}/input", f"inputs/{finished}/input",
                    *(relpath for relpath, keep in objects.items() if keep)}
    assert report.job_folders == 2 and report.files == 2  # the ghost's inputs/ and artifacts/ folders
    assert young.temp_files + report.temp_files == 1  # moto dates every multipart upload 2010-11-10
    assert [relpath for relpath, _, _ in store.uploads("artifacts")] == [
        f"artifacts/{running}/a1/big~0123456789abcdef"]
    with s3_app.app_context():
        store.remove_job(running)
    assert not list(store.objects(f"artifacts/{running}")) and not list(store.uploads("artifacts"))


class _Reply:
    """The parts of a requests.Response the status mapping reads."""

    def __init__(self, status: int, text: str = ""):
        self.status_code, self.text, self.content, self.reason = status, text, text.encode(), "Reason"


def test_store_replies_map_to_renewal_retry_or_failure():
    raise_for_store(_Reply(200))
    with pytest.raises(UrlExpired, match="Request has expired"):
        raise_for_store(_Reply(403, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"))
    for status in (500, 503, 429):
        with pytest.raises(TransientTransferError):
            raise_for_store(_Reply(status))
    with pytest.raises(StorageRefused, match="NoSuchUpload"):
        raise_for_store(_Reply(404, "<Error><Code>NoSuchUpload</Code></Error>"))
    assert check_url("http://10.0.0.5:9000/b/k?sig") and check_url("https://s3.example/b/k")
    with pytest.raises(StorageRefused):
        check_url("file:///etc/passwd")


def test_upload_parts_and_proactive_renewal():
    slot = UploadSlot(key="k", urls=("u1", "u2", "u3"), part_size=10, expires_in=900.0, upload_id="id")
    renewed: list[str] = []

    def renew(old: UploadSlot) -> UploadSlot:
        renewed.append(old.key)
        return UploadSlot(key="k", urls=("v1", "v2", "v3"), part_size=10, expires_in=900.0, upload_id="id")
    state = _UploadState(slot, 25, renew)
    assert [state.part_range(), (setattr(state, "part", 2), state.part_range())[1]] == [(0, 10), (20, 5)]
    state.renew_if_due()
    assert renewed == []
    state._deadline = time.monotonic() - 1
    state.renew_if_due()
    assert renewed == ["k"] and state.slot.urls[0] == "v1"
    for _ in range(3):
        state.refused(UrlExpired("403"))
    with pytest.raises(StorageRefused):
        state.refused(UrlExpired("403"))
    single = _UploadState(UploadSlot(key="k", urls=("u",), part_size=64, expires_in=1.0), 25, renew)
    assert single.part_range() == (0, 25)
    assert requests  # the worker's transfers use plain requests (no AWS SDK on workers)
