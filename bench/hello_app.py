"""The framework floor: Flask's hello world on dubfleet's own waitress stack and settings.

Run: `python bench/hello_app.py PORT THREADS` (started by bench/bench_peers.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def hello_app() -> Flask:
    """Flask's hello world."""
    hello = Flask("hello")

    @hello.get("/")
    def index() -> str:
        return "Hello, World!"

    return hello


def serve_hello(port: int, threads: int) -> None:
    """Serve hello_app through coordinator.serving with the coordinator's default settings."""
    from coordinator import serving
    settings = serving.ServeSettings(host="127.0.0.1", port=port, threads=threads, connection_limit=1000,
                                     channel_timeout=120.0, header_timeout=10.0, shutdown_grace=1.0,
                                     max_body=1 << 20)
    serving.serve(hello_app(), settings)


if __name__ == "__main__":
    serve_hello(int(sys.argv[1]), int(sys.argv[2]))
