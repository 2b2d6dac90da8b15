"""Which network addresses a server-side fetch may reach (SSRF protection).

Workers fetch `source_url`s and the coordinator POSTs `callback_url`s on behalf of clients. Left
alone, a client could point either at loopback, the LAN or a cloud metadata service and read or
poke internal services through them. The rule here: only globally routable unicast addresses are
allowed, IPv4 and IPv6, including the IPv6 forms that embed an IPv4 address. A host name is
resolved and EVERY address it resolves to is checked; `shared.safehttp` connects only to an
address this module has just checked, so DNS rebinding cannot slip a different one in.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddrInfo = tuple[int, int, int, str, tuple]

ALLOWED_SCHEMES = frozenset({"http", "https"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# IPv6 forms whose embedded IPv4 address is what the packet really reaches.
_TRANSPARENT_FORMS = frozenset({"IPv4-mapped", "NAT64"})


class UnsafeURL(ValueError):
    """A URL that a server-side fetch refuses (bad scheme, refused address)."""


class DisallowedAddress(UnsafeURL):
    """A host that is, or resolves to, an address the policy refuses."""

    def __init__(self, host: str, address: str | None, reason: str, label: str = "URL",
                 hint: str = ""):
        self.host, self.address, self.reason, self.label = host, address, reason, label
        if address is None:
            message = f"{label} host {host} is {reason}, which is not allowed"
        elif literal_ip(host) is not None:
            message = f"{label} address {address} ({reason}) is not allowed"
        else:
            message = f"{label} host {host} resolves to {address} ({reason}), which is not allowed"
        super().__init__(f"{message}; {hint}" if hint else message)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address inside an IPv4-mapped, -compatible, NAT64, 6to4 or Teredo address."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d, the deprecated IPv4-compatible form
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def _own_problem(ip: IPAddress) -> str | None:
    """Why `ip` itself (ignoring any embedded IPv4 address) is refused, or None."""
    v6 = isinstance(ip, ipaddress.IPv6Address)
    checks: list[tuple[str, bool]] = [
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("broadcast", ip == _BROADCAST),
        ("carrier-grade NAT", not v6 and ip in _CGNAT),
        ("site-local", v6 and ip.is_site_local),
        ("unique-local", v6 and ip in _UNIQUE_LOCAL),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ]
    return next((name for name, hit in checks if hit), None)


def address_problem(address: str | IPAddress) -> str | None:
    """Why a server-side fetch may not connect to `address` (e.g. "loopback"), or None."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, v4 = embedded
            problem = address_problem(v4)
            if problem is not None:
                return f"{form} {v4}, {problem}"
            if form in _TRANSPARENT_FORMS:
                return None
    return _own_problem(ip)


def is_allowed(address: str | IPAddress) -> bool:
    """True when a server-side fetch may connect to `address`."""
    return address_problem(address) is None


def is_localhost_name(host: str) -> bool:
    """`localhost` and any `*.localhost` name (RFC 6761: always loopback)."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def literal_ip(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal (brackets and a zone id allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class AddressGuard:
    """Resolves hosts and refuses any that reach an address the policy does not allow.

    `label` names the URL in messages ("source_url"), `hint` says how to lift the rule.
    `allow_private` turns the address rule off (lab networks); schemes are still checked.
    Names are resolved with `socket.getaddrinfo` (looked up at call time).
    """

    allow_private: bool = False
    label: str = "URL"
    hint: str = ""

    def refuse(self, host: str, address: str | None, reason: str) -> DisallowedAddress:
        """The exception for a refused address of `host` (None: refused by name)."""
        return DisallowedAddress(host, address, reason, self.label, self.hint)

    def check_name(self, host: str) -> None:
        """Refuse IP literals and names that are refused by themselves, before any lookup."""
        if self.allow_private:
            return
        if is_localhost_name(host):
            raise self.refuse(host, None, "a localhost name (always loopback)")
        ip = literal_ip(host)
        if ip is not None:
            self.check_address(host, str(ip))

    def check_address(self, host: str, address: str) -> None:
        """Raise DisallowedAddress if `address` (of `host`) is refused."""
        if self.allow_private:
            return
        problem = address_problem(address)
        if problem is not None:
            logger.warning("%s host %s: refused address %s (%s)", self.label, host, address,
                           problem)
            raise self.refuse(host, address, problem)

    def check_addresses(self, host: str, infos: Sequence[AddrInfo]) -> None:
        """Raise DisallowedAddress if ANY resolved address of `host` is refused."""
        for info in infos:
            self.check_address(host, str(info[4][0]))

    def resolve(self, host: str, port: int | None, family: int = socket.AF_UNSPEC,
                ) -> list[AddrInfo]:
        """Every address of `host` (resolved once), all of them checked; raises on a refused one.

        Name-resolution failures propagate as `socket.gaierror`.
        """
        host = host.strip("[]")
        self.check_name(host)
        infos = list(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no addresses")
        self.check_addresses(host, infos)
        return infos

    def check_scheme(self, url: str) -> None:
        """Refuse any URL that is not http or https."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise UnsafeURL(f"{self.label} {url[:200]!r}: scheme {scheme or '(none)'!r} is "
                            "not allowed (only http and https)")

    def check_url(self, url: str, *, unresolvable_ok: bool = False) -> None:
        """Check a URL's scheme and every address its host resolves to.

        With `unresolvable_ok` a host that does not resolve passes (it is checked again when
        a connection is made); otherwise the `socket.gaierror` propagates.
        """
        self.check_scheme(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            self.resolve(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            if not unresolvable_ok:
                raise
            logger.info("%s host %s does not resolve now (%s); checked again on use",
                        self.label, host, exc)
