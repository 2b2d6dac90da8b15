"""Object storage end to end: STORAGE_URL=s3://bucket/prefix on a real waitress coordinator, real
worker code (processes, or the worker's own client in this process), and moto's standalone S3
server on loopback (`tests/integration/s3server.py`: moto, plus presigned URLs that expire).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import psutil
import pytest
import requests
from botocore.config import Config

from dubfleet.api import DubfleetApi
from shared.protocol import SlotRequest, WorkerInfo
from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api, free_port, start_worker
from worker.client import CoordinatorClient
from worker.transfer import file_sha256

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "dubfleet-test"
MIB = 1024 * 1024
# The coordinator's credentials (moto accepts any); workers and clients get none.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
LONG_LEASES = {"START_LEASE_SECONDS": "900", "LEASE_SECONDS": "900"}  # no heartbeats in this process


@dataclass
class S3Server:
    """The running store: its URL and its request log."""

    url: str
    log: Path
    proc: subprocess.Popen

    def client(self):
        """A boto3 client with the test credentials (the test's own view of the bucket)."""
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test",
                            aws_secret_access_key="test",
                            config=Config(s3={"addressing_style": "path"},
                                          request_checksum_calculation="when_required"))

    def requests(self, path_part: str = "") -> list[dict]:
        """Logged requests whose path contains `path_part`."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [r for r in map(json.loads, lines) if path_part in r["path"]]

    def keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    """moto's S3 server on a free loopback port, with one bucket."""
    port, folder = free_port(), tmp_path_factory.mktemp("s3")
    log = folder / "requests.jsonl"
    with open(folder / "server.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.integration.s3server", "--port", str(port),
                                 "--log", str(log)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = S3Server(f"http://127.0.0.1:{port}", log, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(server.url, timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "the S3 server did not start"
            time.sleep(0.1)
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    proc.kill()
    proc.wait(10)


@pytest.fixture
def s3_env(s3, request) -> dict[str, str]:
    """Coordinator settings for a prefix of its own in the test bucket."""
    prefix = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40] + "-" + uuid.uuid4().hex[:6]
    return {"STORAGE_URL": f"s3://{BUCKET}/{prefix}", "S3_ENDPOINT_URL": s3.url, **CREDENTIALS}


def _prefix(env: dict[str, str]) -> str:
    """The key prefix of a coordinator's files."""
    return env["STORAGE_URL"].split("/", 3)[3] + "/"


def _claim(coord, job_id: str) -> dict:
    """Claim `job_id` by hand as an echo worker; the ClaimedJob."""
    info = {"worker_id": "by-hand", "session_id": uuid.uuid4().hex, "kinds": ["echo", "dub"],
            "target_languages": ["es"]}
    reply = Api(coord.url, WORKER_KEY).post(f"/jobs/{job_id}/claim", json=info)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _slot(worker: Api, job_id: str, token: str, data: bytes, name: str = "result") -> dict:
    """POST upload-slot for `data`."""
    body = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    reply = worker.post(f"/jobs/{job_id}/upload-slot", json=body, headers={"X-Lease-Token": token})
    assert reply.status_code == 200, reply.text
    return reply.json()


def _put(slot: dict, data: bytes) -> None:
    """PUT `data` to a slot's URLs (with no key: a bare request)."""
    size = slot["part_size"]
    for number, url in enumerate(slot["urls"]):
        part = data if slot["upload_id"] is None else data[number * size:(number + 1) * size]
        assert requests.put(url, data=part, timeout=60).status_code == 200


def _store_outputs(worker: Api, job_id: str, token: str,
                   files: tuple[tuple[str, bytes, int], ...]) -> None:
    """Put each (name, bytes, final) through an upload slot and publish it, in order."""
    for name, data, final in files:
        slot = _slot(worker, job_id, token, data, name)
        _put(slot, data)
        reply = worker.post(f"/jobs/{job_id}/upload-result",
                            params={"name": name, "final": final, "key": slot["key"], "size": len(data)},
                            headers={"X-Lease-Token": token,
                                     "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
        assert reply.status_code == 200, reply.text


def _publish(worker: Api, job_id: str, token: str, slot: dict, size: int, sha: str,
             final: bool = True) -> requests.Response:
    """upload-result naming the stored object."""
    params = {"name": "result", "final": int(final), "key": slot["key"], "size": size}
    if slot["upload_id"]:
        params["upload_id"] = slot["upload_id"]
    return worker.post(f"/jobs/{job_id}/upload-result", params=params,
                       headers={"X-Lease-Token": token, "X-Content-SHA256": sha})


def _fetch(api: Api, route: str, **headers: str) -> tuple[requests.Response, requests.Response]:
    """A download route's redirect, and the store's reply to it (sent without any key)."""
    first = api.get(route, allow_redirects=False, headers=headers)
    assert first.status_code == 302, first.text
    return first, requests.get(first.headers["Location"], timeout=60)


def test_submit_claim_transfer_complete_download(coordinator_factory, s3, s3_env, workers, tmp_path):
    """A worker process moves the bytes to and from the store; the client downloads through a
    redirect; the coordinator only streamed the client's input into the bucket."""
    coord = coordinator_factory(env=s3_env).start()
    admin = Api(coord.url, ADMIN_KEY)
    payload = os.urandom(20 * MIB)  # more than one 8 MiB part of the coordinator's input stream
    job_id = admin.submit_bytes(payload, filename="talk.bin")["job_id"]
    prefix = _prefix(s3_env)
    assert s3.keys(f"{prefix}inputs/{job_id}/") == [f"{prefix}inputs/{job_id}/input"]

    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo", "--burst"))
    view = admin.wait_status(job_id, {"completed", "failed"}, timeout=120)
    assert view["status"] == "completed", view

    first, stored = _fetch(admin, f"/jobs/{job_id}/download")
    assert first.headers["Location"].startswith(s3.url)
    assert first.headers["X-Content-SHA256"] == hashlib.sha256(payload).hexdigest()
    assert stored.status_code == 200 and stored.content == payload
    assert stored.headers["Content-Disposition"] == "attachment; filename=\"result\"; filename*=UTF-8''result"
    with DubfleetApi(coord.url, ADMIN_KEY) as api:  # the client CLI's code: redirect, sha256 check
        assert api.download(job_id, tmp_path / "out").read_bytes() == payload

    puts = [r for r in s3.requests(f"/{BUCKET}/{prefix}artifacts/{job_id}/a1/result~") if r["method"] == "PUT"]
    assert puts and all(r["status"] == 200 for r in puts), "the worker PUT the result into the store"
    gets = s3.requests(f"/{BUCKET}/{prefix}inputs/{job_id}/input")
    assert any(r["method"] == "GET" and r["status"] == 200 for r in gets), "and fetched the input there"


def test_worker_protocol_by_hand(coordinator_factory, s3, s3_env):
    """Claim URLs, the redirecting download routes, slots, publishing, repeats and refusals."""
    coord = coordinator_factory(env=s3_env).start()
    admin, worker = Api(coord.url, ADMIN_KEY), Api(coord.url, WORKER_KEY)
    payload = b"hello object storage " * 1000
    job_id = admin.submit_bytes(payload)["job_id"]
    claimed = _claim(coord, job_id)
    token, lease = claimed["lease_token"], {"X-Lease-Token": claimed["lease_token"]}
    assert claimed["direct_upload"] is True and claimed["subtitles_url"] is None
    assert requests.get(claimed["input_url"], timeout=30).content == payload
    first, stored = _fetch(worker, f"/jobs/{job_id}/download-input", **lease)
    assert stored.content == payload
    assert requests.get(first.headers["Location"], headers={"Range": "bytes=6-11"}).content == payload[6:12]

    raw = worker.post(f"/jobs/{job_id}/upload-result", data=payload, headers=lease)
    assert raw.status_code == 422 and raw.json()["field"] == "key"
    stale = worker.post(f"/jobs/{job_id}/upload-slot", json={"name": "result", "size": 1, "sha256": "0" * 64},
                        headers={"X-Lease-Token": token + "x"})
    assert stale.status_code == 409 and stale.json()["error"] == "lease_lost"

    slot = _slot(worker, job_id, token, payload)
    assert slot["upload_id"] is None and len(slot["urls"]) == 1
    assert re.fullmatch(rf"artifacts/{job_id}/a1/result~[0-9a-f]{{16}}", slot["key"])
    _put(slot, payload)
    sha = hashlib.sha256(payload).hexdigest()
    done = _publish(worker, job_id, token, slot, len(payload), sha)
    assert done.status_code == 200 and done.json()["status"] == "completed", done.text
    again = _publish(worker, job_id, token, slot, len(payload), sha)  # a retry after a lost reply
    assert again.status_code == 200 and again.json()["repeated"] is True
    assert s3.keys(_prefix(s3_env) + slot["key"]), "a repeat never deletes the published object"
    assert _fetch(admin, f"/jobs/{job_id}/download")[1].content == payload


def test_dub_subtitles_come_from_the_store(coordinator_factory, s3, s3_env):
    """A dub's own subtitles are stored next to its input and handed out presigned."""
    coord = coordinator_factory(env=s3_env).start()
    admin = Api(coord.url, ADMIN_KEY)
    srt = "1\n00:00:01,000 --> 00:00:02,500\nHola a todos.\n\n".encode()
    reply = admin.post("/jobs", data={"kind": "dub", "target_language": "es"},
                       files={"file": ("talk.mp4", b"not really a video"), "subtitles": ("talk.es.srt", srt)})
    assert reply.status_code == 202, reply.text
    claimed = _claim(coord, reply.json()["job_id"])
    assert requests.get(claimed["subtitles_url"], timeout=30).content == srt
    assert requests.get(claimed["input_url"], timeout=30).content == b"not really a video"


def test_tampered_upload_is_rejected(coordinator_factory, s3, s3_env):
    """Bytes other than declared (or another size) are refused with 400, never published, and
    deleted from the store; the honest upload then completes the job."""
    env = {**s3_env, "S3_PART_SIZE_MB": "5"}
    coord = coordinator_factory(env=env).start()
    admin, worker = Api(coord.url, ADMIN_KEY), Api(coord.url, WORKER_KEY)
    job_id = admin.submit_bytes(b"input")["job_id"]
    token = _claim(coord, job_id)["lease_token"]
    payload = os.urandom(12 * MIB)
    sha = hashlib.sha256(payload).hexdigest()

    slot = _slot(worker, job_id, token, payload)
    assert slot["upload_id"] and len(slot["urls"]) == 3
    tampered = payload[:6 * MIB] + bytes(1) + payload[6 * MIB + 1:]
    _put(slot, tampered)
    refused = _publish(worker, job_id, token, slot, len(payload), sha)
    assert refused.status_code == 400 and refused.json()["expected"] == sha, refused.text
    assert refused.json()["actual"] == hashlib.sha256(tampered).hexdigest()
    assert s3.keys(_prefix(env) + slot["key"]) == [], "the refused object is deleted"

    short = _slot(worker, job_id, token, b"x" * 100)
    _put(short, b"x" * 99)
    refused = _publish(worker, job_id, token, short, 100, hashlib.sha256(b"x" * 100).hexdigest())
    assert refused.status_code == 400 and "99 bytes" in refused.json()["message"]
    assert s3.keys(_prefix(env) + short["key"]) == []
    other = _publish(worker, job_id, token, {**slot, "key": slot["key"].replace("/a1/", "/a2/")},
                     len(payload), sha)
    assert other.status_code == 422 and other.json()["field"] == "key"
    view = admin.get(f"/jobs/{job_id}").json()
    assert view["status"] == "running" and view["artifacts"] == []

    honest = _slot(worker, job_id, token, payload)
    _put(honest, payload)
    assert _publish(worker, job_id, token, honest, len(payload), sha).status_code == 200
    assert _fetch(admin, f"/jobs/{job_id}/download")[1].content == payload


def _client(coord) -> CoordinatorClient:
    """The worker's own coordinator client, in this process."""
    return CoordinatorClient(coord.url, WORKER_KEY, uuid.uuid4().hex, timeout=60)


def _claim_with(client: CoordinatorClient):
    """Claim the next echo job with the worker's client."""
    job = client.claim(WorkerInfo(worker_id="in-test", session_id=client.session_id, kinds=("echo",)))
    assert job is not None
    return job


def test_expired_urls_are_renewed(coordinator_factory, s3, s3_env, tmp_path):
    """The store refuses URLs past their TTL (403); the worker asks for fresh ones and carries on:
    the download resumes, and no stored part of the upload is sent again."""
    env = {**s3_env, "PRESIGN_TTL_SECONDS": "1", "S3_PART_SIZE_MB": "5", **LONG_LEASES}
    coord = coordinator_factory(env=env).start()
    admin, prefix = Api(coord.url, ADMIN_KEY), _prefix(env)
    payload = os.urandom(12 * MIB)
    job_id = admin.submit_bytes(payload)["job_id"]
    client = _client(coord)
    job = _claim_with(client)
    time.sleep(2.2)  # the claim's input URL is dead now
    got = client.download_input(job, tmp_path / "input")
    assert got.read_bytes() == payload
    statuses = [r["status"] for r in s3.requests(f"{prefix}inputs/{job_id}/input") if r["method"] == "GET"]
    assert statuses[0] == 403 and statuses[-1] == 200, statuses

    result = tmp_path / "result"
    result.write_bytes(os.urandom(16 * MIB))  # 4 parts: 5 + 5 + 5 + 1 MiB
    request = SlotRequest(name="result", size=16 * MIB, sha256=file_sha256(result))
    slot = client._slot(job, request)
    renewed = []

    def renew(old):
        renewed.append(old.key)
        return client._slot(job, replace(request, key=old.key, upload_id=old.upload_id))
    time.sleep(2.2)  # every URL of the slot is dead; the worker does not know (a clock off by hours)
    used = client.store.upload(replace(slot, expires_in=3600.0), result, renew=renew)
    assert renewed and used.key == slot.key and used.upload_id == slot.upload_id
    puts = [r for r in s3.requests(slot.key) if r["method"] == "PUT"]
    assert puts[0]["status"] == 403, "the first PUT went to an expired URL"
    stored = sorted(r["part"] for r in puts if r["status"] == 200)
    assert stored == [1, 2, 3, 4], f"each part stored exactly once: {puts}"
    info = client._publish(job, used, request, result, True, None)
    assert info.sha256 == request.sha256
    assert admin.wait_status(job_id, {"completed"})["main_artifact"] == "result"


def test_worker_client_uploads_partial_and_empty_artifacts(coordinator_factory, s3, s3_env, tmp_path):
    """Early (final=0) artifacts, an empty one among them, then the main one, all direct."""
    coord = coordinator_factory(env=s3_env).start()
    admin = Api(coord.url, ADMIN_KEY)
    job_id = admin.submit_bytes(b"input")["job_id"]
    client = _client(coord)
    job = _claim_with(client)
    empty, main = tmp_path / "subtitles.srt", tmp_path / "result.bin"
    empty.write_bytes(b"")
    main.write_bytes(b"the result")
    assert client.upload_result(job, empty, "subtitles.es.srt", content_type="text/plain").size == 0
    assert admin.get(f"/jobs/{job_id}").json()["artifacts"][0]["name"] == "subtitles.es.srt"
    client.upload_result(job, main, "result", final=True, detected_language="en")
    view = admin.wait_status(job_id, {"completed"})
    assert view["detected_language"] == "en" and len(view["artifacts"]) == 2
    assert _fetch(admin, f"/jobs/{job_id}/artifacts/subtitles.es.srt")[1].content == b""
    assert _fetch(admin, f"/jobs/{job_id}/download")[1].content == b"the result"


def test_worker_process_renews_urls_mid_upload(coordinator_factory, s3, s3_env, workers, tmp_path):
    """A real worker whose transfers outlast the URLs (1 s TTL, throttled to 4 MiB/s) completes."""
    env = {**s3_env, "PRESIGN_TTL_SECONDS": "1", "S3_PART_SIZE_MB": "5"}
    coord = coordinator_factory(env=env).start()
    admin = Api(coord.url, ADMIN_KEY)
    payload = os.urandom(16 * MIB)
    job_id = admin.submit_bytes(payload)["job_id"]
    workers.append(start_worker(coord.url, tmp_path / "w", "w1", "--kinds", "echo", "--burst",
                                "--max-transfer-rate", "4"))
    view = admin.wait_status(job_id, {"completed", "failed"}, timeout=120)
    assert view["status"] == "completed", view
    assert _fetch(admin, f"/jobs/{job_id}/download")[1].content == payload
    renewals = coord.log_path.read_text().count("fresh upload URLs")
    assert renewals >= 2, f"{renewals} renewals"
    puts = [r for r in s3.requests(f"{_prefix(env)}artifacts/{job_id}/") if r["method"] == "PUT"]
    assert sorted(r["part"] for r in puts if r["status"] == 200) == [1, 2, 3, 4], puts


def test_cancel_prune_and_sweep_delete_objects(coordinator_factory, s3, s3_env):
    """A result refused because of a cancel is deleted; the orphan sweep removes objects and
    unfinished uploads no row needs (never a live job's input or result); prune removes a job's."""
    env = {**s3_env, "ORPHAN_GRACE_SECONDS": "0", "ORPHAN_SWEEP_INTERVAL": "1", "REAPER_INTERVAL": "0.5"}
    coord = coordinator_factory(env=env).start()
    admin, worker = Api(coord.url, ADMIN_KEY), Api(coord.url, WORKER_KEY)
    prefix, store = _prefix(env), s3.client()
    kept = admin.submit_bytes(b"kept input")["job_id"]
    token = _claim(coord, kept)["lease_token"]
    slot = _slot(worker, kept, token, b"kept result")
    _put(slot, b"kept result")
    published = _publish(worker, kept, token, slot, 11, hashlib.sha256(b"kept result").hexdigest())
    assert published.status_code == 200

    cancelled = admin.submit_bytes(b"doomed")["job_id"]
    token = _claim(coord, cancelled)["lease_token"]
    assert admin.request("DELETE", f"/jobs/{cancelled}").json()["cancel_requested"] is True
    doomed = _slot(worker, cancelled, token, b"late result")
    _put(doomed, b"late result")
    late = _publish(worker, cancelled, token, doomed, 11, hashlib.sha256(b"late result").hexdigest())
    assert late.status_code == 409 and late.json()["error"] == "cancelled"
    assert s3.keys(prefix + doomed["key"]) == []

    ghost = uuid.uuid4().hex
    orphans = [f"{prefix}inputs/{ghost}/input", f"{prefix}artifacts/{ghost}/a1/result~0123456789abcdef",
               f"{prefix}artifacts/{kept}/a1/stray~0123456789abcdef"]
    for key in orphans:
        store.put_object(Bucket=BUCKET, Key=key, Body=b"orphan")
    store.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}artifacts/{ghost}/a1/big~0123456789abcdef")
    deadline = time.monotonic() + 30
    while any(s3.keys(key) for key in orphans) or store.list_multipart_uploads(
            Bucket=BUCKET, Prefix=prefix).get("Uploads"):
        assert time.monotonic() < deadline, "the sweep left orphans behind"
        time.sleep(0.5)
    assert s3.keys(f"{prefix}inputs/{kept}/") and s3.keys(prefix + slot["key"]), "live files are kept"

    subprocess.run([str(Path(sys.executable).parent / "coordinator"), "prune", "--days", "0"],
                   env=coord.env, check=True, capture_output=True)
    assert s3.keys(prefix) == [], "prune deleted the jobs' inputs and results"


def _sparse_gib(path: Path) -> None:
    """A 1 GiB file, mostly a hole: a random MiB every 100 MiB (so misplaced parts would show)."""
    with open(path, "wb") as fh:
        fh.truncate(1024 * MIB)
        for offset in range(0, 1024 * MIB, 100 * MIB):
            fh.seek(offset)
            fh.write(os.urandom(MIB))


class _RssSampler(threading.Thread):
    """Samples a process's resident memory every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.samples = psutil.Process(pid), 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.samples += 1


def test_one_gib_result_never_passes_through_the_coordinator(coordinator_factory, s3, s3_env, tmp_path):
    """The worker's client uploads a 1 GiB result in parts straight to the store; the coordinator
    verifies it (reading it back in 1 MiB chunks) and the client downloads it through a redirect,
    while the coordinator's resident memory stays flat."""
    coord = coordinator_factory(env={**s3_env, **LONG_LEASES}).start()
    admin = Api(coord.url, ADMIN_KEY)
    job_id = admin.submit_bytes(b"small input")["job_id"]
    client = _client(coord)
    job = _claim_with(client)
    result, out = tmp_path / "result.bin", tmp_path / "out"
    try:
        _sparse_gib(result)
        sha = file_sha256(result)
        sampler = _RssSampler(coord.proc.pid)
        before = sampler.proc.memory_info().rss
        sampler.start()
        started = time.monotonic()
        info = client.upload_result(job, result, "result", final=True, sha256=sha)
        uploaded = time.monotonic()
        with DubfleetApi(coord.url, ADMIN_KEY) as api:
            got = api.download(job_id, out)
        downloaded = time.monotonic()
        sampler.stop.set()
        sampler.join()
        assert info.size == 1024 * MIB and info.sha256 == sha and file_sha256(got) == sha
        figures = {"rss_before_mb": before / MIB, "rss_peak_mb": sampler.peak / MIB, "samples": sampler.samples,
                   "upload_and_verify_s": uploaded - started, "download_s": downloaded - uploaded,
                   "upload_and_verify_mb_s": 1024 / (uploaded - started),
                   "download_mb_s": 1024 / (downloaded - uploaded)}
        print("1 GiB result through object storage:", json.dumps(figures))
        assert sampler.peak < 200 * MIB and sampler.peak - before < 64 * MIB, figures
        parts = [r for r in s3.requests(f"artifacts/{job_id}/a1/result~") if r["method"] == "PUT"]
        assert len([r for r in parts if r["status"] == 200]) == 16, "16 parts of 64 MiB"
    finally:
        result.unlink(missing_ok=True)
        for path in out.glob("*"):
            path.unlink()
        leftovers = [{"Key": key} for key in s3.keys(_prefix(s3_env))]
        s3.client().delete_objects(Bucket=BUCKET, Delete={"Objects": leftovers})
