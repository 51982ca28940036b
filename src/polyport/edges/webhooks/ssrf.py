"""Where webhooks may go: public addresses only, unless the configuration says otherwise.

A subscriber chooses the URL, so without a check a webhook is a way to make
the server POST into its own network (server-side request forgery): cloud
metadata at 169.254.169.254, an admin port on 127.0.0.1, a database on 10.x.
The check runs **at connect time** on the addresses the name resolves to, and
the connection is then made to the address that was checked — never to the
name again — so a DNS answer that changes between check and connect (DNS
rebinding) cannot slip through. Registration checks too, to fail early.

Refused: loopback, private (RFC 1918, ULA), link-local (with cloud metadata),
shared/CGNAT (100.64/10), multicast, reserved, unspecified, documentation and
benchmarking ranges — everything not globally routable — and IPv6 forms that
embed an IPv4 address (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``, Teredo), whatever they embed. ``webhooks.allow_private``
lists addresses or networks allowed anyway (tests and the demo: 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 ranges that carry an IPv4 address inside: refused as such, not by what
#: they embed, since the route they take is not the one the address suggests.
_EMBEDDING = tuple(
    ipaddress.ip_network(n)
    for n in ("::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)
#: Not in ``is_global``'s list of exceptions on every Python version.
_ALSO_REFUSED = tuple(ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24"))


class Refused(Exception):
    """A target the policy will not connect to; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart: what to connect to and what to send."""

    scheme: str  # "http" or "https"
    host: str  # as written (IDNA-encoded), without brackets
    port: int
    path: str  # path and query, at least "/"
    host_header: str


#: ASCII characters a URI may not hold as they are (RFC 3986): percent-encoded too.
_NOT_IN_URI = frozenset('"<>\\^`{|}')


def _encode(text: str) -> str:
    """Percent-encode (UTF-8) what a request target cannot carry; keep the rest as written.

    An IRI path (``/hooks/café``) becomes its URI (``/hooks/caf%C3%A9``), the
    form a browser sends; ``%`` escapes already there are kept.
    """
    if text.isascii() and not _NOT_IN_URI.intersection(text):
        return text
    return "".join(quote(c, safe="") if not c.isascii() or c in _NOT_IN_URI else c for c in text)


def normalise_url(url: str) -> str:
    """The URL as it is stored and delivered to: IDNA host, percent-encoded path and query.

    Raises ValueError (with the reason) when :func:`parse_url` would.
    """
    target = parse_url(url)
    parts = urlsplit(url)
    shown = f"[{target.host}]" if ":" in target.host else target.host
    netloc = shown if parts.port is None else f"{shown}:{parts.port}"
    return urlunsplit((target.scheme, netloc, _encode(parts.path), _encode(parts.query), ""))


def parse_url(url: str) -> Target:
    """Split and check a webhook URL; ValueError with a reason when unusable.

    The path and query of the target are percent-encoded where they hold
    characters a request line cannot (non-ASCII ones above all).
    """
    if len(url) > 2048:
        raise ValueError("the URL is longer than 2048 characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not carry credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    if parts.fragment:
        raise ValueError("the URL must not have a #fragment")
    try:
        host = host.encode("idna").decode("ascii") if not _is_ip(host) else host
    except UnicodeError:
        raise ValueError("the URL's host is not a valid name") from None
    default = 443 if scheme == "https" else 80
    port = port or default
    path = _encode(parts.path) or "/"
    if parts.query:
        path += "?" + _encode(parts.query)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Target(scheme, host, port, path, host_header)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def why_not_public(address: IPAddress) -> str | None:
    """Why ``address`` is not an acceptable webhook target, or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _EMBEDDING):
            return "an IPv6 address embedding an IPv4 one (mapped, NAT64, 6to4, Teredo)"
        if address.scope_id:
            return "a scoped (link-local) IPv6 address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address (cloud metadata lives there)"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (any(address in net for net in _ALSO_REFUSED), "a shared (CGNAT) or special address"),
        (not address.is_global, "not a globally routable address"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


class AddressPolicy:
    """Which addresses deliveries may reach: public ones plus an explicit allow-list."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in allow
        )

    def check_address(self, address: IPAddress) -> None:
        """Raise :class:`Refused` unless a connection to ``address`` is acceptable."""
        if any(address.version == net.version and address in net for net in self.allow):
            return
        reason = why_not_public(address)
        if reason is not None:
            raise Refused(f"{address} is {reason}; not allowed by webhooks.allow_private")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` resolves to, each checked; :class:`Refused` if any fails.

        Refusing when *any* answer is forbidden (not only picking the good
        ones) keeps a name that mixes public and private answers from being
        a probe into the network.
        """
        if _is_ip(host):
            addresses = [ipaddress.ip_address(host)]
        else:
            try:
                infos = await getaddrinfo(host, port)
            except (OSError, UnicodeError) as exc:
                raise Refused(f"cannot resolve {host}: {exc}") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
            if not addresses:
                raise Refused(f"{host} resolves to no address")
        for address in addresses:
            self.check_address(address)
        return addresses


async def getaddrinfo(
    host: str, port: int
) -> list[tuple[object, object, object, str, tuple[str, int]]]:
    """The resolver (a module attribute, so tests can answer for names they invent)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [(f, t, p, c, (str(a[0]), int(a[1]))) for f, t, p, c, a in infos]
