"""The worker's HTTP session to the coordinator, with a lean path for its small calls.

A tiny job costs a worker one call (the completing upload that also claims the next job). Sent
through requests, that call spends about 1 ms of the worker's CPU in requests and urllib3
(request preparation, adapters, the pool, response wrapping), several times what the bytes
need. `Wire` sends such a call on a kept-alive socket of its own instead (the request written
in one send, the reply read by http.client's parser): small bodies (JSON or bytes in memory) to
the coordinator's own address, no redirects, no streaming, and only where requests would add
nothing: no proxy applies to the coordinator's address and ~/.netrc has no
credentials for it. Certificates are checked against the same CA bundle requests would use
(REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's). Everything else (downloads, streamed
uploads, redirects to object storage, a coordinator behind a proxy) goes through requests.

One session (and wire) per thread; `CoordinatorClient` pools them.
"""
from __future__ import annotations

import http.client
import json as jsonlib
import logging
import os
import re
import select
import socket
import ssl
from http.cookies import CookieError, SimpleCookie
from typing import Any, Union
from urllib.parse import urlencode, urlsplit

import requests
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, get_netrc_auth

logger = logging.getLogger(__name__)

LEAN_ARGS = frozenset({"json", "data", "params", "headers"})
_BAD_HEADER = re.compile(r"[\r\n\0]")


class WireError(OSError):
    """A lean call that got no complete reply (connection refused, reset, timed out)."""


class _Sent:
    """What `raise_for_reply` reads of the request behind a reply."""

    def __init__(self, method: str):
        self.method = method


class Reply:
    """A complete reply read by `Wire`: the part of `requests.Response` the client reads."""

    def __init__(self, method: str, url: str, status: int, reason: str,
                 headers: list[tuple[str, str]], content: bytes):
        self.request, self.url = _Sent(method), url
        self.status_code, self.reason, self.content = status, reason, content
        self.headers = CaseInsensitiveDict(headers)

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return jsonlib.loads(self.content)


AnyReply = Union[Reply, requests.Response]


def _ssl_context() -> ssl.SSLContext:
    """Verification as requests does it: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (a file or a
    folder), else certifi's bundle."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") \
        or DEFAULT_CA_BUNDLE_PATH
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _timeouts(timeout: Any) -> tuple[float, float]:
    """requests' (connect, read) timeout, or one number for both."""
    if isinstance(timeout, tuple):
        return float(timeout[0]), float(timeout[1])
    return float(timeout), float(timeout)


