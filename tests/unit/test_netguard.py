"""SSRF protection: the address policy, the pinned guarded session, source downloads, callbacks.

Local servers stand in for the internet: one on 127.0.0.2 plays a *public* server (the guard in
those tests is the real policy except that it lets 127.0.0.2 through) and one on 127.0.0.1 plays
an internal service holding a secret. Host names come from a fake DNS (socket.getaddrinfo
patched), which can change its answers between lookups to act out DNS rebinding.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import requests

from coordinator.callbacks import callback_guard, post_delivery
from coordinator.errors import ValidationFailed
from coordinator.validation import parse_callback_url, parse_submission
from shared.netguard import AddressGuard, DisallowedAddress, UnsafeURL, address_problem, is_allowed
from shared.protocol import ClaimedJob
from shared.safehttp import MAX_REDIRECTS, GuardedSession
from worker.client import CoordinatorClient
from worker.errors import PermanentJobError
from worker.safefetch import source_limit
from worker.transfer import TransferTooLarge, fetch_resumable

MIB = 1024 * 1024
PUBLIC_IP = "127.0.0.2"  # stands in for a public server (see PretendPublic)
REAL_GETADDRINFO = socket.getaddrinfo


# -- the address policy ---------------------------------------------------------------------

@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("10.255.255.254", "private"),
    ("172.16.0.1", "private"), ("172.31.255.1", "private"),
    ("192.168.0.1", "private"), ("192.168.255.254", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "broadcast"),
    ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"), ("fec0::1", "site-local"),
    ("192.0.2.1", "private"), ("198.18.0.1", "private"),
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1, private"),
    ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254, link-local"),
    ("::127.0.0.1", "IPv4-compatible 127.0.0.1, loopback"),
    ("2002:7f00:1::", "6to4 127.0.0.1, loopback"), ("2002:c0a8:101::1", "6to4 192.168.1.1, private"),
    ("64:ff9b::a00:1", "NAT64 10.0.0.1, private"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo 192.0.2.45, private"),
])
def test_refused_addresses(address, reason):
    assert address_problem(address) == reason
    assert not is_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1",
                                     "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert address_problem(address) is None and is_allowed(address)


@dataclass
class FakeDNS:
    """Host name -> addresses; a callable answer may change between lookups. Counts lookups."""

    names: dict[str, list[str] | Callable[[], list[str]]] = field(default_factory=dict)
    lookups: dict[str, int] = field(default_factory=dict)

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.names:
            return REAL_GETADDRINFO(host, port, family, type, proto, flags)
        self.lookups[name] = self.lookups.get(name, 0) + 1
        answer = self.names[name]
        addresses = answer() if callable(answer) else answer
        infos = []
        for address in addresses:
            infos += REAL_GETADDRINFO(address, port, 0, socket.SOCK_STREAM)
        return infos


@pytest.fixture
def dns(monkeypatch) -> FakeDNS:
    """A fake DNS behind socket.getaddrinfo (other names still resolve for real)."""
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def test_every_resolved_address_is_checked(dns):
    guard = AddressGuard(label="source_url", hint="start the worker with --allow-private-urls")
    dns.names["mixed.test"] = ["8.8.8.8", "10.1.2.3"]
    dns.names["mixed2.test"] = ["192.168.7.7", "8.8.8.8"]
    dns.names["public.test"] = ["8.8.8.8", "2606:4700::1"]
    with pytest.raises(DisallowedAddress) as caught:
        guard.resolve("mixed.test", 80)
    message = str(caught.value)
    assert message == ("source_url host mixed.test resolves to 10.1.2.3 (private), which is not "
                       "allowed; start the worker with --allow-private-urls")
    with pytest.raises(DisallowedAddress, match="192.168.7.7 \\(private\\)"):
        guard.resolve("mixed2.test", 80)
    assert {info[4][0] for info in guard.resolve("public.test", 80)} == {"8.8.8.8", "2606:4700::1"}


def test_literals_localhost_and_allow_private(dns):
    guard = AddressGuard(label="callback_url")
    with pytest.raises(DisallowedAddress, match=r"^callback_url address 127.0.0.1 \(loopback\) is not"):
        guard.resolve("127.0.0.1", 80)
    with pytest.raises(DisallowedAddress, match="::1 \\(loopback\\)"):
        guard.resolve("[::1]", 80)
    for name in ("localhost", "LOCALHOST.", "api.localhost"):
        dns.names[name] = ["8.8.8.8"]  # even a lying resolver cannot make these public
        with pytest.raises(DisallowedAddress, match="localhost name"):
            guard.resolve(name, 80)
        assert name not in dns.lookups, "localhost names are refused before any lookup"
    lab = AddressGuard(allow_private=True)
    assert lab.resolve("127.0.0.1", 80)[0][4][0] == "127.0.0.1"
    dns.names["nas.lan"] = ["192.168.1.20"]
    assert lab.resolve("nas.lan", 80)[0][4][0] == "192.168.1.20"


def test_schemes_and_unresolvable_hosts(dns):
    guard = AddressGuard(label="source_url")
    for url in ("ftp://8.8.8.8/x", "file:///etc/passwd", "gopher://8.8.8.8/", "//8.8.8.8/x"):
        with pytest.raises(UnsafeURL, match="only http and https"):
            guard.check_url(url)
    guard.check_url("https://nowhere.invalid/x", unresolvable_ok=True)
    with pytest.raises(socket.gaierror):
        guard.check_url("https://nowhere.invalid/x")


# -- local servers ----------------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


class Handler(BaseHTTPRequestHandler):
    """Hands each request to the server's route for its path (404 otherwise)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        if self.command == "POST":
            self.server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            return send(self, 404, b"no such page")
        route(self)

    do_POST = do_GET


