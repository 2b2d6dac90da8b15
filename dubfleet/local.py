"""Run a local fleet: a `coordinator serve` process and `worker` processes on this machine.

Used by `make run`, the integration tests and the benchmarks.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.update(extra or {})
    return env


class Coordinator:
    """A `coordinator serve` subprocess on a free port with its own data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, threads: int = 32,
                 worker_key: str = "", admin_key: str = ""):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.threads = threads
        self.env = _env({"WORKER_API_KEY": worker_key, "ADMIN_API_KEY": admin_key,
                         "DUBFLEET_DATA_DIR": str(self.data_dir), **(env or {})})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "coordinator.log"

    def start(self, timeout: float = 30.0) -> "Coordinator":
        """Start the server and wait until /health answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [str(BIN / "coordinator"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--threads", str(self.threads), "--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_http(f"{self.url}/health", timeout, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL the server (no cleanup, like a crashed machine)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the server if it is running (e.g. SIGTERM to start its drain)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the server to exit and return its exit code (TimeoutExpired if it does not)."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def create_key(self, kind: str = "client", name: str = "test") -> str:
        """Create an API key with the real CLI and return it."""
        out = subprocess.run([str(BIN / "coordinator"), "create-key", "--kind", kind, "--name", name],
                             env=self.env, capture_output=True, text=True, check=True).stdout
        match = re.search(r"\bdf[wca]_[A-Za-z0-9_-]+", out)
        assert match, out
        return match.group(0)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200, failing early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start_worker(api_url: str, work_dir: Path, worker_id: str, *args: str,
                 env: dict[str, str] | None = None, api_key: str = "") -> subprocess.Popen:
    """Start a real `worker` process; its log goes to work_dir/<worker_id>.log."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = open(work_dir / f"{worker_id}.log", "ab")
    cmd = [str(BIN / "worker"), "--api-url", api_url, "--api-key", api_key,
           "--worker-id", worker_id, "--work-dir", str(work_dir / worker_id), *args]
    proc = subprocess.Popen(cmd, env=_env(env), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def stop_all(procs: list[subprocess.Popen], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to every live process and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
