"""Transfers straight to and from the coordinator's object store, with the presigned URLs it hands
out (its STORAGE_URL is s3://...): the worker needs no storage credentials, and a large result
never passes through the coordinator.

Uploads stream from disk one part at a time (bounded memory; a multipart upload's parts are
PUT in order, each retried on its own). Downloads resume with Range. A URL that runs out (the
store answers 403), or is about to, is renewed by asking the coordinator again (`renew`), and
the transfer carries on from where it stopped: parts already stored are never sent again.

Trust: these URLs come from the authenticated coordinator, so unlike `source_url`s they may
point at private addresses (a MinIO on the LAN); only http and https are accepted. They are
fetched with a bare session: the API key and lease token never reach the store.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests

from shared.protocol import UploadSlot
from worker.errors import JobFailed
from worker.transfer import (CHUNK_SIZE, RateLimit, TransientTransferError, backoff_delay,
                             fetch_resumable, progress_bar)

logger = logging.getLogger(__name__)

Check = Callable[[], None]
OnProgress = Callable[[int, "int | None"], None]
RENEWALS = 3  # fresh URLs in a row for one part (or download) before giving up
CLOCK_SLACK = 1.0  # presigned URLs are dated to the whole second


class UrlExpired(Exception):
    """The store refused a presigned URL (403): it expired, or its signature no longer holds."""


class StorageRefused(JobFailed):
    """The object store refused a transfer in a way retrying the same URL cannot fix."""


def check_url(url: str) -> str:
    """`url` if it is http(s); storage URLs from the coordinator are trusted otherwise."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise StorageRefused(f"the coordinator handed out a storage URL that is not http(s): {url[:80]!r}")
    return url


def _store_error(resp: requests.Response) -> str:
    """The S3 error code and message of a reply (XML), shortened."""
    text = resp.text[:600] if resp.content else ""
    code = text.split("<Code>")[1].split("</Code>")[0] if "<Code>" in text else ""
    message = text.split("<Message>")[1].split("</Message>")[0] if "<Message>" in text else ""
    return f"{resp.status_code} {code or resp.reason}: {message}".strip(": ")


def raise_for_store(resp: requests.Response) -> None:
    """Map a store reply: 403 → UrlExpired, 5xx/408/429 → transient, other errors → refused."""
    status = resp.status_code
    if status < 300:
        return
    if status == 403:
        raise UrlExpired(_store_error(resp))
    if status >= 500 or status in (408, 429):
        raise TransientTransferError(_store_error(resp))
    raise StorageRefused(f"object storage answered {_store_error(resp)}")


class FileSlice:
    """`length` bytes of a file from `offset`, as an iterable body with a known length: requests
    sends it in 1 MiB chunks, so a part never sits in memory whole."""

    def __init__(self, path: Path, offset: int, length: int, check: Check | None,
                 on_chunk: Callable[[int], None], limit: RateLimit):
        self.path, self.offset, self.length = path, offset, length
        self._check, self._on_chunk, self._limit = check, on_chunk, limit

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            while left > 0:
                if self._check is not None:
                    self._check()
                chunk = fh.read(min(self._limit.chunk_size(CHUNK_SIZE), left))
                if not chunk:
                    raise TransientTransferError(f"{self.path.name} shrank while it was uploaded")
                left -= len(chunk)
                self._limit.account(len(chunk))
                self._on_chunk(len(chunk))
                yield chunk


