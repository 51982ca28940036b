"""Forwarding headers, fuzzed: the parser never raises and a client can never choose its address.

The properties hold for any bytes a client may put in ``X-Forwarded-For`` or
``Forwarded``: read from an untrusted peer they are ignored; read from a
trusted proxy that added the client's real address after them, the result is
that address (or, for a ``Forwarded`` line the client spoiled, the proxy
itself) — never one the client wrote. The last test sends them to a node that
trusts its loopback peer.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import FUZZ, FuzzedNode, exchange, statuses

from polyport.http.forwarded import Client, TrustedProxies, forwarded, x_forwarded_for

PROXY = "10.0.0.2"
NETWORKS = ["10.0.0.0/8", "fd00::/8"]
XFF = TrustedProxies(NETWORKS)
FORWARDED = TrustedProxies(NETWORKS, "forwarded")

#: Client addresses: anything outside the trusted networks.
CLIENTS = st.ip_addresses().filter(
    lambda a: (
        not any(a in ipaddress.ip_network(n) for n in NETWORKS)
        and not (isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None)
    )
)
#: What a client may write itself: header values as bytes (no CR or LF, which end a field).
FIELD = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
PIECES = st.sampled_from(
    [b"for=", b'"', b"[", b"]", b":", b";", b",", b" ", b"\\", b"_x", b"unknown", b"proto=https"]
)
#: ...or something nearer the grammar, to reach past the first check.
NEAR = st.lists(PIECES | st.ip_addresses().map(lambda a: str(a).encode()), max_size=12).map(
    b"".join
)
VALUES = st.lists(FIELD | NEAR, max_size=4)


def node_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None) -> str:
    """``address`` as a proxy writes it, with a port sometimes."""
    if address.version == 6:
        return f"[{address}]:{port}" if port is not None else f"[{address}]"
    return f"{address}:{port}" if port is not None else str(address)


@given(values=VALUES, peer=st.sampled_from([PROXY, "192.0.2.1", "::1", "", None]))
@FUZZ
def test_the_parsers_never_raise(values: list[bytes], peer: str | None) -> None:
    """Any header lines, any peer: an address that is the peer or a well-formed one."""
    list(x_forwarded_for(values))
    list(forwarded(values))
    for proxies, name in ((XFF, b"x-forwarded-for"), (FORWARDED, b"forwarded")):
        client = proxies.client(peer, [(name, v) for v in values])
        assert client.scheme in ("http", "https")
        if client.address != peer:
            assert str(ipaddress.ip_address(client.address or "")) == client.address


@given(values=VALUES, peer=st.sampled_from(["192.0.2.1", "2001:db8::1", "127.0.0.1"]))
@FUZZ
def test_an_untrusted_peer_is_never_spoofed(values: list[bytes], peer: str) -> None:
    """Whatever a client that is not a trusted proxy sends, it is the client."""
    headers = [(b"x-forwarded-for", v) for v in values] + [(b"forwarded", v) for v in values]
    headers += [(b"x-forwarded-proto", b"https")]
    assert XFF.client(peer, headers) == Client(peer)
    assert FORWARDED.client(peer, headers) == Client(peer)


@given(
    spoof=VALUES,
    real=CLIENTS,
    port=st.none() | st.integers(0, 65535),
    inner=st.lists(st.sampled_from(["10.0.0.9", "10.1.2.3", "fd00::5"]), max_size=3),
    same_line=st.booleans(),
)
@FUZZ
def test_a_trusted_proxy_chain_yields_the_real_client(
    spoof: list[bytes],
    real: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int | None,
    inner: list[str],
    same_line: bool,
) -> None:
    """What the client wrote comes first; the proxies each add the address they saw.

    X-Forwarded-For is exact either way (nginx appends to the client's line,
    HAProxy adds a line). A Forwarded line is parsed whole, so appended to a
    client's malformed one it yields the proxy, never the client's choice.
    """
    hops = [real.compressed if port is None else node_text(real, port), *inner]
    added = ", ".join(hops).encode()
    lines = [*spoof[:-1], spoof[-1] + b", " + added] if spoof and same_line else [*spoof, added]
    assert XFF.client(PROXY, [(b"x-forwarded-for", v) for v in lines]).address == str(real)

    elements = ", ".join(f'for="{node_text(ipaddress.ip_address(h), None)}"' for h in hops[1:])
    first = f'for="{node_text(real, port)}";proto=https'
    added = (first + (", " + elements if elements else "")).encode()
    lines = [*spoof[:-1], spoof[-1] + b", " + added] if spoof and same_line else [*spoof, added]
    client = FORWARDED.client(PROXY, [(b"forwarded", v) for v in lines])
    if same_line and spoof:
        assert client in (Client(str(real), "https"), Client(PROXY))
    else:
        assert client == Client(str(real), "https")


PATHS = st.sampled_from(
    [
        b"/v1/users/1",
        b"/soap?wsdl",
        b"/v1/events?channel=orders/%23&after=earliest",
        b"/v1/events/stream?channel=orders/%23",
        b"/ws",
    ]
)
NAMES = st.sampled_from(
    [b"x-forwarded-for", b"forwarded", b"x-forwarded-proto", b"X-Forwarded-For"]
)


@given(path=PATHS, headers=st.lists(st.tuples(NAMES, FIELD | NEAR), max_size=6))
@FUZZ
def test_forwarding_headers_from_a_trusted_peer_never_break_a_request(
    fuzzed: FuzzedNode, path: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """REST, the WSDL, polling, SSE and a WebSocket handshake: never a 500, the node stays up."""
    head = b"GET " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
    if path == b"/ws":
        head += (
            b"upgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
        )
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    answer = exchange(fuzzed.host, fuzzed.port, [head + b"\r\n"])
    assert 500 not in statuses(answer), answer[:300]
    fuzzed.check()
