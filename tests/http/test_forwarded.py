"""The client's address behind proxies: which headers are believed, and how they are read."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from polyport.http.app import HttpApp
from polyport.http.asgi import AsgiApp
from polyport.http.forwarded import (
    MAX_FORWARDED_LINE,
    MAX_HOPS,
    UNKNOWN,
    Client,
    Hop,
    TrustedProxies,
    forwarded,
    parse_address,
    x_forwarded_for,
)
from polyport.http.request import Request, Response
from polyport.http.router import Route

PROXY = "10.0.0.2"
TRUSTED = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
TRUSTED_FORWARDED = TrustedProxies(["10.0.0.0/8", "fd00::/8"], "forwarded")


def xff(*values: str, peer: str = PROXY, proxies: TrustedProxies = TRUSTED) -> Client:
    return proxies.client(peer, [(b"x-forwarded-for", v.encode("latin-1")) for v in values])


def fwd(*values: str, peer: str = PROXY) -> Client:
    headers = [(b"forwarded", v.encode("latin-1")) for v in values]
    return TRUSTED_FORWARDED.client(peer, headers)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1\t", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("192.0.2.1:_port", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # a dual-stack socket's view of an IPv4 client
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("192.0.2.1:", None),
        ("192.0.2.1:port", None),
        ("192.0.2.1:123456", None),
        ("192.0.2.256", None),
        ("192.0.2.01", None),  # leading zeros: octal to some parsers, refused
        ("[192.0.2.1]", None),  # brackets are for IPv6
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("[2001:db8::1]:", None),
        ("example.com", None),
        ("1" * 100, None),
    ],
)
def test_parse_address(text: str, address: str | None) -> None:
    """What proxies write for a node is read as an address, or as none at all."""
    parsed = parse_address(text)
    assert (str(parsed) if parsed is not None else None) == address


def test_x_forwarded_for_is_read_from_the_right_over_every_line() -> None:
    """Several field lines are one list; empty elements are nothing; junk is a hop without one."""
    hops = list(x_forwarded_for([b"192.0.2.1, , junk", b",2001:db8::1,[::1]:80,"]))
    assert hops == [
        Hop(ipaddress.ip_address("::1")),
        Hop(ipaddress.ip_address("2001:db8::1")),
        UNKNOWN,
        Hop(ipaddress.ip_address("192.0.2.1")),
    ]


def test_forwarded_elements_pairs_and_quoting() -> None:
    """RFC 7239's examples: quoted IPv6 with a port, case-insensitive names, proto, by."""
    hops = list(
        forwarded(
            [
                b'for="_gazonk"',
                b'For="[2001:db8:cafe::17]:4711"',
                b"for=192.0.2.60;proto=HTTPS;by=203.0.113.43, for=198.51.100.17",
            ]
        )
    )
    assert hops == [
        Hop(ipaddress.ip_address("198.51.100.17")),
        Hop(ipaddress.ip_address("192.0.2.60"), "https"),
        Hop(ipaddress.ip_address("2001:db8:cafe::17")),
        UNKNOWN,  # obfuscated
    ]


@pytest.mark.parametrize(
    "line",
    [
        "for=unknown",
        "proto=https",  # an element without for
        "for=192.0.2.1;for=192.0.2.2",  # a parameter twice in one element
        "for=[2001:db8::1]",  # IPv6 must be quoted: '[' is not a token character
        'for="192.0.2.1',  # an unterminated quoted string
        "for 192.0.2.1",
        "=192.0.2.1",
        "for=192.0.2.1 junk",
        "for=\x00",
    ],
)
def test_forwarded_elements_that_name_no_address(line: str) -> None:
    """Each is one hop without an address, never an exception."""
    assert list(forwarded([line.encode("latin-1")])) == [UNKNOWN]


def test_forwarded_quoted_strings_may_hold_commas_and_escapes() -> None:
    """A comma inside quotes separates nothing; a quoted pair stands for its character."""
    hops = list(forwarded([b'for=192.0.2.1;ext="a, b \\" c", for="192.0.2.\\2"']))
    assert hops == [Hop(ipaddress.ip_address("192.0.2.2")), Hop(ipaddress.ip_address("192.0.2.1"))]


def test_forwarded_whitespace_and_empty_elements_are_tolerated() -> None:
    """OWS around separators and empty list elements, as recipients must accept."""
    hops = list(forwarded([b" , for=192.0.2.1 ; proto=http ,, ;for=192.0.2.2 , "]))
    assert hops == [
        Hop(ipaddress.ip_address("192.0.2.2")),
        Hop(ipaddress.ip_address("192.0.2.1"), "http"),
    ]


def test_a_malformed_forwarded_line_spoils_only_itself() -> None:
    """A client's unterminated quote cannot swallow the line its proxy added after it."""
    client = fwd('for="198.51.100.1', "for=203.0.113.7")
    assert client == Client("203.0.113.7")


