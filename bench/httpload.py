"""A small closed-loop HTTP load generator: N keep-alive connections for a fixed time.

The same generator drives every server compared (Flask hello world, dubfleet endpoints), so its
own cost is the same on each side.
"""
from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """One request to repeat: method, path, headers, body, and the statuses that count as ok."""

    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    ok: tuple[int, ...] = (200,)
    bodies: tuple[bytes, ...] = ()  # when given, each request sends the next of these instead

    def body_at(self, n: int) -> bytes | None:
        """The body of request number `n` (on one connection)."""
        return self.bodies[n % len(self.bodies)] if self.bodies else self.body


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


class _Connection(http.client.HTTPConnection):
    """http.client's connection with TCP_NODELAY, as urllib3 (requests) and the worker set it:
    http.client sends a request's body as a second segment, which without it waits for the
    server's delayed ACK on a kept-alive connection (tens of ms per POST)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _loop(base: str, target: Target, deadline: float, tally: _Tally, start: int = 0) -> None:
    """Send `target` back to back on one connection until `deadline` (its bodies from `start`)."""
    parts = urlsplit(base)
    conn = _Connection(parts.hostname, parts.port, timeout=30)
    headers = {"Connection": "keep-alive", **target.headers}
    sent = start
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        sent += 1
        try:
            conn.request(target.method, target.path, body=target.body_at(sent), headers=headers)
            resp = conn.getresponse()
            resp.read()
            good = resp.status in target.ok
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = _Connection(parts.hostname, parts.port, timeout=30)
            good = False
        if good:
            tally.latencies.append(time.perf_counter() - t0)
        else:
            tally.errors += 1
    conn.close()


def run(base: str, target: Target, seconds: float = 3.0, connections: int = 8,
        warmup: float = 0.5) -> dict:
    """Requests/s, p50 and p99 (ms) and errors of `target` under `connections` parallel clients."""
    if warmup:
        _spawn(base, target, warmup, connections, [_Tally() for _ in range(connections)])
    tallies = [_Tally() for _ in range(connections)]
    elapsed = _spawn(base, target, seconds, connections, tallies)
    lat = sorted(x for t in tallies for x in t.latencies)
    errors = sum(t.errors for t in tallies)
    if not lat:
        return {"rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": errors}
    return {"rps": round(len(lat) / elapsed, 1), "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2), "errors": errors}


def _spawn(base: str, target: Target, seconds: float, connections: int, tallies: list[_Tally]) -> float:
    """Run the connection loops in threads; the wall time they took."""
    deadline = time.perf_counter() + seconds
    spread = max(1, len(target.bodies) // max(1, len(tallies)))  # connections send different bodies
    threads = [threading.Thread(target=_loop, args=(base, target, deadline, tally, n * spread), daemon=True)
               for n, tally in enumerate(tallies)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0


def median_of(rounds: list[dict]) -> dict:
    """The per-field median of several rounds' figures."""
    keys = rounds[0].keys()
    out = {}
    for key in keys:
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    return out

