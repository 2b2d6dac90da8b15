"""HTTP client of the coordinator's worker endpoints; maps HTTP failures to `worker.errors`."""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import requests

from shared.protocol import (API_KEY_HEADER, LEASE_HEADER, MAX_CLAIM_WAIT_SECONDS,
                             SHA256_HEADER, WORKER_SESSION_HEADER, ArtifactInfo, ClaimedJob,
                             FailReport, Heartbeat, HeartbeatReply, HeldResult, LeaseRef, Routes, SlotRequest,
                             UploadSlot, WorkerInfo)
from worker.errors import (Backoff, CoordinatorError, CoordinatorUnavailable, JobFailed,
                           LeaseLost, PermanentJobError, WorkerError)
from worker.objectstore import ObjectStore
from worker.safefetch import DEFAULT_MAX_SOURCE_MB, MIB, fetch_source, source_limit
from worker.transfer import (ChecksumMismatch, ProgressReader, TransientTransferError,
                             backoff_delay, fetch_resumable, file_sha256, parse_retry_after)
from worker.wire import AnyReply, CoordinatorSession, Reply, WireError, lean_allowed

logger = logging.getLogger(__name__)

Check = Callable[[], None]
OnProgress = Callable[[int, "int | None"], None]
MAX_REASON_CHARS = 4000
MAX_IDLE_SESSIONS = 2  # sessions kept open for the next thread (a job's heartbeat thread)
# The coordinator reads a result back from object storage to check its sha256 before it answers:
# its reply may take this long per byte, on top of the usual timeout.
VERIFY_SECONDS_PER_BYTE = 1 / (10 * MIB)