def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
         headers: dict[str, str] | None = None) -> None:
    """A complete reply with a Content-Length."""
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def redirect(location: str, status: int = 302) -> Route:
    """A route that redirects to `location`."""
    return lambda h: send(h, status, b"", {"Location": location})


def chunked(data: bytes, chunk: int = 256 * 1024) -> Route:
    """A route that streams `data` with chunked encoding (no Content-Length)."""
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for i in range(0, len(data), chunk):
                part = data[i:i + chunk]
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up once it had enough
            h.close_connection = True
    return route


@pytest.fixture
def serve():
    """Factory: `serve(address, port=0, routes)` starts a server; all are stopped at teardown."""
    started: list[ThreadingHTTPServer] = []

    def start(address: str, routes: dict[str, Route], port: int = 0,
              tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer((address, port), Handler)
        httpd.daemon_threads = True
        httpd.routes, httpd.seen, httpd.bodies = routes, [], []
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        httpd.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def secret(serve) -> ThreadingHTTPServer:
    """An internal service on loopback that must never be reached."""
    return serve("127.0.0.1", {"/secret": lambda h: send(h, 200, b"TOP-SECRET")})


class PretendPublic(AddressGuard):
    """The real policy, except that 127.0.0.2 counts as a public address."""

    def check_address(self, host: str, address: str) -> None:
        if address != PUBLIC_IP:
            super().check_address(host, address)


def public_session() -> GuardedSession:
    """A guarded session under the real policy, with 127.0.0.2 as the public internet."""
    return GuardedSession(PretendPublic(label="source_url"))


# -- the guarded session: redirects -----------------------------------------------------------

@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/secret", "http://localhost:{port}/secret",
    "http://[::ffff:127.0.0.1]:{port}/secret", "http://intranet.test:{port}/secret",
])
def test_redirect_hop_to_a_refused_address_is_refused(serve, secret, dns, target):
    dns.names["public.test"] = [PUBLIC_IP]
    dns.names["intranet.test"] = ["127.0.0.1"]
    location = target.format(port=secret.port)
    public = serve(PUBLIC_IP, {"/start": redirect(location)})
    with public_session() as session, pytest.raises(DisallowedAddress) as caught:
        session.get(f"http://public.test:{public.port}/start", timeout=5)
    assert "127.0.0.1" in str(caught.value) or "localhost name" in str(caught.value)
    assert [p for _, p, _ in public.seen] == ["/start"]
    assert secret.seen == [], "the internal service must not even see a connection's request"