class Wire:
    """One kept-alive HTTP/1.1 connection to the coordinator; one thread at a time.

    A request goes out in one `sendall` (head and small body together, TCP_NODELAY as urllib3
    sets it): http.client sends the body in a second segment, which costs the server a second
    read and can wait out a delayed ACK. The reply is read by http.client's parser."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.netloc = parts.netloc
        self.base = f"{parts.scheme}://{parts.netloc}/"
        self._sock: socket.socket | None = None

    def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
             timeout: Any) -> Reply:
        """Send one request and read its whole reply; WireError when none comes back."""
        connect_timeout, read_timeout = _timeouts(timeout)
        message = self._message(method, url, body, headers)
        try:
            sock = self._connection(connect_timeout)
            sock.settimeout(read_timeout)
            sock.sendall(message)
            resp = http.client.HTTPResponse(sock, method=method)
            try:
                resp.begin()
                content = resp.read()
            finally:
                resp.close()  # its reader only: the socket stays open
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise WireError(f"{type(exc).__name__}: {exc}") from exc
        if resp.will_close:
            self.close()
        return Reply(method, url, resp.status, resp.reason, resp.getheaders(), content)

    def _message(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        """The request's bytes: request line, Host, headers (with the body's length), body."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.netloc}"]
        for name, value in headers.items():
            if name.lower() in ("host", "content-length"):
                continue
            if _BAD_HEADER.search(f"{name}{value}"):
                raise ValueError(f"header {name!r} has a line break in it")
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def _connection(self, connect_timeout: float) -> socket.socket:
        """The open connection, or a new one when there is none or the coordinator closed it
        while it was idle (readable when idle means closed: a reply is never unasked for)."""
        sock = self._sock
        if sock is not None:
            if not _readable(sock):
                return sock
            self.close()
        sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.https:
            try:
                sock = _ssl_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        return sock

    def close(self) -> None:
        """Close the connection (the next call opens another)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _readable(sock: socket.socket) -> bool:
    """Whether the socket has something to read right now (poll: no limit on the fd number)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def lean_allowed(base_url: str) -> bool:
    """Whether calls to the coordinator at `base_url` may skip requests: plain http(s), no
    proxy that requests would use for it, no ~/.netrc credentials it would send."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return False
    if get_environ_proxies(base_url):
        return False
    return get_netrc_auth(base_url) is None


class CoordinatorSession(requests.Session):
    """A requests session that reads the proxy and CA-bundle environment (and ~/.netrc) once per
    scheme and host instead of on every request (os.environ is scanned for proxies each time
    otherwise), prepares a request without the per-call merging of settings this client never
    uses (cookies, auth, hooks, session params), and sends small calls on its `wire` when
    `lean` (see the module docstring)."""

    def __init__(self, base_url: str, lean: bool) -> None:
        super().__init__()
        self._env_settings: dict[tuple[str, str, Any], dict[str, Any]] = {}
        self._netrc: dict[tuple[str, str], Any] = {}
        self.lean = lean
        self.wire = Wire(base_url)

    def call(self, method: str, url: str, timeout: Any, **kwargs: Any) -> AnyReply:
        """Send one request: on the wire when it is a small call and nothing needs requests,
        else through requests. Connection failures raise WireError or RequestException."""
        if not self.lean or not LEAN_ARGS.issuperset(kwargs) or len(self.cookies) \
                or not isinstance(kwargs.get("data") or b"", bytes) or not url.startswith(self.wire.base):
            return self.request(method, url, timeout=timeout, **kwargs)
        body, headers = self._lean_body(kwargs)
        query = _query_string(kwargs.get("params") or {})
        if query:
            url += ("&" if "?" in url else "?") + query
        reply = self.wire.send(method.upper(), url, body, headers, timeout)
        if "Set-Cookie" in reply.headers:
            self._keep_cookies(reply)
        return reply

    def _lean_body(self, kwargs: dict[str, Any]) -> tuple[bytes | None, dict[str, str]]:
        """The body and headers of a wire call, as requests would send them."""
        headers = self._merged_headers(kwargs.get("headers"))
        body = kwargs.get("data")
        if body is None and kwargs.get("json") is not None:
            body = jsonlib.dumps(kwargs["json"], allow_nan=False).encode()
            headers.setdefault("Content-Type", "application/json")
        return body, dict(headers)  # the wire adds Content-Length (0 for a bodiless POST)

    def _keep_cookies(self, reply: Reply) -> None:
        """A reply that sets a cookie: keep it and send later calls through requests, which
        sends cookies back (the coordinator sets none; a proxy in front of it might)."""
        host = urlsplit(reply.url).hostname or ""
        try:
            cookie = SimpleCookie(reply.headers["Set-Cookie"])
        except CookieError:
            logger.warning("ignoring an unreadable Set-Cookie from %s", host)
            return
        for name, morsel in cookie.items():
            self.cookies.set(name, morsel.value, domain=host, path=morsel["path"] or "/")

    def close(self) -> None:
        """Close the wire and requests' pooled connections."""
        self.wire.close()
        super().close()

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """requests' prepare_request, made directly when nothing needs merging but the headers.

        The coordinator sets no cookies and the client sends no auth, hooks or non-dict query:
        with any of them it takes requests' own path. requests' merge costs about 0.1 ms a call
        (cookie jars built and copied, runtime Protocol isinstance checks on every mapping)."""
        if not self._plain(request):
            return super().prepare_request(request)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(request.method)
        prepared.prepare_url(request.url, _query_string(request.params))
        prepared.prepare_headers(self._merged_headers(request.headers))
        # What prepare_cookies does with an empty jar, less working out that it adds no header.
        prepared._cookies = RequestsCookieJar()
        prepared.prepare_body(request.data, request.files, request.json)
        prepared.prepare_auth(self._netrc_auth(request.url) if self.trust_env else None,
                              request.url)
        prepared.prepare_hooks(request.hooks)
        return prepared

    def _plain(self, request: requests.Request) -> bool:
        """Whether `request` needs nothing from the session but its headers (and ~/.netrc)."""
        return (not request.cookies and not len(self.cookies) and request.auth is None
                and self.auth is None and not self.params and isinstance(request.params, dict)
                and isinstance(request.url, str) and not any(self.hooks.values()))

    def _merged_headers(self, headers: Any) -> CaseInsensitiveDict:
        """The session's headers with the request's on top; None values drop a header."""
        merged = CaseInsensitiveDict(self.headers)
        if headers:
            merged.update(headers)
        for name in [name for name, value in merged.items() if value is None]:
            del merged[name]
        return merged

    def _netrc_auth(self, url: str) -> Any:
        """~/.netrc credentials for the URL's host, looked up once per scheme and host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._netrc:
            self._netrc[key] = get_netrc_auth(url)
        return self._netrc[key]

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[override]
        """requests' merge, cached for the calls that pass no settings of their own."""
        if proxies or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream)
        settings = self._env_settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._env_settings) < 256:
                self._env_settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


def _query_string(params: dict) -> str | None:
    """A query dict encoded as requests encodes it (None values left out, lists repeated)."""
    pairs = [(key, value) for key, values in params.items()
             for value in (values if hasattr(values, "__iter__")
                           and not isinstance(values, (str, bytes)) else (values,))
             if value is not None]
    return urlencode(pairs) if pairs else None
