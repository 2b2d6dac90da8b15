"""Fetching a job's `source_url` safely: guarded addresses, a size cap, clear permanent failures.

The session comes from `shared.safehttp` (checked, pinned connections; at most 5 redirects,
http/https only; no proxies or other settings from the environment). A refused address, a bad
scheme, too many redirects or a source over the size cap fail the job permanently at once, with a
reason that says what happened and how to lift the rule; connection trouble is retried.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import requests

from shared.netguard import AddressGuard, UnsafeURL
from shared.safehttp import MAX_REDIRECTS, GuardedSession
from worker.errors import JobFailed, PermanentJobError
from worker.transfer import TransferTooLarge, TransientTransferError, fetch_resumable

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_SOURCE_MB = 2048
SOURCE_LABEL = "source_url"
PRIVATE_HINT = "start the worker with --allow-private-urls to allow private addresses"
COORDINATOR_LIMIT = "MAX_SOURCE_MB"
WORKER_LIMIT = "worker --max-source-mb"


def source_guard(allow_private: bool = False) -> AddressGuard:
    """The address policy for source URLs (`allow_private`: the worker's --allow-private-urls)."""
    return AddressGuard(allow_private=allow_private, label=SOURCE_LABEL, hint=PRIVATE_HINT)


def source_session(allow_private: bool = False) -> GuardedSession:
    """A fresh guarded session for one source download (never carries our API key)."""
    session = GuardedSession(source_guard(allow_private))
    session.headers["User-Agent"] = "dubfleet-worker/1"
    return session


def source_limit(own_bytes: int | None, job_bytes: int | None) -> tuple[int | None, str]:
    """The smaller of the worker's and the coordinator's caps, and the setting that sets it."""
    if job_bytes is not None and (own_bytes is None or job_bytes <= own_bytes):
        return job_bytes, COORDINATOR_LIMIT
    return own_bytes, WORKER_LIMIT


def too_large_reason(limit: int, setting: str) -> str:
    """The failure reason for a source over its cap."""
    return f"{SOURCE_LABEL} is larger than the {limit / MIB:g} MB limit ({setting})"


def fetch_source(url: str, dest: Path, *, allow_private: bool = False,
                 max_bytes: int | None = None, limit_setting: str = WORKER_LIMIT,
                 **fetch_kw: Any) -> str:
    """Download `url` into `dest` through a guarded session; return the file's sha256.

    `fetch_kw` goes to `worker.transfer.fetch_resumable` (attempts, timeout, check, on_status,
    on_progress, max_rate, sleep). Refused addresses and schemes, too many redirects and a
    source over `max_bytes` raise PermanentJobError; retries used up raise JobFailed.
    """
    with source_session(allow_private) as session:
        try:
            return fetch_resumable(session, url, dest, max_bytes=max_bytes, **fetch_kw)
        except UnsafeURL as exc:
            raise PermanentJobError(str(exc)) from exc
        except requests.TooManyRedirects as exc:
            raise PermanentJobError(f"{SOURCE_LABEL} redirected more than {MAX_REDIRECTS} "
                                    "times") from exc
        except TransferTooLarge as exc:
            raise PermanentJobError(too_large_reason(exc.limit, limit_setting)) from exc
        except TransientTransferError as exc:
            raise JobFailed(f"{SOURCE_LABEL} download failed: {exc}") from exc
