"""A `requests` session that connects only to addresses `shared.netguard` allows, pinned.

The urllib3 connection classes behind it override `_new_conn`: the connection resolves its host
itself, checks every address with an `AddressGuard`, and connects to one of those very addresses.
There is one resolution per connection and the check is on the address connected to, so DNS
rebinding between a check and the connect cannot reach anything else. TLS still verifies the
certificate against the host name (SNI and hostname matching use the name, never the IP).

Every redirect hop is a new request through the same adapter (so it is checked the same way), at
most `MAX_REDIRECTS` of them, http/https only; a redirect reply's body is never read. The session
ignores proxy, netrc and CA settings from the environment (`trust_env = False`).
"""
from __future__ import annotations

import logging
import socket
import sys
import typing
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, LocationParseError, NameResolutionError,
                                NewConnectionError)
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from shared.netguard import AddressGuard, AddrInfo, UnsafeURL

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5


def _open_socket(info: AddrInfo, timeout: Any, source_address: tuple[str, int] | None,
                 socket_options: list | None) -> socket.socket:
    """Connect a socket to one resolved address (the way urllib3's create_connection does)."""
    family, socktype, proto, _, sockaddr = info
    sock = socket.socket(family, socktype, proto)
    try:
        for option in socket_options or ():
            sock.setsockopt(*option)
        if timeout is not _DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(sockaddr)
        return sock
    except BaseException:
        sock.close()
        raise


def connect_checked(infos: list[AddrInfo], timeout: Any,
                    source_address: tuple[str, int] | None = None,
                    socket_options: list | None = None) -> socket.socket:
    """A socket connected to the first of `infos` (already checked) that answers."""
    error: OSError | None = None
    for info in infos:
        try:
            return _open_socket(info, timeout, source_address, socket_options)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


def guarded_socket(conn: HTTPConnection, guard: AddressGuard) -> socket.socket:
    """Resolve `conn`'s host once, check every address with `guard`, connect to one of them.

    Raises what urllib3's own `_new_conn` raises for DNS and connect failures (so requests maps
    them as usual), and `DisallowedAddress` (a ValueError, which neither urllib3 nor requests
    wrap or retry) for a refused address.
    """
    host = conn._dns_host  # noqa: SLF001 - the name as given, trailing dot kept, as urllib3 does
    try:
        host.strip("[]").encode("idna")
    except UnicodeError:
        raise LocationParseError(f"'{host}', label empty or too long") from None
    try:
        infos = guard.resolve(host, conn.port, allowed_gai_family())
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    try:
        sock = connect_checked(infos, conn.timeout, conn.source_address, conn.socket_options)
    except socket.timeout as exc:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out. "
                                        f"(connect timeout={conn.timeout})") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    return sock


class _GuardedMixin:
    """Overrides urllib3's `_new_conn` with `guarded_socket` under the class's `guard`."""

    guard: ClassVar[AddressGuard]

    def _new_conn(self) -> socket.socket:
        return guarded_socket(typing.cast(HTTPConnection, self), self.guard)


def _pool_classes(guard: AddressGuard) -> dict[str, type]:
    """HTTP and HTTPS connection pool classes whose connections use `guard`."""
    http_conn = type("GuardedHTTPConnection", (_GuardedMixin, HTTPConnection), {"guard": guard})
    https_conn = type("GuardedHTTPSConnection", (_GuardedMixin, HTTPSConnection), {"guard": guard})
    http_pool = type("GuardedHTTPConnectionPool", (HTTPConnectionPool,),
                     {"ConnectionCls": http_conn})
    https_pool = type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,),
                      {"ConnectionCls": https_conn})
    return {"http": http_pool, "https": https_pool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections resolve, check and pin their addresses with `guard`."""

    def __init__(self, guard: AddressGuard, **kwargs: Any):
        self.guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        """The usual PoolManager, with the guarded pool classes."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.guard)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Proxies would connect past the guard: refused."""
        raise UnsafeURL(f"{self.guard.label}: proxies are not used for guarded requests")


class GuardedSession(requests.Session):
    """A session for untrusted URLs: guarded adapter on http and https, no env settings."""

    def __init__(self, guard: AddressGuard, max_redirects: int = MAX_REDIRECTS):
        super().__init__()
        self.guard = guard
        self.trust_env = False
        self.max_redirects = max_redirects
        self.proxies = {}
        adapter = GuardedAdapter(guard)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def get_adapter(self, url: str) -> Any:
        """The guarded adapter; any other scheme (also on a redirect hop) is refused."""
        self.guard.check_scheme(url)
        return super().get_adapter(url)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """The Location of a redirect reply, whose body is dropped unread (it could be endless).

        Closing the raw reply closes its connection, so the body reads as empty afterwards;
        this also holds for a redirect reply returned as is (`allow_redirects=False`).
        """
        target = super().get_redirect_target(resp)
        if target is not None and resp.raw is not None:
            resp.raw.close()
        return target