def _error_body(resp: AnyReply) -> dict:
    """The JSON error body of a reply ({} when it has none)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_fields(resp: AnyReply) -> tuple[str, str]:
    """The (error, message) of a JSON error body, or fallbacks from the status line."""
    body = _error_body(resp)
    error = str(body.get("error") or resp.reason or resp.status_code)
    message = str(body.get("message") or body.get("error") or resp.text[:200] or resp.reason)
    return error, message


def _write_inline(job: ClaimedJob, dest: Path, on_progress: OnProgress | None) -> Path:
    """Write an input that came inside the claim reply (sha256-checked like a download)."""
    try:
        data = base64.b64decode(job.input_inline or "", validate=True)
    except ValueError as exc:
        raise JobFailed(f"input of job {job.job_id}: bad inline data: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != job.input_sha256:
        raise JobFailed(f"input of job {job.job_id}: inline data does not match its sha256")
    try:
        dest.write_bytes(data)
    except FileNotFoundError:  # the loop makes the job's folder; another caller may not have
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    if on_progress is not None:
        on_progress(len(data), len(data))
    return dest


def raise_for_reply(resp: AnyReply, *, fenced: bool = True) -> None:
    """Raise the `worker.errors` exception that matches a non-2xx reply."""
    status = resp.status_code
    if status < 400:
        return
    error, message = _error_fields(resp)
    raise error_for(status, _error_body(resp), f"{resp.request.method} {resp.url}: {status} {message}",
                    error, fenced=fenced, retry_after=resp.headers.get("Retry-After"))


def error_for(status: int, body: dict, text: str, error: str, *, fenced: bool = True,
              retry_after: str | None = None) -> WorkerError:
    """The `worker.errors` exception of an error reply (or of an error entry in a batch reply)."""
    if status == 409 and fenced:
        job_status = body.get("job_status")
        return LeaseLost(text, job_status if isinstance(job_status, str) else None,
                         body.get("this_lease") is True)
    if status in (429, 503):
        return Backoff(text, status, error, parse_retry_after(retry_after))
    if status >= 500:
        return CoordinatorUnavailable(text, status, error)
    return CoordinatorError(text, status, error)


class CoordinatorClient:
    """Talks to the coordinator for one worker process (one `session_id`)."""

    def __init__(self, api_url: str, api_key: str, session_id: str, *,
                 timeout: float = 30.0, attempts: int = 5, max_rate: float | None = None,
                 allow_private_urls: bool = False,
                 max_source_bytes: int | None = DEFAULT_MAX_SOURCE_MB * MIB,
                 sleep: Callable[[float], None] = time.sleep):
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.session_id = session_id
        self.timeout = timeout
        self.attempts = attempts
        self.max_rate = max_rate
        self.allow_private_urls = allow_private_urls
        self.max_source_bytes = max_source_bytes
        self.last_retry_after: float | None = None
        self.handover: ClaimedJob | None = None  # the next job a completing upload brought back
        self._sleep = sleep
        self._local = threading.local()
        self._idle: list[CoordinatorSession] = []
        self._idle_lock = threading.Lock()
        self._lean = lean_allowed(self.api_url)
        self.store = ObjectStore(attempts=attempts, timeout=timeout, max_rate=max_rate, sleep=sleep)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def session(self) -> CoordinatorSession:
        """This thread's session (requests sessions are not shared across threads), taken from
        the idle ones when it can: a new job's heartbeat thread reuses a kept-alive connection."""
        session = getattr(self._local, "session", None)
        if session is None:
            with self._idle_lock:
                session = self._idle.pop() if self._idle else None
            session = session or self._new_session()
            self._local.session = session
        return session

    def _new_session(self) -> CoordinatorSession:
        session = CoordinatorSession(self.api_url, self._lean)
        session.headers.update({API_KEY_HEADER: self.api_key, WORKER_SESSION_HEADER: self.session_id,
                                "User-Agent": "dubfleet-worker/1"})
        return session

    def close(self) -> None:
        """Give the calling thread's session back for another thread (a few are kept open)."""
        session = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._idle_lock:
            if len(self._idle) < MAX_IDLE_SESSIONS:
                self._idle.append(session)
                return
        session.close()

    def close_all(self) -> None:
        """Close this thread's session and every idle one (the worker is exiting)."""
        self.close()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    def url(self, route: str, **values: str) -> str:
        """Absolute URL of a route template."""
        return self.api_url + Routes.fill(route, **values)

    @staticmethod
    def _lease_headers(job: ClaimedJob) -> dict[str, str]:
        """Headers that fence a call to the lease of `job`."""
        return {LEASE_HEADER: job.lease_token}

    def _request(self, method: str, url: str, *, fenced: bool = True,
                 timeout: Any = None, **kwargs: Any) -> AnyReply:
        """Send one request; connection failures and error replies become worker errors."""
        try:
            resp = self.session.call(method, url, timeout or self.timeout, **kwargs)
        except (requests.RequestException, WireError) as exc:
            raise CoordinatorUnavailable(f"{method} {url}: {exc}") from exc
        if isinstance(resp, Reply) and 300 <= resp.status_code < 400:  # the wire follows none
            raise CoordinatorError(f"{method} {url}: {resp.status_code} redirect to "
                                   f"{resp.headers.get('Location')}; set --api-url to the address "
                                   "the coordinator is served at", resp.status_code, "redirect")
        raise_for_reply(resp, fenced=fenced)
        return resp

    def _job_call(self, route: str, job: ClaimedJob, body: dict | None = None,
                  timeout: Any = None) -> dict:
        """POST a fenced JSON call about `job` and return the JSON reply (or {})."""
        resp = self._request("POST", self.url(route, job_id=job.job_id), json=body or {},
                             headers=self._lease_headers(job), timeout=timeout)
        return resp.json() if resp.content else {}

    # -- claiming and the lease -------------------------------------------------------------

    def batch(self, results: list[HeldResult], release: list[ClaimedJob], claim: int,
              worker: WorkerInfo | None = None) -> dict:
        """POST BATCH: complete jobs with their held results, give jobs back and claim up to
        `claim` more; retried while the coordinator is unreachable (repeating it is safe: what
        committed answers as a repeat). The JSON reply (results, released, jobs)."""
        body: dict[str, Any] = {"results": [held.to_dict() for held in results], "claim": claim,
                                "release": [LeaseRef(job.job_id, job.lease_token).to_dict() for job in release]}
        if claim and worker is not None:
            body["worker"] = worker.to_dict()
        for attempt in range(self.attempts):
            try:
                resp = self._request("POST", self.url(Routes.BATCH), fenced=False, json=body,
                                     timeout=(10.0, max(self.timeout, 120.0)))
                data = resp.json() if resp.content else {}
                return data if isinstance(data, dict) else {}
            except CoordinatorUnavailable as exc:
                self._retry_pause(exc, attempt, "batch call")
        raise CoordinatorUnavailable(f"batch call failed after {self.attempts} tries")

    def claim(self, worker: WorkerInfo, wait: float = 0.0) -> ClaimedJob | None:
        """Claim the next job this worker can run, long-polling up to `wait` s; None if none."""
        wait = max(0.0, min(float(wait), MAX_CLAIM_WAIT_SECONDS))
        resp = self._request("POST", self.url(Routes.CLAIM_NEXT), fenced=False,
                             json={"worker": worker.to_dict(), "wait": wait},
                             timeout=(10.0, wait + 20.0))
        self.last_retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if resp.status_code == 204 or not resp.content:
            return None
        data = resp.json()
        if "job_id" not in data and isinstance(data.get("job"), dict):
            data = data["job"]
        return ClaimedJob.from_dict(data)

    def heartbeat(self, job: ClaimedJob, beat: Heartbeat) -> HeartbeatReply:
        """Renew the lease and report progress; the reply carries cancellation."""
        timeout = (5.0, max(5.0, min(job.heartbeat_interval, 20.0)))
        data = self._job_call(Routes.HEARTBEAT, job, beat.to_dict(), timeout=timeout)
        return HeartbeatReply.from_dict(data)

    def complete(self, job: ClaimedJob, main_artifact: str,
                 detected_language: str | None = None) -> dict:
        """Complete the job with already uploaded artifacts."""
        body: dict[str, Any] = {"main_artifact": main_artifact}
        if detected_language:
            body["detected_language"] = detected_language
        return self._job_call(Routes.COMPLETE, job, body)

    def fail(self, job: ClaimedJob, reason: str, retryable: bool = True) -> dict:
        """Report a failed attempt."""
        report = FailReport(reason=reason[:MAX_REASON_CHARS], retryable=retryable)
        return self._job_call(Routes.FAIL, job, report.to_dict())

    def release(self, job: ClaimedJob) -> dict:
        """Give the job back to the queue (worker shutting down)."""
        return self._job_call(Routes.RELEASE, job)

    # -- transfers --------------------------------------------------------------------------

    def download_input(self, job: ClaimedJob, dest: Path, check: Check | None = None,
                       on_progress: OnProgress | None = None) -> Path:
        """Fetch the job's input into `dest` (resuming, sha256-checked); return `dest`."""
        if job.source_url and not job.input_sha256:
            return self._download_source(job, dest, check, on_progress)
        if job.input_inline is not None and job.input_sha256:
            return _write_inline(job, dest, on_progress)
        return self._download_stored(Routes.DOWNLOAD_INPUT, "input", job, job.input_sha256, dest,
                                     check, on_progress, job.input_url)

    def download_subtitles(self, job: ClaimedJob, dest: Path,
                           check: Check | None = None) -> Path:
        """Fetch a dub's own subtitles into `dest` (sha256-checked); return `dest`."""
        return self._download_stored(Routes.DOWNLOAD_SUBTITLES, "subtitles", job,
                                     job.subtitles_sha256, dest, check, None, job.subtitles_url)

    def download_parent(self, job: ClaimedJob, dest: Path, sha256: str,
                        check: Check | None = None) -> Path:
        """Fetch a re-dub's copy of its parent's segment bundle into `dest` (sha256-checked)."""
        direct = self._fresh_url(Routes.DOWNLOAD_PARENT, job) if job.direct_upload else None
        return self._download_stored(Routes.DOWNLOAD_PARENT, "parent segments", job, sha256,
                                     dest, check, None, direct)

    def _download_stored(self, route: str, what: str, job: ClaimedJob, sha256: str | None,
                         dest: Path, check: Check | None, on_progress: OnProgress | None,
                         direct_url: str | None = None) -> Path:
        """Fetch a file the coordinator keeps for the job, under the lease (resuming); with
        `direct_url`, straight from object storage (renewed through `route`)."""
        try:
            if direct_url:
                self.store.download(direct_url, dest, sha256=sha256, check=check, on_progress=on_progress,
                                    renew=lambda: self._fresh_url(route, job))
                return dest
            fetch_resumable(self.session, self.url(route, job_id=job.job_id),
                            dest, headers=self._lease_headers(job), sha256=sha256,
                            attempts=self.attempts, timeout=(10.0, self.timeout), check=check,
                            on_status=_transient_or_raise, on_progress=on_progress,
                            max_rate=self.max_rate, sleep=self._sleep)
        except ChecksumMismatch as exc:
            raise JobFailed(f"{what} of job {job.job_id}: {exc}") from exc
        except TransientTransferError as exc:
            raise CoordinatorUnavailable(f"{what} of job {job.job_id}: {exc}") from exc
        return dest

    def _fresh_url(self, route: str, job: ClaimedJob) -> str:
        """A fresh presigned URL of a stored file: its download route answers 302 to one (the
        redirect is never followed with our headers)."""
        resp = self._request("GET", self.url(route, job_id=job.job_id), headers=self._lease_headers(job),
                             allow_redirects=False, stream=True)
        with resp:
            location = resp.headers.get("Location")
            if not resp.is_redirect or not location:
                raise CoordinatorError(f"GET {route}: expected a redirect to object storage, got "
                                       f"{resp.status_code}", resp.status_code)
        return location

    def _download_source(self, job: ClaimedJob, dest: Path, check: Check | None,
                         on_progress: OnProgress | None) -> Path:
        """Fetch a `source_url` job's input from that URL (never sending our API key).

        Only public addresses unless `allow_private_urls`; at most the smaller of this worker's
        and the coordinator's size caps. Refusals are permanent job failures.
        """
        limit, setting = source_limit(self.max_source_bytes, job.max_source_bytes)
        logger.info("job %s: fetching source %s (limit %s)", job.job_id, job.source_url,
                    f"{limit} bytes" if limit is not None else "none")
        fetch_source(str(job.source_url), dest, allow_private=self.allow_private_urls,
                     max_bytes=limit, limit_setting=setting, attempts=self.attempts,
                     timeout=(10.0, self.timeout), check=check, on_status=_source_status,
                     on_progress=on_progress, max_rate=self.max_rate, sleep=self._sleep)
        return dest

    def upload_result(self, job: ClaimedJob, path: Path, name: str, *, final: bool = False,
                      content_type: str = "application/octet-stream",
                      check: Check | None = None, on_progress: OnProgress | None = None,
                      sha256: str | None = None, detected_language: str | None = None,
                      claim_next: bool = False, data: bytes | None = None) -> ArtifactInfo:
        """Stream `path` as artifact `name`; retries transient failures; 409 → LeaseLost.

        `final=True` completes the job with this artifact as the main result in the same call;
        with `claim_next` that call also claims this worker's next job, kept in `handover`.
        `data`, the file's content already read (a small file), is sent as is (the caller then
        checked for cancellation just before; `on_progress` hears of it once it is sent).
        """
        sha = sha256 or file_sha256(path)
        if job.direct_upload:
            request = SlotRequest(name=name, size=path.stat().st_size, sha256=sha,
                                  content_type=content_type)
            return self._upload_direct(job, path, request, final, check, on_progress,
                                       detected_language, claim_next)
        params = {"name": name, "content_type": content_type,
                  **_final_params(final, detected_language, claim_next)}
        headers = {**self._lease_headers(job), SHA256_HEADER: sha,
                   "Content-Type": "application/octet-stream"}
        url = self.url(Routes.UPLOAD_RESULT, job_id=job.job_id)
        for attempt in range(self.attempts):
            try:
                resp = self._send_result(url, params, headers, path, name, check, on_progress,
                                         data)
                return self._upload_reply(resp, name, path, sha)
            except CoordinatorUnavailable as exc:
                self._retry_pause(exc, attempt, f"upload of {name}")
            except CoordinatorError as exc:
                _raise_upload_error(exc, attempt, self.attempts)
        raise CoordinatorUnavailable(f"upload of {name} failed after {self.attempts} tries")

    def _send_result(self, url: str, params: dict, headers: dict, path: Path, name: str,
                     check: Check | None, on_progress: OnProgress | None,
                     data: bytes | None) -> AnyReply:
        """One upload-result POST: `data` from memory (unless the rate is capped), else `path`
        streamed with progress."""
        timeout = (10.0, max(self.timeout, 120.0))
        if data is not None and not self.max_rate:
            resp = self._request("POST", url, params=params, data=data, headers=headers,
                                 timeout=timeout)
            if on_progress is not None:
                on_progress(len(data), len(data))
            return resp
        with ProgressReader(path, f"upload {name}", check, on_progress, self.max_rate) as body:
            return self._request("POST", url, params=params, data=body, headers=headers,
                                 timeout=timeout)

    def _upload_direct(self, job: ClaimedJob, path: Path, request: SlotRequest, final: bool,
                       check: Check | None, on_progress: OnProgress | None,
                       detected_language: str | None, claim_next: bool = False) -> ArtifactInfo:
        """Put `path` into object storage with presigned URLs, then have the coordinator verify
        and publish it (the fenced upload call, naming the key instead of sending bytes)."""
        for attempt in range(2):  # other bytes than declared reached the store: send again once
            slot = self._slot(job, request)
            try:
                slot = self.store.upload(
                    slot, path, check=check, on_progress=on_progress,
                    renew=lambda s: self._slot(job, replace(request, key=s.key, upload_id=s.upload_id)))
            except TransientTransferError as exc:
                raise CoordinatorUnavailable(f"upload of {request.name} to object storage: {exc}") from exc
            try:
                return self._publish(job, slot, request, path, final, detected_language, claim_next)
            except CoordinatorError as exc:
                _raise_upload_error(exc, attempt, 2)
        raise CoordinatorUnavailable(f"upload of {request.name} failed twice")

    def _slot(self, job: ClaimedJob, request: SlotRequest) -> UploadSlot:
        """POST upload-slot: presigned URLs for a new upload, or fresh ones for `request.key`."""
        for attempt in range(self.attempts):
            try:
                return UploadSlot.from_dict(self._job_call(Routes.UPLOAD_SLOT, job, request.to_dict()))
            except CoordinatorUnavailable as exc:
                self._retry_pause(exc, attempt, f"upload slot for {request.name}")
        raise CoordinatorUnavailable(f"no upload slot for {request.name}")

    def _publish(self, job: ClaimedJob, slot: UploadSlot, request: SlotRequest, path: Path,
                 final: bool, detected_language: str | None, claim_next: bool = False) -> ArtifactInfo:
        """upload-result naming the stored object; retried as is (the bytes stay in the store)."""
        params: dict[str, Any] = {"name": request.name, "key": slot.key, "content_type": request.content_type,
                                  "size": request.size, **_final_params(final, detected_language, claim_next)}
        if slot.upload_id:
            params["upload_id"] = slot.upload_id
        headers = {**self._lease_headers(job), SHA256_HEADER: request.sha256}
        url = self.url(Routes.UPLOAD_RESULT, job_id=job.job_id)
        timeout = (10.0, max(self.timeout, 120.0) + request.size * VERIFY_SECONDS_PER_BYTE)
        for attempt in range(self.attempts):
            try:
                resp = self._request("POST", url, params=params, headers=headers, timeout=timeout)
                return self._upload_reply(resp, request.name, path, request.sha256)
            except CoordinatorUnavailable as exc:
                self._retry_pause(exc, attempt, f"publishing {request.name}")
        raise CoordinatorUnavailable(f"publishing {request.name} failed after {self.attempts} tries")

    def _upload_reply(self, resp: AnyReply, name: str, path: Path, sha: str) -> ArtifactInfo:
        """The ArtifactInfo of an upload reply (one built locally if the reply has none); the
        next job the reply of a completing upload carries is kept in `handover`."""
        data = resp.json() if resp.content else {}
        data = data if isinstance(data, dict) else {}
        nxt = data.get("next")
        if isinstance(nxt, dict) and nxt.get("job_id"):
            self.handover = ClaimedJob.from_dict(nxt)
        artifact = data.get("artifact")
        if isinstance(artifact, dict):
            return ArtifactInfo.from_dict(artifact)
        return ArtifactInfo(name=name, size=path.stat().st_size, sha256=sha)

    def take_handover(self) -> ClaimedJob | None:
        """The job handed over by the last completing upload (once), else None."""
        job, self.handover = self.handover, None
        return job

    def _retry_pause(self, exc: CoordinatorUnavailable, attempt: int, what: str) -> None:
        """Sleep before another try of `what`, or re-raise when the tries are used up."""
        if attempt + 1 >= self.attempts:
            raise exc
        delay = getattr(exc, "retry_after", None) or backoff_delay(attempt, 1.0, 30.0)
        logger.warning("%s failed (try %d/%d), again in %.1fs: %s", what, attempt + 1,
                       self.attempts, delay, exc)
        self._sleep(delay)


