"""moto's standalone S3 server for the integration tests, plus the one S3 rule moto skips.

`python -m tests.integration.s3server --port N [--log FILE]` serves moto's S3 on 127.0.0.1 (the
same WSGI app and request handler as `moto_server`). Wrapped around it:

- presigned URLs expire as on AWS: moto never looks at `X-Amz-Expires`, AWS answers a request
  past it with 403 AccessDenied "Request has expired" (the request body is read first, so the
  client always gets the reply);
- with --log, one JSON line per request (method, path, partNumber, status), so a test can see
  what reached the store and what was refused.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           b"<Message>Request has expired</Message></Error>")


def _drain(environ: dict[str, Any]) -> None:
    """Read the request body (so the client sees the reply instead of a reset connection)."""
    left = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            return
        left -= len(chunk)


def expired(query: dict[str, list[str]], now: float | None = None) -> bool:
    """True when a presigned request is past `X-Amz-Date` + `X-Amz-Expires`."""
    date, expires = query.get("X-Amz-Date"), query.get("X-Amz-Expires")
    if not date or not expires:
        return False
    signed = datetime.strptime(date[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    return (time.time() if now is None else now) > signed + int(expires[0])


class ExpiringUrls:
    """WSGI middleware: refuse expired presigned URLs, log every request."""

    def __init__(self, app: Callable, log_path: str | None):
        self.app, self.log_path = app, log_path
        self._lock = threading.Lock()

    def _log(self, environ: dict[str, Any], query: dict[str, list[str]], status: int) -> None:
        """Append one JSON line about a request."""
        if not self.log_path:
            return
        line = {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                "part": int(query["partNumber"][0]) if "partNumber" in query else None,
                "status": status, "at": time.time()}
        with self._lock, open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if expired(query):
            _drain(environ)
            self._log(environ, query, 403)
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(EXPIRED)))])
            return [EXPIRED]

        def logged(status: str, headers: list, exc_info: Any = None) -> Any:
            self._log(environ, query, int(status.split()[0]))
            return start_response(status, headers, exc_info)
        return self.app(environ, logged)


def main() -> None:
    """Serve moto's S3 with expiring presigned URLs until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", default=None, help="JSON lines about every request")
    args = parser.parse_args()
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                               create_backend_app)
    from werkzeug.serving import run_simple
    app = ExpiringUrls(DomainDispatcherApplication(create_backend_app), args.log)
    run_simple("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
