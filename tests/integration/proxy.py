"""A small HTTP reverse proxy for fault injection: it can cut the reply of chosen requests.

The request still reaches the coordinator and takes effect; only its reply is lost on the way
back, as when a network drops a connection at the worst moment.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import requests

# (method, path, query) -> True to drop this reply.
Cutter = Callable[[str, str, str], bool]
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CuttingProxy:
    """Forwards to `upstream`; replies for which `cut(method, path, query)` is true are dropped."""

    def __init__(self, upstream: str, cut: Cutter):
        self.upstream = upstream.rstrip("/")
        self.cut = cut
        self.cuts: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "CuttingProxy":
        """Serve in a background thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if length and len(body or b"") < length:  # the client gave up mid-body
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                path, _, query = self.path.partition("?")
                upstream = requests.request(self.command, proxy.upstream + self.path, data=body,
                                            headers=headers, timeout=60, allow_redirects=False)
                if upstream.status_code < 300 and proxy.cut(self.command, path, query):
                    with proxy.lock:
                        proxy.cuts.append(f"{self.command} {self.path}")
                    self.close_connection = True  # the reply is lost: close without a byte
                    return
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

        return Handler
