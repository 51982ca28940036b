"""Who the client is behind a proxy: forwarding headers, believed from trusted peers only.

Behind a load balancer every request comes from the balancer's address, so
anonymous callers would share one rate-limit bucket and the logs would name
the balancer. The balancer says who its client was in a header, but anyone
can send that header: it is believed only when the TCP peer is one of the
node's ``server.trusted_proxies``, and then read the way a chain of proxies
writes it — each proxy appends the address it received the request from —
from the right, passing over hops that are themselves trusted proxies. With
peer 10.0.0.2 and ``10.0.0.0/8`` trusted:

* ``X-Forwarded-For: 203.0.113.7`` → 203.0.113.7;
* ``X-Forwarded-For: 1.2.3.4, 203.0.113.7`` → 203.0.113.7 (the client wrote
  ``1.2.3.4`` itself: nothing left of the first untrusted hop is believed);
* ``X-Forwarded-For: 203.0.113.7, 10.0.0.9`` → 203.0.113.7 (10.0.0.9 is a proxy of ours);
* ``X-Forwarded-For: 10.0.0.5`` → 10.0.0.5 (every hop trusted: the farthest one);
* ``X-Forwarded-For: garbage, 203.0.113.7`` → 203.0.113.7 (never reached);
* ``X-Forwarded-For: 203.0.113.7, garbage`` → 10.0.0.2, the peer;
* no header → the peer; any header from an untrusted peer → that peer.

A hop that is not an address (``unknown``, an obfuscated ``_name``, junk)
where the walk reaches it leaves the client unknown, and so does a walk that
would go past :data:`MAX_HOPS` hops: the node then uses its TCP peer, as
without the header. Parsing never raises, and its work is bounded: the walk
reads lines and hops from the right only as far as it goes, and a
``Forwarded`` line over :data:`MAX_FORWARDED_LINE` bytes is one hop that is
not an address. All of it happens only for requests from a trusted peer.

**One header, named by a setting.** ``server.forwarded_header`` says which
header the proxies write — ``x-forwarded-for`` (HAProxy's ``option
forwardfor``, nginx's ``$proxy_add_x_forwarded_for``, cloud load balancers) or
``forwarded`` (RFC 7239; HAProxy's ``option forwarded``) — and the other is
ignored. Preferring one of them whenever it is present would let a client
behind a proxy that writes only the other send the preferred one itself,
passed through untouched, and be believed. The scheme the client used comes
from the same source: ``X-Forwarded-Proto`` (its last value) or the ``proto=``
of the client's ``Forwarded`` element; polyport only uses it to write absolute
URLs (the WSDL's ``soap:address``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The header the trusted proxies write the client's address in.
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]
Headers = Sequence[tuple[bytes, bytes]]

#: Longest text taken as one node (an address, with brackets and a port): the
#: longest IPv6 address is 45 characters; anything much longer is not one.
MAX_NODE: Final = 64
#: Most hops walked: real chains have a few proxies, not dozens.
MAX_HOPS: Final = 32
#: Longest ``Forwarded`` field line read (nginx allows 8 KiB per header line by
#: default, HAProxy 16 KiB for the whole head); a longer one is a hop without an address.
MAX_FORWARDED_LINE: Final = 8 * 1024
SCHEMES: Final = frozenset({"http", "https"})

# RFC 7239, section 4: forwarded-pair = token "=" value; value = token / quoted-string.
# The grammar is unambiguous and every quantifier possessive (each run of
# whitespace belongs to one place, after a pair, a ";" or a ","): a long line
# that does not match fails in one pass instead of being retried many ways.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]++"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*+"'
_PAIR = rf"{_TOKEN}[ \t]*+=[ \t]*+(?:{_TOKEN}|{_QUOTED})"
_ELEMENT = rf"(?:{_PAIR}[ \t]*+)?+(?:;[ \t]*+(?:{_PAIR}[ \t]*+)?+)*+"
#: A whole ``Forwarded`` field line: elements separated by commas (empty ones allowed).
_FORWARDED_LINE = re.compile(rf"[ \t]*+{_ELEMENT}(?:,[ \t]*+{_ELEMENT})*+")
#: Once a line is known to be well formed: each pair, and each comma between elements.
_PAIR_OR_COMMA = re.compile(rf"({_TOKEN})[ \t]*+=[ \t]*+(?:({_TOKEN})|({_QUOTED}))|(,)")
_QUOTED_PAIR = re.compile(r"\\(.)")
#: A port, or an obfuscated one (RFC 7239 6.3).
_PORT = re.compile(r"[0-9]{1,5}|_[0-9A-Za-z._-]+")


@dataclass(frozen=True, slots=True)
class Hop:
    """One entry of a forwarding chain: the address a proxy received the request from.

    ``address`` is None when the proxy did not say (``unknown``), hid it (an
    obfuscated identifier) or wrote something that is not an address.
    """

    address: IPAddress | None
    #: The scheme of the request the proxy received (``Forwarded``'s ``proto=``).
    proto: str | None = None


#: A hop whose address is not known.
UNKNOWN: Final = Hop(None)


@dataclass(frozen=True, slots=True)
class Client:
    """Who made a request, as far as the node can tell: an address and a scheme."""

    #: The client's address (the TCP peer, unless a trusted proxy said otherwise).
    address: str | None
    #: ``http`` or ``https``: how the client reached the first proxy (or the node).
    scheme: str = "http"


def parse_address(text: str) -> IPAddress | None:
    """The address ``text`` names, or None when it names none.

    Reads what proxies write for a node (RFC 7239 ``node``, and what
    ``X-Forwarded-For`` holds in practice): ``192.0.2.1``, ``192.0.2.1:8080``,
    ``2001:db8::1``, ``[2001:db8::1]``, ``[2001:db8::1]:8080``. An IPv4 address
    mapped into IPv6 (``::ffff:192.0.2.1``, what a dual-stack socket reports) is
    the IPv4 address, so it matches IPv4 networks and keys one rate-limit bucket.
    """
    text = text.strip(" \t")
    if not text or len(text) > MAX_NODE:
        return None
    if text[0] == "[":
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest, 1))):
            return None
        address = _address(host, version=6)
    elif text.count(":") == 1:  # IPv4 with a port: an IPv6 address has two colons or more
        host, _, port = text.partition(":")
        address = _address(host, version=4) if _PORT.fullmatch(port) else None
    else:
        address = _address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _address(text: str, version: int | None = None) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if version is not None and address.version != version:
        return None
    return address


def x_forwarded_for(values: Sequence[bytes]) -> Iterator[Hop]:
    """The hops of ``X-Forwarded-For`` field lines, nearest first (several lines are one list).

    Read from the right as far as the caller goes, so a long header costs only
    the hops walked. Empty elements are skipped (RFC 9110 5.6.1); an element
    that is not an address is a hop without one.
    """
    for value in reversed(values):
        text = value.decode("latin-1")
        end = len(text)
        while end > 0:
            start = text.rfind(",", 0, end)
            element = text[start + 1 : end].strip(" \t")
            if element:
                yield Hop(parse_address(element))
            end = start


def forwarded(values: Sequence[bytes]) -> Iterator[Hop]:
    """The hops of ``Forwarded`` field lines (RFC 7239), nearest first: one per element.

    Each element's ``for=`` is its address and ``proto=`` its scheme. An element
    without ``for``, or with a parameter twice, is a hop without an address; so
    is a whole line that is not well formed or is over :data:`MAX_FORWARDED_LINE`
    bytes. Each line is parsed by itself, so a client cannot make the line a
    proxy added after its own unreadable.
    """
    for value in reversed(values):
        if len(value) > MAX_FORWARDED_LINE:
            yield UNKNOWN
            continue
        text = value.decode("latin-1")
        if not _FORWARDED_LINE.fullmatch(text):
            yield UNKNOWN
            continue
        for pairs, repeated in reversed(_elements(text)):
            yield _hop(pairs, repeated)  # addresses are read only as far as the walk goes


def _elements(line: str) -> list[tuple[dict[str, str], bool]]:
    """The elements of a well-formed ``Forwarded`` line, in order: each one's
    parameters, and whether one of them was repeated."""
    elements: list[tuple[dict[str, str], bool]] = []
    pairs: dict[str, str] = {}
    repeated = False
    for match in _PAIR_OR_COMMA.finditer(line):
        name, token, quoted, comma = match.groups()
        if comma is not None:
            if pairs:  # an empty element is no hop (RFC 9110 5.6.1)
                elements.append((pairs, repeated))
            pairs, repeated = {}, False
            continue
        key = name.lower()
        repeated = repeated or key in pairs  # RFC 7239 4: once per element
        pairs[key] = token if token is not None else _QUOTED_PAIR.sub(r"\1", quoted[1:-1])
    if pairs:
        elements.append((pairs, repeated))
    return elements


def _hop(pairs: dict[str, str], repeated: bool) -> Hop:
    node = pairs.get("for")
    if repeated or node is None:
        return UNKNOWN
    proto = pairs.get("proto")
    return Hop(parse_address(node), proto.lower() if proto is not None else None)


class TrustedProxies:
    """Which peers may say who the client is, and how to read what they say.

    Built once per node from ``server.trusted_proxies`` (addresses and networks)
    and ``server.forwarded_header``. With no proxies listed (the default) no
    header is ever read and :meth:`client` is the peer.
    """

    __slots__ = ("header", "networks")

    def __init__(
        self, networks: Iterable[str] = (), header: ForwardedHeader = "x-forwarded-for"
    ) -> None:
        """Raises ValueError for an entry that is not an IP address or network."""
        parsed: list[IPNetwork] = []
        for entry in networks:
            network = ipaddress.ip_network(entry.strip(), strict=False)
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
                    network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
            parsed.append(network)
        self.networks: tuple[IPNetwork, ...] = tuple(parsed)
        self.header: ForwardedHeader = header

    @property
    def enabled(self) -> bool:
        """Whether any peer is trusted at all (when not, nothing needs to be asked)."""
        return bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an address as the socket reports it) is a trusted proxy."""
        if not self.networks or not peer:
            return False
        address = _address(peer)  # as a socket reports it: no brackets, no port
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address is not None and self._trusted(address)

    def _trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, headers: Headers, scheme: str = "http") -> Client:
        """Who sent the request with ``headers`` that ``peer`` delivered over ``scheme``.

        ``headers`` are lower-case names with their values, as received. They
        are read only when ``peer`` is trusted; see the module's list for what
        they yield. Raises nothing, whatever they hold.
        """
        if not self.trusts(peer):
            return Client(peer, scheme)
        if self.header == "forwarded":
            hop = self._walk(forwarded([value for key, value in headers if key == b"forwarded"]))
            if hop is None or hop.address is None:
                return Client(peer, scheme)
            return Client(str(hop.address), hop.proto if hop.proto in SCHEMES else scheme)
        hop = self._walk(
            x_forwarded_for([value for key, value in headers if key == b"x-forwarded-for"])
        )
        address = peer if hop is None or hop.address is None else str(hop.address)
        return Client(address, _forwarded_proto(headers, scheme))

    def _walk(self, hops: Iterator[Hop]) -> Hop | None:
        """The first hop, nearest first, that is not a trusted proxy (None: not known).

        A hop returned always has an address."""
        farthest = None
        for walked, hop in enumerate(hops):
            if hop.address is None or walked == MAX_HOPS:
                return None
            if not self._trusted(hop.address):
                return hop
            farthest = hop
        # Every hop is a proxy of ours: the farthest one is where the request began.
        return farthest


def _forwarded_proto(headers: Headers, scheme: str) -> str:
    """The last value of ``X-Forwarded-Proto`` (the nearest proxy's word), else ``scheme``."""
    last = None
    for name, value in headers:
        if name == b"x-forwarded-proto":
            last = value
    if last is None:
        return scheme
    said = last.rpartition(b",")[2].strip(b" \t").lower().decode("latin-1")
    return said if said in SCHEMES else scheme


__all__ = [
    "UNKNOWN",
    "Client",
    "ForwardedHeader",
    "Hop",
    "TrustedProxies",
    "forwarded",
    "parse_address",
    "x_forwarded_for",
]