class ObjectStore:
    """Presigned transfers for one worker process (no credentials, no API key)."""

    def __init__(self, *, attempts: int = 5, timeout: float = 60.0, max_rate: float | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.attempts, self.timeout, self.max_rate = attempts, timeout, max_rate
        self._sleep = sleep

    def download(self, url: str, dest: Path, *, sha256: str | None, renew: Callable[[], str],
                 check: Check | None = None, on_progress: OnProgress | None = None) -> Path:
        """Fetch `url` into `dest` (resuming, sha256-checked), renewing the URL when refused."""
        with requests.Session() as session:
            for renewal in range(RENEWALS + 1):
                try:
                    fetch_resumable(session, check_url(url), dest, sha256=sha256, attempts=self.attempts,
                                    timeout=(10.0, self.timeout), check=check, on_status=raise_for_store,
                                    on_progress=on_progress, max_rate=self.max_rate, sleep=self._sleep)
                    return dest
                except UrlExpired as exc:
                    if renewal >= RENEWALS:
                        raise StorageRefused(f"download of {dest.name}: fresh URLs refused too: {exc}") from exc
                    logger.info("download of %s: storage URL refused (%s); asking for a fresh one",
                                dest.name, exc)
                    url = renew()
        return dest

    def upload(self, slot: UploadSlot, path: Path, *, renew: Callable[[UploadSlot], UploadSlot],
               check: Check | None = None, on_progress: OnProgress | None = None) -> UploadSlot:
        """PUT `path` to the slot's URLs, part after part; returns the slot last used."""
        size = path.stat().st_size
        state = _UploadState(slot, size, renew)
        bar = progress_bar(size, f"upload {path.name}")
        limit = RateLimit(self.max_rate)
        try:
            with requests.Session() as session:
                while state.part < len(state.slot.urls):
                    self._put_part(session, state, path, check, limit, bar, on_progress)
        finally:
            bar.close()
        return state.slot

    def _put_part(self, session: requests.Session, state: "_UploadState", path: Path,
                  check: Check | None, limit: RateLimit, bar, on_progress: OnProgress | None) -> None:
        """One try of the current part; advances the state on success, renews or waits on failure."""
        state.renew_if_due()
        offset, length = state.part_range()
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            bar.update(n)
            if on_progress is not None:
                on_progress(state.done + sent, state.size)
        # requests would send an empty iterable chunked, which S3 refuses: an empty file is b"".
        body = FileSlice(path, offset, length, check, counted, limit) if length else b""
        try:
            with session.put(check_url(state.slot.urls[state.part]), data=body, allow_redirects=False,
                             timeout=(10.0, max(self.timeout, 120.0))) as resp:
                raise_for_store(resp)
        except UrlExpired as exc:
            state.refused(exc)
        except (requests.ConnectionError, requests.Timeout, TransientTransferError) as exc:
            self._sleep(state.failed(exc, self.attempts))
        else:
            state.stored(length)
        if sent and not state.moved:
            bar.update(-sent)  # this part goes again


class _UploadState:
    """Where an upload stands: the slot in use, the next part, failures and renewals so far."""

    def __init__(self, slot: UploadSlot, size: int, renew: Callable[[UploadSlot], UploadSlot]):
        self.slot, self.size, self._renew = slot, size, renew
        self.part = self.done = self.failures = self.renewals = 0
        self.moved = False
        self._deadline = self._deadline_of(slot)

    @staticmethod
    def _deadline_of(slot: UploadSlot) -> float:
        """When to renew proactively: a quarter of the lifetime (at most a minute) before it ends."""
        margin = min(60.0, slot.expires_in / 4) + CLOCK_SLACK
        return time.monotonic() + slot.expires_in - margin

    def part_range(self) -> tuple[int, int]:
        """(offset, length) of the current part (a single PUT is the whole file)."""
        if self.slot.upload_id is None:
            return 0, self.size
        offset = self.part * self.slot.part_size
        return offset, max(0, min(self.slot.part_size, self.size - offset))

    def renew_if_due(self) -> None:
        """Ask for fresh URLs before these run out (a late PUT would be refused mid-body)."""
        self.moved = False
        if time.monotonic() >= self._deadline:
            self._fresh("the URLs are about to expire")

    def _fresh(self, why: str) -> None:
        """Swap in fresh URLs for the same key and upload: stored parts stay stored."""
        logger.info("upload to %s: %s; asking the coordinator for fresh URLs (part %d of %d)",
                    self.slot.key, why, self.part + 1, len(self.slot.urls))
        fresh = self._renew(self.slot)
        if fresh.key != self.slot.key or fresh.upload_id != self.slot.upload_id or \
                len(fresh.urls) != len(self.slot.urls):
            raise StorageRefused("the coordinator renewed the upload URLs for another upload")
        self.slot, self._deadline = fresh, self._deadline_of(fresh)

    def refused(self, exc: UrlExpired) -> None:
        """A 403: renew (a few times in a row at most) and try the part again."""
        self.renewals += 1
        if self.renewals > RENEWALS:
            raise StorageRefused(f"upload to {self.slot.key}: fresh URLs refused too: {exc}")
        self._fresh(f"the store refused the URL ({exc})")

    def failed(self, exc: Exception, attempts: int) -> float:
        """A transient failure: the delay before the part goes again (raises past `attempts`)."""
        self.failures += 1
        if self.failures >= attempts:
            raise TransientTransferError(f"upload to {self.slot.key} failed {attempts} times: {exc}")
        logger.warning("upload to %s, part %d: %s (try %d/%d)", self.slot.key, self.part + 1, exc,
                       self.failures, attempts)
        return backoff_delay(self.failures - 1, 0.5, 10.0)

    def stored(self, length: int) -> None:
        """The current part is in the store: on to the next."""
        self.done += length
        self.part += 1
        self.failures = self.renewals = 0
        self.moved = True
