"""A small HTTP client of the coordinator's client endpoints (submit, follow, fetch)."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import requests

from dubfleet.multipart import FilePart, MultipartBody
from shared.protocol import (API_KEY_HEADER, IDEMPOTENCY_HEADER, JOB_EVENT_FIELDS, SHA256_HEADER,
                             JobStatus, Routes, is_valid_artifact_name)

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
TERMINAL = {s.value for s in JobStatus if s.terminal}
# Reading an event stream: the server sends a keepalive every 15 s by default; a connection that
# stays silent longer than this is taken for dead and resumed.
EVENTS_TIMEOUT = (30, 60)


class ApiError(Exception):
    """The coordinator answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int = 0, error: str = ""):
        super().__init__(message)
        self.status = status
        self.error = error


def _bar(total: int | None, desc: str):
    """A tqdm bar on a terminal, else None (no progress output)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False)


class FileBody:
    """A file that requests streams as a raw body with a known length (never read whole)."""

    def __init__(self, path: Path):
        self._fh = open(path, "rb")
        self._len = path.stat().st_size
        self._bar = _bar(self._len, f"upload {path.name}")

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK_SIZE), b"")

    def read(self, size: int = -1) -> bytes:
        """Read the next block."""
        data = self._fh.read(size)
        if self._bar is not None:
            self._bar.update(len(data))
        return data

    def close(self) -> None:
        """Close the file and the bar."""
        self._fh.close()
        if self._bar is not None:
            self._bar.close()


def _error_of(resp: requests.Response) -> ApiError:
    """An ApiError carrying the server's message."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("message") or body.get("error")):
        error = str(body.get("error") or "")
        message = str(body.get("message") or error)
    else:
        error, message = str(resp.status_code), (resp.text.strip()[:300] or resp.reason)
    return ApiError(f"{message} (HTTP {resp.status_code})", resp.status_code, error)


def _safe_name(name: str | None) -> str | None:
    """`name` if it is a plain, path-safe file name, else None."""
    return name if name and Path(name).name == name and is_valid_artifact_name(name) else None


def _filename_from(resp: requests.Response) -> str | None:
    """A safe file name from Content-Disposition, if the server sent one."""
    match = re.search(r'filename="?([^";]+)"?', resp.headers.get("Content-Disposition", ""))
    return _safe_name(Path(match.group(1)).name) if match else None