def test_a_forwarded_line_over_the_limit_is_not_read() -> None:
    """A line longer than MAX_FORWARDED_LINE is one hop without an address."""
    line = b"for=192.0.2.1," * (MAX_FORWARDED_LINE // 14 + 1)
    assert list(forwarded([line])) == [UNKNOWN]
    assert fwd(line.decode()) == Client(PROXY)


@pytest.mark.parametrize(
    ("values", "client"),
    [
        ((), PROXY),  # a health check: no header
        (("203.0.113.7",), "203.0.113.7"),
        (("198.51.100.1, 203.0.113.7",), "203.0.113.7"),  # the client's own claim is not believed
        (("198.51.100.1", "203.0.113.7"), "203.0.113.7"),  # the proxy added a line of its own
        (("203.0.113.7, 10.0.0.9",), "203.0.113.7"),  # 10.0.0.9 is another proxy of ours
        (("203.0.113.7, 10.1.1.1, 10.0.0.9",), "203.0.113.7"),
        (("10.0.0.5",), "10.0.0.5"),  # every hop trusted: the farthest one
        (("10.0.0.5, 10.0.0.6",), "10.0.0.5"),
        (("junk, 203.0.113.7",), "203.0.113.7"),  # junk left of the client is never reached
        (("203.0.113.7, junk",), PROXY),  # junk the walk reaches: the client is not known
        (("203.0.113.7, unknown",), PROXY),
        (("",), PROXY),
        ((", ,",), PROXY),
        (("2001:db8::7, fd00::1",), "2001:db8::7"),
        (("[2001:db8::7]:443",), "2001:db8::7"),
        (("::ffff:203.0.113.7",), "203.0.113.7"),
        (("::ffff:10.0.0.9, 203.0.113.7",), "203.0.113.7"),
        (("203.0.113.7:51234",), "203.0.113.7"),
    ],
)
def test_x_forwarded_for_from_a_trusted_peer(values: tuple[str, ...], client: str) -> None:
    """From the right, over trusted hops, to the first untrusted address."""
    assert xff(*values).address == client


def test_every_hop_in_an_ipv6_peer_and_a_mapped_peer_is_trusted_alike() -> None:
    """An IPv6 proxy, and an IPv4 proxy seen by a dual-stack socket, are both trusted."""
    assert xff("203.0.113.7", peer="fd00::2").address == "203.0.113.7"
    assert xff("203.0.113.7", peer="::ffff:10.0.0.2").address == "203.0.113.7"
    mapped = TrustedProxies(["::ffff:10.0.0.0/104"])  # the same network, written as IPv6
    assert xff("203.0.113.7", proxies=mapped).address == "203.0.113.7"


@pytest.mark.parametrize("peer", ["192.0.2.99", "10.0.0.2:80", "::1", "", None, "not an address"])
def test_an_untrusted_peer_is_the_client_whatever_it_sends(peer: str | None) -> None:
    """Spoofing: the headers of a peer that is not a trusted proxy are never read."""
    headers = [
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"forwarded", b"for=203.0.113.7;proto=https"),
        (b"x-forwarded-proto", b"https"),
    ]
    assert TRUSTED.client(peer, headers) == Client(peer)
    assert TRUSTED_FORWARDED.client(peer, headers) == Client(peer)


def test_no_trusted_proxies_means_no_header_is_read() -> None:
    """The default: every peer is the client."""
    nobody = TrustedProxies()
    assert not nobody.enabled
    assert not nobody.trusts("127.0.0.1")
    assert xff("203.0.113.7", peer="127.0.0.1", proxies=nobody) == Client("127.0.0.1")


def test_only_the_configured_header_is_read() -> None:
    """A client behind a proxy writing one header cannot be believed in the other."""
    both = [(b"x-forwarded-for", b"203.0.113.7"), (b"forwarded", b"for=198.51.100.66")]
    assert TRUSTED.client(PROXY, both).address == "203.0.113.7"
    assert TRUSTED_FORWARDED.client(PROXY, both).address == "198.51.100.66"
    assert TRUSTED.client(PROXY, both[1:]).address == PROXY
    assert TRUSTED_FORWARDED.client(PROXY, both[:1]).address == PROXY


