"""Coordinator settings: defaults, then environment variables, then an explicit mapping."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

MIB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    "DATA_DIR": "./data",
    "DATABASE_URL": None,  # None: a SQLite file inside DATA_DIR
    # Upgrade the database schema at start (README "Database migrations"); off: only
    # `coordinator db upgrade` does, and `coordinator serve` refuses an outdated database.
    "AUTO_MIGRATE": True,
    "WORKER_API_KEY": None,
    "ADMIN_API_KEY": None,
    "MAX_UPLOAD_MB": 2048,
    # Largest `subtitles` part of a dub submit (a 3-hour film's SRT is about 200 KB).
    "MAX_SUBTITLES_KB": 1024,
    "LEASE_SECONDS": 120.0,
    # A claim's first lease is short until the worker's first heartbeat confirms it started, so a
    # job handed to a worker that died while long-polling returns to the queue quickly.
    "START_LEASE_SECONDS": 30.0,
    "MAX_ATTEMPTS": 3,
    "RETRY_BACKOFF_SECONDS": 10.0,
    "RETRY_BACKOFF_CAP_SECONDS": 600.0,
    "REAPER_INTERVAL": 2.0,
    "THREADS": 32,
    "MAX_CLAIM_WAITERS": None,  # None: THREADS - 4
    # A long-polling claim re-checks the queue this often even without a wake-up (backoffs end
    # silently; a wake-up from another replica may be missed).
    "CLAIM_RECHECK_SECONDS": 1.0,
    # On PostgreSQL: share wake-ups and job changes with the other replicas (LISTEN/NOTIFY);
    # off only behind a pooler that cannot LISTEN (pgbouncer in transaction mode).
    "REPLICA_NOTIFY": True,
    "CALLBACKS_ENABLED": True,
    "CALLBACK_TIMEOUT": 5.0,  # seconds per webhook delivery attempt
    # --- webhooks (README "Webhooks") ---
    # Tries per delivery (then `failed`); the wait after try n is WEBHOOK_BACKOFF_SECONDS *
    # 2^(n-1), capped at WEBHOOK_BACKOFF_CAP_SECONDS, with jitter.
    "WEBHOOK_MAX_ATTEMPTS": 6,
    "WEBHOOK_BACKOFF_SECONDS": 10.0,
    "WEBHOOK_BACKOFF_CAP_SECONDS": 3600.0,
    "WEBHOOK_CONCURRENCY": 4,  # deliveries in flight at once per process
    "WEBHOOK_POLL_SECONDS": 1.0,  # due retries (and other replicas' rows) are looked for this often
    "WORKER_ONLINE_SECONDS": 60.0,
    # --- hardening (see README "Security") ---
    # callback_url may point at loopback/private/link-local addresses only when this is on.
    "ALLOW_PRIVATE_CALLBACKS": False,
    # Cap on a source_url download, sent to workers in the claim (None: MAX_UPLOAD_MB).
    "MAX_SOURCE_MB": None,
    # Largest page of GET /jobs (bigger `limit` values are clamped to it).
    "MAX_LIST_LIMIT": 200,
    # Search (README "Search"): longest query, and largest transcript.json that gets indexed.
    "MAX_SEARCH_QUERY_CHARS": 256,
    "MAX_INDEXED_TRANSCRIPT_MB": 32,
    # Requests one client/admin key may have in progress at once (beyond: 429 + Retry-After).
    "CLIENT_MAX_INFLIGHT": 8,
    # Job list pages computed at once in this process (others wait; CPU-heavy views in many
    # threads would stall every other request on the interpreter lock).
    "LIST_CONCURRENCY": 2,
    # Upload temp files and stored files no row points to are removed once this old.
    "ORPHAN_GRACE_SECONDS": 3600.0,
    "ORPHAN_SWEEP_INTERVAL": 600.0,
    # waitress: open connections at once, idle timeout, time allowed to send a request's headers.
    "CONNECTION_LIMIT": 1000,
    "CHANNEL_TIMEOUT": 120.0,
    "HEADER_TIMEOUT": 10.0,
    # Per-key request budgets (Flask-Limiter syntax), clients and workers in separate buckets;
    # counters in memory, or shared in Redis with RATELIMIT_STORAGE_URI=redis://host:6379.
    "RATELIMIT_ENABLED": True,
    "CLIENT_RATE_LIMIT": "3000 per minute",
    "WORKER_RATE_LIMIT": "60000 per minute",
    "RATELIMIT_STORAGE_URI": "memory://",
    # Finished jobs older than this many days are deleted by the reaper (None/0: keep forever),
    # with per-kind overrides "echo=1,dub=30".
    "RETENTION_DAYS": None,
    "RETENTION_DAYS_BY_KIND": None,
    # On SIGTERM: finish in-flight requests for up to this long (new ones get 503), then exit.
    "SHUTDOWN_GRACE_SECONDS": 30.0,
    # --- object storage (README "Storage") ---
    # None: inputs and artifacts under DATA_DIR. "s3://bucket/prefix": an S3-compatible store
    # through boto3 (credentials from boto3's default chain); workers move results there directly.
    "STORAGE_URL": None,
    "S3_ENDPOINT_URL": None,  # None: AWS; e.g. https://<account>.r2.cloudflarestorage.com, MinIO
    "S3_REGION": None,  # None: AWS_REGION, else boto3's own (AWS_DEFAULT_REGION, ~/.aws/config)
    # How long a presigned URL works (workers ask for fresh ones when it runs out).
    "PRESIGN_TTL_SECONDS": 900.0,
    # Parts of a worker's multipart result upload (bigger for results over 1,000 parts).
    "S3_PART_SIZE_MB": 64,
    # --- live updates (README "Live updates (Server-Sent Events)") ---
    # Event streams open at once (each holds a request thread; None: THREADS // 4); past it 503.
    "MAX_EVENT_STREAMS": None,
    # ...of which one key may hold (None: half of MAX_EVENT_STREAMS, at least 1); past it 503.
    "MAX_EVENT_STREAMS_PER_KEY": None,
    "EVENT_HEARTBEAT_SECONDS": 15.0,  # a `: keepalive` comment on a quiet stream this often
    "EVENT_STREAM_MAX_SECONDS": 600.0,  # a stream then ends; the client reconnects and resumes
    # --- re-dub (README "Correct and re-dub") ---
    "MAX_REDUB_EDITS": 200,  # edited lines one POST /jobs/<id>/redub may carry
    "MAX_REDUB_TEXT_CHARS": 1000,  # characters of one edited line
    # --- edited summaries (README "Summaries and chapters") ---
    "MAX_SUMMARY_BYTES": 256 * 1024,  # body of one PUT /jobs/<id>/summary (at most 1 MB)
    "MAX_SUMMARY_POINTS": 20,  # key points of an edited summary
    "MAX_SUMMARY_CHAPTERS": 200,  # chapters of an edited summary
    "MAX_SUMMARY_TEXT_CHARS": 1000,  # characters of its title, a key point or a chapter title
    # --- the web app (README "Web app") ---
    # Signs the session cookie; None: generated once and kept in DATA_DIR/secret_key (0600).
    "SECRET_KEY": None,
    # A browser sign-in lasts this long (then the sign-in page again); a revoked key signs out at once.
    "WEB_SESSION_HOURS": 12.0,
    # How long a one-time sign-in link (`coordinator create-key --sign-in-link`) works.
    "SIGN_IN_LINK_MINUTES": 15.0,
    # Session cookie `Secure` flag: "auto" (when the request is HTTPS, directly or as told by a
    # proxy's X-Forwarded-Proto), "always" or "never".
    "SESSION_COOKIE_SECURE_MODE": "auto",
    # Pages fall back to polling every this many seconds when live events are unavailable.
    "WEB_POLL_SECONDS": 5.0,
    # --- the hot path (README "Performance") ---
    # An active API key is looked up again after this long (a revoked key works on other
    # replicas for at most this long; 0: look it up on every request).
    "KEY_CACHE_SECONDS": 2.0,
    # GET /health answers its last checks for this long (0: check the database and storage on
    # every call).
    "HEALTH_CACHE_SECONDS": 1.0,
    # Inputs up to this size travel inside the claim reply (no download round trip; 0: never).
    "INLINE_INPUT_KB": 64,
}


def _to_bool(value: str) -> bool:
    """Parse the usual spellings of a boolean environment variable."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "DUBFLEET_DATA_DIR": str,
    "DATABASE_URL": str,
    "AUTO_MIGRATE": _to_bool,
    "WORKER_API_KEY": str,
    "ADMIN_API_KEY": str,
    "MAX_UPLOAD_MB": int,
    "MAX_SUBTITLES_KB": int,
    "LEASE_SECONDS": float,
    "START_LEASE_SECONDS": float,
    "MAX_ATTEMPTS": int,
    "RETRY_BACKOFF_SECONDS": float,
    "RETRY_BACKOFF_CAP_SECONDS": float,
    "REAPER_INTERVAL": float,
    "COORDINATOR_THREADS": int,
    "MAX_CLAIM_WAITERS": int,
    "CLAIM_RECHECK_SECONDS": float,
    "REPLICA_NOTIFY": _to_bool,
    "CALLBACKS_ENABLED": _to_bool,
    "CALLBACK_TIMEOUT": float,
    "WEBHOOK_MAX_ATTEMPTS": int,
    "WEBHOOK_BACKOFF_SECONDS": float,
    "WEBHOOK_BACKOFF_CAP_SECONDS": float,
    "WEBHOOK_CONCURRENCY": int,
    "WEBHOOK_POLL_SECONDS": float,
    "WORKER_ONLINE_SECONDS": float,
    "ALLOW_PRIVATE_CALLBACKS": _to_bool,
    "MAX_SOURCE_MB": int,
    "MAX_LIST_LIMIT": int,
    "MAX_SEARCH_QUERY_CHARS": int,
    "MAX_INDEXED_TRANSCRIPT_MB": int,
    "CLIENT_MAX_INFLIGHT": int,
    "LIST_CONCURRENCY": int,
    "ORPHAN_GRACE_SECONDS": float,
    "ORPHAN_SWEEP_INTERVAL": float,
    "CONNECTION_LIMIT": int,
    "CHANNEL_TIMEOUT": float,
    "HEADER_TIMEOUT": float,
    "SHUTDOWN_GRACE_SECONDS": float,
    "RETENTION_DAYS": float,
    "RATELIMIT_ENABLED": _to_bool,
    "CLIENT_RATE_LIMIT": str,
    "WORKER_RATE_LIMIT": str,
    "RATELIMIT_STORAGE_URI": str,
    "RETENTION_DAYS_BY_KIND": str,
    "STORAGE_URL": str,
    "S3_ENDPOINT_URL": str,
    "AWS_REGION": str,
    "S3_REGION": str,  # after AWS_REGION: wins when both are set
    "PRESIGN_TTL_SECONDS": float,
    "S3_PART_SIZE_MB": int,
    "MAX_EVENT_STREAMS": int,
    "MAX_EVENT_STREAMS_PER_KEY": int,
    "EVENT_HEARTBEAT_SECONDS": float,
    "EVENT_STREAM_MAX_SECONDS": float,
    "MAX_REDUB_EDITS": int,
    "MAX_REDUB_TEXT_CHARS": int,
    "MAX_SUMMARY_BYTES": int,
    "MAX_SUMMARY_POINTS": int,
    "MAX_SUMMARY_CHAPTERS": int,
    "MAX_SUMMARY_TEXT_CHARS": int,
    "SECRET_KEY": str,
    "WEB_SESSION_HOURS": float,
    "SIGN_IN_LINK_MINUTES": float,
    "SESSION_COOKIE_SECURE_MODE": str,
    "WEB_POLL_SECONDS": float,
    "KEY_CACHE_SECONDS": float,
    "HEALTH_CACHE_SECONDS": float,
    "INLINE_INPUT_KB": int,
}