def test_redirect_to_another_scheme_is_refused(serve, dns):
    dns.names["public.test"] = [PUBLIC_IP]
    public = serve(PUBLIC_IP, {"/start": redirect("file:///etc/passwd")})
    with public_session() as session, pytest.raises(UnsafeURL, match="'file' is not allowed"):
        session.get(f"http://public.test:{public.port}/start", timeout=5)


def test_public_redirects_are_followed_up_to_the_cap(serve, dns):
    dns.names["public.test"] = [PUBLIC_IP]
    routes: dict[str, Route] = {"/final": lambda h: send(h, 200, b"video bytes")}
    for i in range(MAX_REDIRECTS):
        routes[f"/hop{i}"] = redirect(f"/hop{i + 1}" if i + 1 < MAX_REDIRECTS else "/final", 301)
    routes["/loop"] = redirect("/loop", 307)
    public = serve(PUBLIC_IP, routes)
    base = f"http://public.test:{public.port}"
    with public_session() as session:
        reply = session.get(f"{base}/hop0", timeout=5)
        assert reply.content == b"video bytes" and len(reply.history) == MAX_REDIRECTS
        public.seen.clear()
        with pytest.raises(requests.TooManyRedirects):
            session.get(f"{base}/loop", timeout=5)
    assert len(public.seen) == MAX_REDIRECTS + 1, "the first request plus 5 followed hops"


def test_a_redirect_body_is_never_read(serve, dns):
    dns.names["public.test"] = [PUBLIC_IP]
    release = threading.Event()

    def endless_redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", "/final")
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        h.wfile.write(b"x" * 1024)
        h.wfile.flush()
        release.wait(10)  # a body that never arrives
        h.close_connection = True

    public = serve(PUBLIC_IP, {"/start": endless_redirect,
                               "/final": lambda h: send(h, 200, b"done")})
    started = time.monotonic()
    try:
        with public_session() as session:
            reply = session.get(f"http://public.test:{public.port}/start", timeout=(2, 4))
    finally:
        release.set()
    assert reply.content == b"done" and time.monotonic() - started < 2