@pytest.mark.parametrize(
    ("values", "client"),
    [
        (("for=203.0.113.7",), Client("203.0.113.7")),
        (("for=203.0.113.7;proto=https",), Client("203.0.113.7", "https")),
        (("for=203.0.113.7;proto=gopher",), Client("203.0.113.7")),
        (('for="[2001:db8::7]:4711";proto=https, for=10.0.0.9',), Client("2001:db8::7", "https")),
        (("for=198.51.100.1, for=203.0.113.7",), Client("203.0.113.7")),
        (("for=203.0.113.7, for=_hidden",), Client(PROXY)),  # obfuscated: not known
        (("for=203.0.113.7, for=unknown",), Client(PROXY)),
        (("for=203.0.113.7, proto=https",), Client(PROXY)),  # an element without for
        (("for=10.0.0.5;proto=https",), Client("10.0.0.5", "https")),
    ],
)
def test_forwarded_from_a_trusted_peer(values: tuple[str, ...], client: Client) -> None:
    """The same walk over RFC 7239 elements; the scheme is the client's element's proto."""
    assert fwd(*values) == client


@pytest.mark.parametrize(
    ("protos", "scheme"),
    [
        ((), "http"),
        (("https",), "https"),
        (("HTTPS",), "https"),
        (("http, https",), "https"),  # the last value: the nearest proxy's word
        (("https", "http"), "http"),
        (("wss",), "http"),
        (("",), "http"),
    ],
)
def test_x_forwarded_proto_names_the_scheme(protos: tuple[str, ...], scheme: str) -> None:
    """Read with X-Forwarded-For, from a trusted peer only; anything but http(s) is ignored."""
    headers = [(b"x-forwarded-for", b"203.0.113.7")]
    headers += [(b"x-forwarded-proto", p.encode()) for p in protos]
    assert TRUSTED.client(PROXY, headers).scheme == scheme
    assert TRUSTED.client("192.0.2.99", headers).scheme == "http"


def test_the_carrier_scheme_stands_unless_a_trusted_proxy_says_otherwise() -> None:
    """An ASGI server's own scheme is kept when the headers say nothing about it."""
    headers = [(b"x-forwarded-for", b"203.0.113.7")]
    assert TRUSTED.client(PROXY, headers, "https").scheme == "https"
    assert TRUSTED.client("192.0.2.99", headers, "https") == Client("192.0.2.99", "https")


def test_the_walk_is_bounded() -> None:
    """More than MAX_HOPS trusted hops: the client is not known (the peer stands)."""
    assert xff(", ".join(["10.0.0.5"] * MAX_HOPS)).address == "10.0.0.5"
    assert xff(", ".join(["10.0.0.5"] * (MAX_HOPS + 1))).address == PROXY
    assert xff(", ".join(["203.0.113.7"] + ["10.0.0.5"] * (MAX_HOPS - 1))).address == "203.0.113.7"


def test_a_long_header_costs_only_the_hops_walked() -> None:
    """A client's 60 KiB of X-Forwarded-For left of its proxy's entry is never parsed."""
    hops = x_forwarded_for([b"junk, " * 10_000 + b"203.0.113.7"])
    assert next(hops) == Hop(ipaddress.ip_address("203.0.113.7"))
    assert xff("junk, " * 10_000 + "203.0.113.7").address == "203.0.113.7"


@pytest.mark.parametrize("entry", ["nope", "10.0.0.0/33", "", "10.0.0.1/8/8"])
def test_a_bad_network_is_refused(entry: str) -> None:
    """TrustedProxies refuses what it cannot read (settings check the same before)."""
    with pytest.raises(ValueError, match="does not appear to be"):
        TrustedProxies([entry])


def test_networks_are_read_loosely_host_bits_and_all() -> None:
    """``10.0.0.1/8`` is the network 10.0.0.0/8, as for webhooks.allow_private."""
    proxies = TrustedProxies(["10.0.0.1/8", " 192.0.2.1 "])
    assert proxies.trusts("10.200.0.1")
    assert proxies.trusts("192.0.2.1")
    assert not proxies.trusts("192.0.2.2")


async def test_the_asgi_adapter_reads_the_same_headers_from_the_same_peers() -> None:
    """Under another ASGI server the scope's client is the peer, and its scheme the default."""

    async def who(request: Request) -> Response:
        return Response(200, f"{request.peer} {request.scheme}".encode(), content_type=None)

    app = AsgiApp(HttpApp([Route("GET", "/who", who)], max_body=1024, trusted_proxies=TRUSTED))
    headers = {"x-forwarded-for": "203.0.113.7"}

    async def ask(peer: str, url: str, extra: dict[str, str]) -> str:
        transport = httpx.ASGITransport(app=app, client=(peer, 1234))
        async with httpx.AsyncClient(transport=transport) as client:
            return (await client.get(url, headers={**headers, **extra})).text

    assert await ask(PROXY, "http://node/who", {}) == "203.0.113.7 http"
    assert await ask(PROXY, "https://node/who", {}) == "203.0.113.7 https"
    assert await ask(PROXY, "https://node/who", {"x-forwarded-proto": "http"}) == "203.0.113.7 http"
    assert await ask("192.0.2.99", "https://node/who", {}) == "192.0.2.99 https"