# Environment variable name -> config key, where they differ.
_ENV_TO_KEY = {"DUBFLEET_DATA_DIR": "DATA_DIR", "COORDINATOR_THREADS": "THREADS",
               "AWS_REGION": "S3_REGION"}


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the settings present in the environment, parsed to their types."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        raw = environ.get(name)
        if raw is None or (raw == "" and parse is not str):
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            raise ValueError(f"bad value for environment variable {name}: {exc}") from exc
        if value != "":
            found[_ENV_TO_KEY.get(name, name)] = value
    return found


def normalize_database_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg 3 driver (hosted databases hand out postgres://)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_url(data_dir: Path) -> str:
    """The default database: a SQLite file inside the data directory."""
    return f"sqlite:///{(data_dir / 'coordinator.db').resolve()}"


def _engine_options(url: str) -> dict[str, Any]:
    """Pool settings sized for a threaded server with long-polling workers."""
    if url.startswith("sqlite"):
        return {"pool_size": 16, "max_overflow": 48, "pool_timeout": 30,
                "connect_args": {"timeout": 30}}
    return {"pool_size": 10, "max_overflow": 30, "pool_timeout": 30, "pool_pre_ping": True}


def _check(config: dict[str, Any]) -> None:
    """Reject settings that would make the queue misbehave."""
    rules = {
        "MAX_UPLOAD_MB": config["MAX_UPLOAD_MB"] > 0,
        "MAX_SUBTITLES_KB": 0 < config["MAX_SUBTITLES_KB"] <= 5 * 1024,
        "LEASE_SECONDS": config["LEASE_SECONDS"] > 0,
        "START_LEASE_SECONDS": config["START_LEASE_SECONDS"] > 0,
        "MAX_ATTEMPTS": 1 <= config["MAX_ATTEMPTS"] <= 10,
        "RETRY_BACKOFF_SECONDS": config["RETRY_BACKOFF_SECONDS"] >= 0,
        "REAPER_INTERVAL": config["REAPER_INTERVAL"] > 0,
        "THREADS": config["THREADS"] >= 1,
        "MAX_CLAIM_WAITERS": config["MAX_CLAIM_WAITERS"] >= 0,
        "CLAIM_RECHECK_SECONDS": 0 < config["CLAIM_RECHECK_SECONDS"] <= 60,
        "MAX_SOURCE_MB": config["MAX_SOURCE_MB"] > 0,
        "CALLBACK_TIMEOUT": 0 < config["CALLBACK_TIMEOUT"] <= 300,
        "WEBHOOK_MAX_ATTEMPTS": 1 <= config["WEBHOOK_MAX_ATTEMPTS"] <= 30,
        "WEBHOOK_BACKOFF_SECONDS":
            0 <= config["WEBHOOK_BACKOFF_SECONDS"] <= config["WEBHOOK_BACKOFF_CAP_SECONDS"],
        "WEBHOOK_CONCURRENCY": 1 <= config["WEBHOOK_CONCURRENCY"] <= 64,
        "WEBHOOK_POLL_SECONDS": 0 < config["WEBHOOK_POLL_SECONDS"] <= 60,
        "MAX_LIST_LIMIT": config["MAX_LIST_LIMIT"] >= 1,
        "MAX_SEARCH_QUERY_CHARS": 1 <= config["MAX_SEARCH_QUERY_CHARS"] <= 10_000,
        "MAX_INDEXED_TRANSCRIPT_MB": config["MAX_INDEXED_TRANSCRIPT_MB"] > 0,
        "CLIENT_MAX_INFLIGHT": config["CLIENT_MAX_INFLIGHT"] >= 1,
        "LIST_CONCURRENCY": config["LIST_CONCURRENCY"] >= 1,
        "ORPHAN_GRACE_SECONDS": config["ORPHAN_GRACE_SECONDS"] >= 0,
        "ORPHAN_SWEEP_INTERVAL": config["ORPHAN_SWEEP_INTERVAL"] > 0,
        "CONNECTION_LIMIT": config["CONNECTION_LIMIT"] >= 1,
        "CHANNEL_TIMEOUT": config["CHANNEL_TIMEOUT"] > 0,
        "HEADER_TIMEOUT": config["HEADER_TIMEOUT"] > 0,
        "SHUTDOWN_GRACE_SECONDS": config["SHUTDOWN_GRACE_SECONDS"] >= 0,
        # SigV4 presigned URLs live at most 7 days; S3 parts are 5 MiB to 5 GiB.
        "PRESIGN_TTL_SECONDS": 1 <= config["PRESIGN_TTL_SECONDS"] <= 7 * 86400,
        "S3_PART_SIZE_MB": 5 <= config["S3_PART_SIZE_MB"] <= 5 * 1024,
        "MAX_EVENT_STREAMS": 0 <= config["MAX_EVENT_STREAMS"] < config["THREADS"],
        "MAX_EVENT_STREAMS_PER_KEY": config["MAX_EVENT_STREAMS_PER_KEY"] >= 1,
        "EVENT_HEARTBEAT_SECONDS": 0 < config["EVENT_HEARTBEAT_SECONDS"] <= 300,
        "EVENT_STREAM_MAX_SECONDS": config["EVENT_STREAM_MAX_SECONDS"] > 0,
        "MAX_REDUB_EDITS": 1 <= config["MAX_REDUB_EDITS"] <= 10000,
        "MAX_REDUB_TEXT_CHARS": 1 <= config["MAX_REDUB_TEXT_CHARS"] <= 100000,
        "MAX_SUMMARY_BYTES": 1024 <= config["MAX_SUMMARY_BYTES"] <= 1024 * 1024,
        "MAX_SUMMARY_POINTS": 1 <= config["MAX_SUMMARY_POINTS"] <= 1000,
        "MAX_SUMMARY_CHAPTERS": 1 <= config["MAX_SUMMARY_CHAPTERS"] <= 10000,
        "MAX_SUMMARY_TEXT_CHARS": 1 <= config["MAX_SUMMARY_TEXT_CHARS"] <= 100000,
        "WEB_SESSION_HOURS": 0 < config["WEB_SESSION_HOURS"] <= 24 * 365,
        "SIGN_IN_LINK_MINUTES": 0 < config["SIGN_IN_LINK_MINUTES"] <= 7 * 24 * 60,
        "SESSION_COOKIE_SECURE_MODE": config["SESSION_COOKIE_SECURE_MODE"] in ("auto", "always", "never"),
        "WEB_POLL_SECONDS": config["WEB_POLL_SECONDS"] >= 1,
        "KEY_CACHE_SECONDS": 0 <= config["KEY_CACHE_SECONDS"] <= 60,
        "HEALTH_CACHE_SECONDS": 0 <= config["HEALTH_CACHE_SECONDS"] <= 60,
        "INLINE_INPUT_KB": 0 <= config["INLINE_INPUT_KB"] <= 1024,
        "SECRET_KEY": config["SECRET_KEY"] is None or len(str(config["SECRET_KEY"])) >= 16,
    }
    if config["STORAGE_URL"]:
        from .storage import parse_storage_url
        parse_storage_url(config["STORAGE_URL"])  # raises ValueError naming what is wrong
    if config["RETENTION_DAYS"] is not None and config["RETENTION_DAYS"] < 0:
        rules["RETENTION_DAYS"] = False
    from .retention import parse_by_kind
    parse_by_kind(config["RETENTION_DAYS_BY_KIND"])  # raises ValueError with the bad entry
    from limits import parse_many
    for name in ("CLIENT_RATE_LIMIT", "WORKER_RATE_LIMIT"):
        try:
            parse_many(str(config[name]))
        except ValueError:
            rules[name] = False
    bad = [name for name, ok in rules.items() if not ok]
    if bad:
        raise ValueError(f"invalid coordinator settings: {', '.join(bad)}")


def _session_cookie(config: dict[str, Any]) -> None:
    """Flask's session settings for the web app (the Secure flag is decided per request)."""
    from datetime import timedelta
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(config["WEB_SESSION_HOURS"]))
    config.setdefault("SESSION_COOKIE_NAME", "dubfleet_session")
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"