class DubfleetApi:
    """Client endpoints of one coordinator, with one API key."""

    def __init__(self, api_url: str, api_key: str, timeout: float = 60.0):
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({API_KEY_HEADER: api_key, "User-Agent": "dubfleet-cli/1"})

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> "DubfleetApi":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, route: str, *, stream: bool = False,
                **kwargs: Any) -> requests.Response:
        """Send a request; errors become ApiError with the server's message."""
        url = self.api_url + route
        kwargs.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, url, stream=stream, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(f"cannot reach the coordinator at {self.api_url}: {exc}") from exc
        if resp.status_code >= 400:
            error = _error_of(resp)
            resp.close()
            raise error
        return resp

    def submit_file(self, path: Path, fields: dict[str, Any],
                    idempotency_key: str | None = None) -> dict:
        """Submit a local file as a raw streamed body; fields go in the query string."""
        params = {"filename": path.name, **_query(fields)}
        headers = {"Content-Type": "application/octet-stream"}
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        body = FileBody(path)
        try:
            return self.request("POST", Routes.JOBS, params=params, data=body,
                                headers=headers, timeout=(30, 3600)).json()
        finally:
            body.close()

    def submit_with_subtitles(self, path: Path, subtitles: Path, fields: dict[str, Any],
                              idempotency_key: str | None = None) -> dict:
        """Submit a local video with its own subtitles (a dub): one streamed multipart body,
        the video in the `file` part and the subtitles in the `subtitles` part."""
        params = {"filename": path.name, **_query(fields)}
        parts = [FilePart("file", path), FilePart("subtitles", subtitles, subtitles.name,
                                                  "text/plain; charset=utf-8")]
        bar = _bar(None, f"upload {path.name}")
        body = MultipartBody(parts, progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.total = len(body)
        headers = {"Content-Type": body.content_type}
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        try:
            return self.request("POST", Routes.JOBS, params=params, data=body,
                                headers=headers, timeout=(30, 3600)).json()
        finally:
            if bar is not None:
                bar.close()

    def submit_url(self, url: str, fields: dict[str, Any],
                   idempotency_key: str | None = None) -> dict:
        """Submit a job whose input the worker fetches from `url`."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        body = {"source_url": url, **{k: v for k, v in fields.items() if v is not None}}
        return self.request("POST", Routes.JOBS, json=body, headers=headers).json()

    def job(self, job_id: str) -> dict:
        """The job view."""
        return self.request("GET", Routes.fill(Routes.JOB, job_id=job_id)).json()

    def jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """A page of jobs, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self.request("GET", Routes.JOBS, params=params).json()

    def search(self, q: str, limit: int = 20, offset: int = 0, language: str | None = None,
               kind: str | None = None) -> dict:
        """Transcript lines of the caller's jobs that match `q`, best first."""
        params: dict[str, Any] = {"q": q, "limit": limit, "offset": offset}
        params.update({k: v for k, v in {"language": language, "kind": kind}.items() if v})
        return self.request("GET", Routes.SEARCH, params=params).json()

    def cancel(self, job_id: str) -> dict:
        """Cancel a job (queued: at once; running: at the worker's next heartbeat)."""
        return self.request("DELETE", Routes.fill(Routes.JOB, job_id=job_id)).json()

    def retry(self, job_id: str) -> dict:
        """Queue a failed or cancelled job again."""
        return self.request("POST", Routes.fill(Routes.JOB_RETRY, job_id=job_id)).json()

    def redub(self, job_id: str, segments: list[dict],
              idempotency_key: str | None = None) -> dict:
        """Correct lines of a completed dub: a new job re-voices only those; returns its view.

        Each segment is {"index": i, "text": "..."} (voiced as given) or {"index": i,
        "source_text": "..."} (translated again)."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        return self.request("POST", Routes.fill(Routes.JOB_REDUB, job_id=job_id),
                            json={"segments": segments}, headers=headers).json()

    def queue_info(self) -> dict:
        """Queue counters."""
        return self.request("GET", Routes.QUEUE_INFO).json()

    def job_events(self, job_id: str, last_event_id: str | None = None) -> requests.Response:
        """Open the job's Server-Sent Events stream (a streamed reply; 204 when a resumed
        stream's job has ended)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return self.request("GET", Routes.fill(Routes.JOB_EVENTS, job_id=job_id), stream=True,
                            headers=headers, timeout=EVENTS_TIMEOUT)

    def follow(self, job_id: str, poll: float = 1.0, retries: int = 30,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[dict]:
        """The job's state now and after every change until it ends, as event data (progress
        0..1): live events, resumed with Last-Event-ID when the connection drops; polling
        instead when the coordinator has no stream to spare (503)."""
        follower = _Follower(self, job_id, retries)
        while not follower.done:
            try:
                yield from follower.stream()
            except ApiError as exc:
                if exc.status == 503:
                    yield from self._poll(job_id, poll, sleep)
                    return
                follower.failed(exc)
            if not follower.done:
                sleep(follower.delay(poll))

    def _poll(self, job_id: str, poll: float, sleep: Callable[[float], None]) -> Iterator[dict]:
        """Event data from GET /jobs/<id> every `poll` seconds until the job ends."""
        while True:
            data = event_of_view(self.job(job_id))
            yield data
            if data["status"] in TERMINAL:
                return
            sleep(poll)

    def download(self, job_id: str, out_dir: Path, name: str | None = None,
                 sha256: str | None = None, filename: str | None = None) -> Path:
        """Stream the main artifact (or `name`) into `out_dir`; check its sha256; return path."""
        route = (Routes.fill(Routes.JOB_ARTIFACT, job_id=job_id, name=name) if name
                 else Routes.fill(Routes.JOB_DOWNLOAD, job_id=job_id))
        out_dir.mkdir(parents=True, exist_ok=True)
        with self.request("GET", route, stream=True, timeout=(30, 600), allow_redirects=False) as first:
            announced = first.headers.get(SHA256_HEADER) or first.headers.get("ETag", "").strip('"')
            with _from_store(first) if first.is_redirect else first as resp:
                filename = _safe_name(filename or name) or _filename_from(resp) or f"{job_id}.result"
                dest = out_dir / filename
                digest = _save(resp, dest)
        expected = (sha256 or announced).lower()
        if len(expected) == 64 and digest != expected:
            dest.unlink(missing_ok=True)
            raise ApiError(f"{filename}: sha256 mismatch (got {digest}, expected {expected})")
        return dest


def _from_store(redirect: requests.Response) -> requests.Response:
    """Follow the coordinator's redirect to object storage (a presigned URL) without sending our
    API key there: a plain request, http(s) only."""
    location = redirect.headers.get("Location", "")
    if not location.lower().startswith(("http://", "https://")):
        raise ApiError(f"the coordinator redirected to {location[:80]!r}, not an http(s) URL")
    try:
        resp = requests.get(location, stream=True, timeout=(30, 600))
    except requests.RequestException as exc:
        raise ApiError(f"cannot reach the object store: {exc}") from exc
    if resp.status_code >= 400:
        resp.close()
        raise ApiError(f"the object store answered {resp.status_code} {resp.reason}", resp.status_code)
    return resp


def _query(fields: dict[str, Any]) -> dict[str, str]:
    """Submit fields as query-string values (options as JSON)."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if value is None:
            continue
        out[key] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return out


def _save(resp: requests.Response, dest: Path) -> str:
    """Stream a reply body to `dest` through a .part file; return its sha256."""
    part = dest.with_name(dest.name + ".part")
    length = resp.headers.get("Content-Length")
    bar = _bar(int(length) if length and length.isdigit() else None, dest.name)
    digest = hashlib.sha256()
    try:
        with open(part, "wb") as fh:
            for chunk in resp.iter_content(CHUNK_SIZE):
                fh.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except requests.RequestException as exc:
        part.unlink(missing_ok=True)
        raise ApiError(f"download of {dest.name} broke off: {exc}") from exc
    finally:
        if bar is not None:
            bar.close()
    part.replace(dest)
    return digest.hexdigest()


@dataclass(frozen=True)
class ServerEvent:
    """One Server-Sent Events message."""

    id: str | None  # the last id the stream set (the one to resume after)
    event: str
    data: str
    retry_ms: int | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The messages of a text/event-stream, line by line (the WHATWG rules; comments skipped)."""
    data: list[str] = []
    event, last_id, retry = "", None, None
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(last_id, event or "message", "\n".join(data), retry)
            data, event = [], ""
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


def event_of_view(view: dict) -> dict:
    """A job view (GET /jobs/<id>) in the shape of an event message (progress 0..1)."""
    data = {"id": view.get("job_id"), "progress": float(view.get("progress") or 0) / 100.0}
    data.update({name: view.get(name) for name in JOB_EVENT_FIELDS})
    return data


class _Follower:
    """One `follow`: the stream's last event id, whether the job ended, and how often
    reconnecting failed in a row."""

    def __init__(self, api: DubfleetApi, job_id: str, retries: int):
        self.api, self.job_id, self.retries = api, job_id, retries
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.failures = 0
        self.done = False

    def stream(self) -> Iterator[dict]:
        """The messages of one connection (ends when it drops or the job ends)."""
        resp = self.api.job_events(self.job_id, self.last_id)
        try:
            if resp.status_code == 204:  # resumed after the job's last message: nothing more
                self.done = True
                yield event_of_view(self.api.job(self.job_id))
                return
            resp.encoding = "utf-8"  # an event stream is always UTF-8
            for message in parse_sse(resp.iter_lines(chunk_size=None, decode_unicode=True)):
                self.failures = 0
                self.last_id, self.retry_ms = message.id or self.last_id, message.retry_ms
                data = json.loads(message.data)
                self.done = data.get("status") in TERMINAL
                yield data
                if self.done:
                    return
        except (requests.RequestException, ValueError) as exc:
            self.failed(ApiError(f"the event stream broke off: {exc}"))
        finally:
            resp.close()

    def failed(self, error: ApiError) -> None:
        """A connection failed: raise when the server refused (4xx) or after `retries`."""
        self.failures += 1
        if (error.status and error.status < 500) or self.failures > self.retries:
            raise error
        logger.info("event stream: %s; reconnecting", error)

    def delay(self, poll: float) -> float:
        """Seconds to wait before reconnecting (the server's `retry`, else `poll`)."""
        return self.retry_ms / 1000.0 if self.retry_ms is not None and not self.failures else poll
