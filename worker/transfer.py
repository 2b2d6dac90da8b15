"""Streaming transfer helpers: progress reporting, hashing, resumable downloads, retry delays."""
from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import requests

from shared.protocol import SHA256_HEADER

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
# Below this a transfer is quick: no progress lines, and an upload body is sent from memory.
SMALL_TRANSFER = CHUNK_SIZE
Check = Callable[[], None]
OnProgress = Callable[[int, "int | None"], None]


def backoff_delay(failures: int, minimum: float = 1.0, maximum: float = 60.0,
                  rand: Callable[[], float] = random.random) -> float:
    """BOINC-style randomized exponential backoff: `min * 2^n * (0.5 + 0.5 * rand)`, capped."""
    base = min(maximum, minimum * (2 ** max(0, min(failures, 30))))
    return base * (0.5 + 0.5 * rand())


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def file_sha256(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex sha256 of a file, read in chunks."""
    return _hash_prefix(path, chunk_size).hexdigest()


def _hash_prefix(path: Path, chunk_size: int = CHUNK_SIZE) -> "hashlib._Hash":
    """A sha256 object fed with the whole current content of `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest


def read_small(path: Path, limit: int = SMALL_TRANSFER) -> bytes | None:
    """The whole content of `path` if it is under `limit` bytes, else None (one open)."""
    with open(path, "rb") as fh:
        data = fh.read(limit)
        if len(data) < limit:
            return data
    return None


def human_bytes(n: float) -> str:
    """Short human size: 1.5 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class RateLimit:
    """Caps a transfer's average rate by sleeping between chunks (None: unlimited)."""

    def __init__(self, bytes_per_second: float | None):
        self.rate = bytes_per_second if bytes_per_second and bytes_per_second > 0 else None
        self._start = time.monotonic()
        self._done = 0

    def chunk_size(self, default: int = CHUNK_SIZE) -> int:
        """A chunk size that keeps a throttled transfer moving about 4 times a second."""
        return default if self.rate is None else max(1024, min(default, int(self.rate / 4)))

    def account(self, n: int) -> None:
        """Count `n` bytes, sleeping if we are ahead of the allowed rate."""
        if self.rate is None:
            return
        self._done += n
        ahead = self._start + self._done / self.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


class LogProgress:
    """Progress as log lines (every 10 s or 25 %) when stderr is not a terminal; small: quiet."""

    small = SMALL_TRANSFER

    def __init__(self, total: int | None, desc: str, initial: int = 0):
        self.total, self.desc, self.n = total, desc, initial
        self._last_time = time.monotonic()
        self._last_quarter = self._quarter()

    def _quarter(self) -> int:
        """Which 25 % step we are in (0 when the size is unknown)."""
        return int(4 * self.n / self.total) if self.total else 0

    def update(self, n: int) -> None:
        """Count `n` more bytes; log now and then."""
        self.n += n
        now = time.monotonic()
        if self.total is not None and self.total < self.small:
            return
        if now - self._last_time >= 10 or self._quarter() != self._last_quarter:
            self._last_time, self._last_quarter = now, self._quarter()
            logger.info("%s: %s of %s", self.desc, human_bytes(self.n),
                        human_bytes(self.total) if self.total else "?")

    def close(self) -> None:
        """Log the final count (at debug level for small transfers)."""
        level = logging.DEBUG if self.n < self.small else logging.INFO
        logger.log(level, "%s: done, %s", self.desc, human_bytes(self.n))


def progress_bar(total: int | None, desc: str, initial: int = 0):
    """A tqdm bar when stderr is a terminal, else a `LogProgress`."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                    unit_divisor=1024, leave=False)
    return LogProgress(total, desc, initial)


class ProgressReader:
    """A file wrapper that requests streams as a body, with a known length and progress."""

    def __init__(self, path: Path, desc: str, check: Check | None = None,
                 on_progress: OnProgress | None = None, max_rate: float | None = None):
        self._limit = RateLimit(max_rate)
        self._fh = open(path, "rb")
        self._len = path.stat().st_size
        self._done = 0
        self._bar = progress_bar(self._len, desc)
        self._check = check
        self._on_progress = on_progress

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK_SIZE), b"")

    def tell(self) -> int:
        """Bytes read so far."""
        return self._done

    def read(self, size: int = -1) -> bytes:
        """Read the next block, checking for cancellation first."""
        if self._check is not None:
            self._check()
        if self._limit.rate is not None:
            size = min(size if size > 0 else CHUNK_SIZE, self._limit.chunk_size())
        data = self._fh.read(size)
        self._limit.account(len(data))
        self._done += len(data)
        self._bar.update(len(data))
        if self._on_progress is not None:
            self._on_progress(self._done, self._len)
        return data

    def close(self) -> None:
        """Close the file and the progress bar."""
        self._fh.close()
        self._bar.close()

    def __enter__(self) -> "ProgressReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TransientTransferError(Exception):
    """A transfer broke in a way another try may fix (connection cut, 5xx, bad hash)."""


class ChecksumMismatch(TransientTransferError):
    """The downloaded bytes do not hash to the expected sha256."""


class TransferTooLarge(Exception):
    """A download is bigger than its `max_bytes` cap (never retried; the file is removed)."""

    def __init__(self, limit: int, size: int | None):
        self.limit, self.size = limit, size
        seen = f"{size} bytes announced" if size is not None else "cut off"
        super().__init__(f"larger than the {limit}-byte limit ({seen})")


def expected_sha256(resp: requests.Response, given: str | None) -> str | None:
    """The sha256 to check against: the claimed one, else the server's header or ETag."""
    if given:
        return given.lower()
    header = resp.headers.get(SHA256_HEADER) or resp.headers.get("ETag", "")
    header = header.strip().strip('"').lower()
    if header.startswith("w/"):
        return None
    return header if len(header) == 64 else None


def fetch_once(session: requests.Session, url: str, dest: Path, *, headers: dict[str, str],
               timeout: tuple[float, float], check: Check | None, on_status: Callable,
               on_progress: OnProgress | None = None, max_rate: float | None = None,
               max_bytes: int | None = None) -> tuple[str, str | None]:
    """Download `url` into `dest`, resuming from its size; return (sha256, expected sha256).

    More than `max_bytes` in all (None: no cap) raises TransferTooLarge and removes `dest`.
    """
    offset = dest.stat().st_size if dest.exists() else 0
    req_headers = dict(headers)
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=req_headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            logger.info("range not satisfiable at %d: checking the file as it is", offset)
            return _hash_prefix(dest).hexdigest(), expected_sha256(resp, None)
        on_status(resp)
        append = offset > 0 and resp.status_code == 206 and _range_start(resp) == offset
        if resp.status_code == 206 and not append:
            dest.unlink(missing_ok=True)
            raise TransientTransferError(f"unexpected Content-Range for offset {offset}")
        if offset and not append:
            logger.info("server did not resume at %d: downloading from the start", offset)
        return _write_body(resp, dest, append, check, on_progress, RateLimit(max_rate),
                           max_bytes)


def _range_start(resp: requests.Response) -> int | None:
    """First byte position of a 206 reply's Content-Range, or None."""
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _write_body(resp: requests.Response, dest: Path, append: bool, check: Check | None,
                on_progress: OnProgress | None, limit: RateLimit,
                max_bytes: int | None = None) -> tuple[str, str | None]:
    """Stream a reply body into `dest` (appending or not), hashing as it goes.

    With `max_bytes`, a Content-Length beyond the cap fails before anything is written and a
    body without one is cut as soon as it passes the cap; either way `dest` is removed.
    """
    try:
        return _stream_body(resp, dest, append, check, on_progress, limit, max_bytes)
    except TransferTooLarge:
        dest.unlink(missing_ok=True)
        raise


def _stream_body(resp: requests.Response, dest: Path, append: bool, check: Check | None,
                 on_progress: OnProgress | None, limit: RateLimit,
                 max_bytes: int | None) -> tuple[str, str | None]:
    """The body of `_write_body` (which removes `dest` when the cap is passed)."""
    digest = _hash_prefix(dest) if append else hashlib.sha256()
    done = dest.stat().st_size if append else 0
    length = resp.headers.get("Content-Length")
    total = done + int(length) if length and length.isdigit() else None
    if max_bytes is not None and total is not None and total > max_bytes:
        raise TransferTooLarge(max_bytes, total)
    bar = progress_bar(total, f"download {dest.name}", initial=done)
    try:
        with open(dest, "ab" if append else "wb") as fh:
            for chunk in resp.iter_content(limit.chunk_size()):
                if check is not None:
                    check()
                if max_bytes is not None and done + len(chunk) > max_bytes:
                    raise TransferTooLarge(max_bytes, None)
                limit.account(len(chunk))
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if on_progress is not None:
                    on_progress(done, total)
    finally:
        bar.close()
    if total is not None and done != total:
        raise TransientTransferError(f"short read: {done} of {total} bytes")
    return digest.hexdigest(), expected_sha256(resp, None)


def fetch_resumable(session: requests.Session, url: str, dest: Path, *,
                    headers: dict[str, str] | None = None, sha256: str | None = None,
                    attempts: int = 5, timeout: tuple[float, float] = (10.0, 60.0),
                    check: Check | None = None, on_status: Callable = lambda resp: None,
                    on_progress: OnProgress | None = None, max_rate: float | None = None,
                    max_bytes: int | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> str:
    """Download with retries, resuming with Range, verifying sha256; return the file's sha256.

    `max_bytes` caps the file's size (None: no cap); passing it raises TransferTooLarge at once,
    without retrying, and removes `dest`.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            sleep(backoff_delay(attempt - 1, 0.5, 10.0))
        try:
            got, server_sha = fetch_once(session, url, dest, headers=headers or {},
                                         timeout=timeout, check=check, on_status=on_status,
                                         on_progress=on_progress, max_rate=max_rate,
                                         max_bytes=max_bytes)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError, TransientTransferError) as exc:
            logger.warning("download of %s interrupted (try %d/%d): %s", dest.name,
                           attempt + 1, attempts, exc)
            last = exc
            continue
        want = (sha256 or server_sha or "").lower()
        if not want or got == want:
            return got
        logger.warning("sha256 mismatch for %s: got %s, want %s", dest.name, got, want)
        dest.unlink(missing_ok=True)
        last = ChecksumMismatch(f"sha256 mismatch: got {got}, expected {want}")
    kind = ChecksumMismatch if isinstance(last, ChecksumMismatch) else TransientTransferError
    raise kind(f"download failed after {attempts} tries: {last}")