def test_environment_proxies_are_ignored_and_explicit_ones_refused(serve, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    site = serve("127.0.0.1", {"/": lambda h: send(h, 200, b"direct")})
    with GuardedSession(AddressGuard(allow_private=True)) as session:
        assert session.trust_env is False and session.max_redirects == MAX_REDIRECTS
        assert session.get(f"http://127.0.0.1:{site.port}/", timeout=5).content == b"direct"
        with pytest.raises(UnsafeURL, match="proxies"):
            session.get(f"http://127.0.0.1:{site.port}/", timeout=5,
                        proxies={"http": "http://127.0.0.1:9"})


# -- the guarded session: pinning -------------------------------------------------------------

def test_dns_rebinding_is_defeated_by_checking_the_connected_address(serve, secret, dns):
    """A name answers a public address, then loopback: only the checked address is used."""
    harmless = serve(PUBLIC_IP, {"/secret": lambda h: send(h, 200, b"public page")},
                     port=secret.port)
    answers = iter([[PUBLIC_IP]])
    dns.names["rebind.test"] = lambda: next(answers, ["127.0.0.1"])
    url = f"http://rebind.test:{secret.port}/secret"
    guard = PretendPublic(label="source_url")

    # The attack is real: check the name, then let a plain client resolve it again.
    guard.resolve("rebind.test", secret.port)
    with requests.Session() as plain:
        plain.trust_env = False
        assert plain.get(url, timeout=5).content == b"TOP-SECRET"
    assert len(secret.seen) == 1
    secret.seen.clear()

    # The guarded session resolves once per connection and connects to what it checked.
    answers = iter([[PUBLIC_IP]])
    dns.lookups.clear()
    with GuardedSession(guard) as session:
        assert session.get(url, timeout=5).content == b"public page"
        assert session.get(url, timeout=5).content == b"public page"  # same pinned connection
        assert dns.lookups == {"rebind.test": 1}
        session.close()  # drop the connection: the next one resolves and checks again
        with pytest.raises(DisallowedAddress, match="rebind.test resolves to 127.0.0.1"):
            session.get(url, timeout=5)
        assert dns.lookups == {"rebind.test": 2}
    assert secret.seen == [] and len(harmless.seen) == 2


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for the name public.test only (no IP in it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=public.test",
                    "-addext", "subjectAltName=DNS:public.test"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_verifies_the_host_name_not_the_pinned_ip(serve, dns, tls_files):
    cert, key = tls_files
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    site = serve(PUBLIC_IP, {"/": lambda h: send(h, 200, b"over tls")}, tls=context)
    dns.names["public.test"] = [PUBLIC_IP]
    with public_session() as session:
        reply = session.get(f"https://public.test:{site.port}/", timeout=5, verify=str(cert))
        assert reply.content == b"over tls" and names == ["public.test"]
        with pytest.raises(requests.exceptions.SSLError):  # the cert names public.test, not the IP
            session.get(f"https://{PUBLIC_IP}:{site.port}/", timeout=5, verify=str(cert))


# -- worker: source downloads -----------------------------------------------------------------

def claimed(url: str, max_source_bytes: int | None = None) -> ClaimedJob:
    """A claimed source_url job."""
    return ClaimedJob(job_id="j1", kind="echo", lease_token="tok", lease_expires_at=time.time() + 60,
                      attempt=1, max_attempts=3, heartbeat_interval=5.0, source_url=url,
                      max_source_bytes=max_source_bytes)


def client(sleeps: list[float] | None = None, **kw) -> CoordinatorClient:
    """A CoordinatorClient that records its retry sleeps instead of sleeping."""
    record = sleeps.append if sleeps is not None else (lambda s: None)
    return CoordinatorClient("http://coordinator.invalid", "dfw_key", "s1", sleep=record, **kw)


def test_source_on_loopback_fails_permanently_at_once(secret, tmp_path):
    sleeps: list[float] = []
    dest = tmp_path / "input.bin"
    with pytest.raises(PermanentJobError) as caught:
        client(sleeps).download_input(claimed(f"http://127.0.0.1:{secret.port}/secret"), dest)
    assert str(caught.value) == ("source_url address 127.0.0.1 (loopback) is not allowed; "
                                 "start the worker with --allow-private-urls to allow private "
                                 "addresses")
    assert sleeps == [] and secret.seen == [] and not dest.exists()


def test_source_redirect_loop_fails_permanently(serve, tmp_path):
    site = serve("127.0.0.1", {"/loop": redirect("/loop")})
    sleeps: list[float] = []
    with pytest.raises(PermanentJobError, match="redirected more than 5 times"):
        client(sleeps, allow_private_urls=True).download_input(
            claimed(f"http://127.0.0.1:{site.port}/loop"), tmp_path / "input.bin")
    assert sleeps == [] and len(site.seen) == MAX_REDIRECTS + 1


DATA = bytes(range(256)) * (3 * MIB // 256)


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
def test_source_over_the_cap_fails_and_leaves_no_file(serve, tmp_path, path):
    site = serve("127.0.0.1", {"/sized": lambda h: send(h, 200, DATA), "/chunked": chunked(DATA)})
    dest = tmp_path / "input.bin"
    sleeps: list[float] = []
    worker = client(sleeps, allow_private_urls=True)
    with pytest.raises(PermanentJobError) as caught:
        worker.download_input(claimed(f"http://127.0.0.1:{site.port}{path}", MIB), dest)
    assert str(caught.value) == "source_url is larger than the 1 MB limit (MAX_SOURCE_MB)"
    assert not dest.exists() and sleeps == []
    small = client(allow_private_urls=True, max_source_bytes=2 * MIB)
    with pytest.raises(PermanentJobError, match=r"the 2 MB limit \(worker --max-source-mb\)"):
        small.download_input(claimed(f"http://127.0.0.1:{site.port}{path}", 3 * MIB), dest)
    assert not dest.exists()
    exact = client(allow_private_urls=True)
    exact.download_input(claimed(f"http://127.0.0.1:{site.port}{path}", len(DATA)), dest)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(DATA).digest()


def test_fetch_resumable_cap_is_generic(serve, tmp_path):
    site = serve("127.0.0.1", {"/chunked": chunked(DATA)})
    dest = tmp_path / "x.bin"
    with requests.Session() as session, pytest.raises(TransferTooLarge) as caught:
        fetch_resumable(session, f"http://127.0.0.1:{site.port}/chunked", dest,
                        max_bytes=MIB + 1, sleep=lambda s: None)
    assert caught.value.limit == MIB + 1 and caught.value.size is None and not dest.exists()
    with requests.Session() as session:
        fetch_resumable(session, f"http://127.0.0.1:{site.port}/chunked", dest, max_bytes=None)
    assert dest.stat().st_size == len(DATA)


def test_source_limit_takes_the_smaller_cap():
    assert source_limit(2048 * MIB, 5 * MIB) == (5 * MIB, "MAX_SOURCE_MB")
    assert source_limit(MIB, 5 * MIB) == (MIB, "worker --max-source-mb")
    assert source_limit(MIB, None) == (MIB, "worker --max-source-mb")
    assert source_limit(None, None) == (None, "worker --max-source-mb")


# -- coordinator: callbacks -------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8000/hook", "address 127.0.0.1 (loopback)"),
    ("http://[::1]/hook", "address ::1 (loopback)"),
    ("https://10.0.0.8/hook", "address 10.0.0.8 (private)"),
    ("http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 (link-local)"),
    ("http://localhost:5000/hook", "host localhost is a localhost name"),
    ("http://admin.localhost/hook", "host admin.localhost is a localhost name"),
    ("https://hooks.test/x", "host hooks.test resolves to 192.168.3.4 (private)"),
    ("http://2130706433/hook", "host 2130706433 resolves to 127.0.0.1 (loopback)"),
])
def test_submit_refuses_private_callbacks(dns, url, shown):
    dns.names["hooks.test"] = ["8.8.8.8", "192.168.3.4"]
    with pytest.raises(ValidationFailed) as caught:
        parse_submission({"kind": "echo", "callback_url": url}, 3)
    assert caught.value.extra == {"field": "callback_url"}
    assert shown in str(caught.value) and "ALLOW_PRIVATE_CALLBACKS=1" in str(caught.value)
    job = parse_submission({"kind": "echo", "callback_url": url}, 3, allow_private_callbacks=True)
    assert job.callback_url == url


def test_submit_accepts_public_and_unresolvable_callbacks(dns):
    dns.names["hooks.example"] = ["93.184.216.34", "2606:2800:220:1::1"]
    assert parse_callback_url("https://hooks.example/x") == "https://hooks.example/x"
    assert parse_callback_url("https://nowhere.invalid/x") == "https://nowhere.invalid/x"
    with pytest.raises(ValidationFailed, match="http"):
        parse_callback_url("ftp://hooks.example/x")


def _deliver(allow_private: bool, url: str, body: bytes = b'{"job_id": "job-1"}'):
    """One webhook delivery attempt (coordinator.callbacks) under the callback address policy."""
    return post_delivery(callback_guard(allow_private), url, "d1", "job.completed", body, None, 5.0)


def test_callback_to_a_name_now_private_is_not_sent(serve, dns):
    hook = serve("127.0.0.1", {"/done": lambda h: send(h, 204)})
    dns.names["hooks.test"] = ["127.0.0.1"]  # was public at submit time, rebound since
    refused = _deliver(False, f"http://hooks.test:{hook.port}/done")
    assert hook.seen == []
    assert not refused.ok and refused.final  # retrying cannot help: the delivery fails at once
    assert "callback_url host hooks.test resolves to 127.0.0.1 (loopback)" in refused.error

    sent = _deliver(True, f"http://hooks.test:{hook.port}/done", b'{"job_id": "job-2"}')
    assert sent.ok and sent.http_status == 204
    assert [(m, p) for m, p, _ in hook.seen] == [("POST", "/done")]
    assert hook.bodies == [b'{"job_id": "job-2"}']
    assert "X-API-Key" not in hook.seen[0][2]


def test_callbacks_never_follow_redirects(serve):
    other = serve("127.0.0.1", {"/other": lambda h: send(h, 204)})
    hook = serve("127.0.0.1", {"/done": redirect(f"http://127.0.0.1:{other.port}/other", 307)})
    outcome = _deliver(True, f"http://127.0.0.1:{hook.port}/done")
    assert len(hook.seen) == 1 and other.seen == []
    assert not outcome.ok and outcome.http_status == 307  # a redirect is a failed attempt
