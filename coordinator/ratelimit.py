"""Per-key rate limits (Flask-Limiter): client and worker calls in separate buckets.

Every API key has its own budget per scope: `CLIENT_RATE_LIMIT` for the client endpoints,
`WORKER_RATE_LIMIT` for the worker protocol (a separate bucket, so clients can never throttle a
fleet). Requests without a key count against their address. Past a limit the reply is JSON 429
`too_many_requests` with `Retry-After`. Counters live in memory by default (one process) or in
Redis with `RATELIMIT_STORAGE_URI=redis://host:6379` (several replicas share them).
"""
from __future__ import annotations

import hashlib
import logging
import math
import time

from flask import Blueprint, Flask, Response, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded

from shared.errors import error_payload
from shared.protocol import API_KEY_HEADER

logger = logging.getLogger(__name__)


def _bucket_key() -> str:
    """The caller's bucket: a digest of its API key (never the key), else its address."""
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return "addr:" + (request.remote_addr or "-")


def _exceeded(limiter: Limiter):
    """The JSON 429 for a spent budget, with Retry-After until the window frees a request."""
    def handle(exc: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        wait = max(1, math.ceil(current.reset_at - time.time())) if current is not None else 1
        response = jsonify(error_payload("too_many_requests",
                                         f"rate limit of {exc.limit.limit} for this API key reached; "
                                         f"retry in {wait} s"))
        response.status_code = 429
        response.headers["Retry-After"] = str(wait)
        return response
    return handle


def init_rate_limits(app: Flask, client: Blueprint, worker: Blueprint, exempt: Blueprint) -> Limiter | None:
    """Attach the limiter with one limit per blueprint scope (None when disabled)."""
    if not app.config["RATELIMIT_ENABLED"]:
        return None
    limiter = Limiter(_bucket_key, app=app, storage_uri=app.config["RATELIMIT_STORAGE_URI"],
                      strategy="moving-window", key_prefix="dubfleet",
                      swallow_errors=True)  # a storage outage must not take the API down
    app.register_error_handler(RateLimitExceeded, _exceeded(limiter))
    # shared: one budget for all the routes of a scope (a plain limit would count per route)
    limiter.shared_limit(app.config["CLIENT_RATE_LIMIT"], scope="client")(client)
    limiter.shared_limit(app.config["WORKER_RATE_LIMIT"], scope="worker")(worker)
    limiter.exempt(exempt)
    logger.info("rate limits: clients %s, workers %s per key (%s)", app.config["CLIENT_RATE_LIMIT"],
                app.config["WORKER_RATE_LIMIT"], app.config["RATELIMIT_STORAGE_URI"].split("@")[-1])
    return limiter