def finalize(config: dict[str, Any]) -> dict[str, Any]:
    """Derive the dependent settings (paths, database URI, limits) in place and return them."""
    data_dir = Path(config["DATA_DIR"]).expanduser().resolve()
    config["DATA_DIR"] = str(data_dir)
    url = normalize_database_url(config["DATABASE_URL"] or sqlite_url(data_dir))
    config["DATABASE_URL"] = url
    config["SQLALCHEMY_DATABASE_URI"] = url
    options = _engine_options(url)
    options.update(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    if config["MAX_CLAIM_WAITERS"] is None:
        config["MAX_CLAIM_WAITERS"] = max(1, int(config["THREADS"]) - 4)
    if config["MAX_EVENT_STREAMS"] is None:
        config["MAX_EVENT_STREAMS"] = int(config["THREADS"]) // 4
    if config["MAX_EVENT_STREAMS_PER_KEY"] is None:
        config["MAX_EVENT_STREAMS_PER_KEY"] = max(1, int(config["MAX_EVENT_STREAMS"]) // 2)
    config["MAX_UPLOAD_BYTES"] = int(config["MAX_UPLOAD_MB"]) * MIB
    config["MAX_SUBTITLES_BYTES"] = int(config["MAX_SUBTITLES_KB"]) * 1024
    if config["MAX_SOURCE_MB"] is None:
        config["MAX_SOURCE_MB"] = int(config["MAX_UPLOAD_MB"])
    config["MAX_SOURCE_BYTES"] = int(config["MAX_SOURCE_MB"]) * MIB
    # Room for multipart framing; the exact file limit is enforced while streaming.
    config["MAX_CONTENT_LENGTH"] = config["MAX_UPLOAD_BYTES"] + config["MAX_SUBTITLES_BYTES"] + MIB
    _session_cookie(config)
    _check(config)
    return config


def build(test_config: Mapping[str, Any] | None = None,
          environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Layer defaults, environment and `test_config`, then derive the rest."""
    config = dict(DEFAULTS)
    config.update(from_env(environ))
    config.update(test_config or {})
    return finalize(config)