def _final_params(final: bool, detected_language: str | None, claim_next: bool) -> dict[str, Any]:
    """The upload-result query fields about completing: `final`, and with it the detected
    language and `next` (claim-on-complete)."""
    params: dict[str, Any] = {"final": int(bool(final))}
    if final and detected_language:
        params["detected_language"] = detected_language
    if final and claim_next:
        params["next"] = 1
    return params


def _raise_upload_error(exc: CoordinatorError, attempt: int, attempts: int) -> None:
    """Map a 4xx upload reply: 413 is permanent, a 400 hash mismatch is retried once."""
    if exc.status == 413:
        raise PermanentJobError(f"result too large for the coordinator: {exc}") from exc
    if exc.status == 400 and "sha" in f"{exc.error} {exc}".lower() and attempt + 1 < attempts:
        logger.warning("upload checksum rejected, sending again: %s", exc)
        return
    raise exc


def _transient_or_raise(resp: requests.Response) -> None:
    """Status hook for input downloads: 5xx/429 retry in place, others map to worker errors."""
    if resp.status_code >= 500 or resp.status_code == 429:
        raise TransientTransferError(f"{resp.status_code} {resp.reason}")
    raise_for_reply(resp)


def _source_status(resp: requests.Response) -> None:
    """Status hook for source URLs: 5xx/408/429 retry; other errors are permanent."""
    status = resp.status_code
    if status >= 500 or status in (408, 429):
        raise TransientTransferError(f"{status} {resp.reason}")
    if status >= 400:
        raise PermanentJobError(f"source_url answered {status} {resp.reason}")
