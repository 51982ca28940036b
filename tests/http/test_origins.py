"""The origin rule of every WebSocket endpoint, on handshakes built by hand."""

from __future__ import annotations

from typing import Any, cast

import pytest

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.http.origins import (
    OriginPolicy,
    OriginRefused,
    Trust,
    parse_origin,
    websocket_credentials,
)
from polyport.http.request import Connection, Request

HOST = "node.example:8000"
COOKIE = "polyport_token=pt1.ticket"


def handshake(
    origin: str | None, *, host: str = HOST, cookie: str | None = COOKIE, query: bytes = b""
) -> Request:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return Request("GET", "/ws", query, headers, "127.0.0.1", cast(Connection, None), 1024)


@pytest.mark.parametrize(
    ("origin", "host", "trust"),
    [
        (None, HOST, Trust.CREDENTIALED),  # not a browser
        ("http://node.example:8000", HOST, Trust.CREDENTIALED),
        ("HTTP://Node.Example:8000", HOST, Trust.CREDENTIALED),
        ("https://node.example", "node.example", Trust.CREDENTIALED),
        ("https://node.example:443", "node.example", Trust.CREDENTIALED),
        ("http://[::1]:8000", "[::1]:8000", Trust.CREDENTIALED),
        ("http://node.example", HOST, Trust.REFUSED),  # another port is another origin
        ("http://evil.example", HOST, Trust.REFUSED),
        ("http://node.example.evil.example:8000", HOST, Trust.REFUSED),
        ("null", HOST, Trust.REFUSED),
        ("not an origin", HOST, Trust.REFUSED),
        ("http://node.example:8000", "", Trust.REFUSED),
    ],
)
def test_same_origin_or_no_browser(origin: str | None, host: str, trust: Trust) -> None:
    """Without cors_origins only the node's own pages (and non-browsers) are let in."""
    assert OriginPolicy.from_settings([]).trust(handshake(origin, host=host)) is trust


def test_listed_origins_are_credentialed_and_the_star_never_is() -> None:
    """A listed origin gets cookies; '*' lets any page in without them."""
    listed = OriginPolicy.from_settings(["https://app.example", "*"])
    assert listed.trust(handshake("https://app.example")) is Trust.CREDENTIALED
    assert listed.trust(handshake("https://app.example:443")) is Trust.CREDENTIALED
    assert listed.trust(handshake("https://evil.example")) is Trust.ANONYMOUS
    assert listed.trust(handshake("null")) is Trust.ANONYMOUS
    star = OriginPolicy.from_settings(["*"])
    assert star.trust(handshake("https://evil.example")) is Trust.ANONYMOUS
    assert star.trust(handshake(None)) is Trust.CREDENTIALED


def test_the_cookie_counts_only_from_a_credentialed_origin() -> None:
    """Cross-site WebSocket hijacking: the ticket cookie of a foreign page is ignored or refused."""
    policy = OriginPolicy.from_settings(["https://app.example"])
    ticket = Credentials(bearer="pt1.ticket")
    assert websocket_credentials(handshake(None), [], policy) == ticket
    assert websocket_credentials(handshake("http://node.example:8000"), [], policy) == ticket
    assert websocket_credentials(handshake("https://app.example"), [], policy) == ticket
    with pytest.raises(OriginRefused):
        websocket_credentials(handshake("https://evil.example"), [], policy)
    star = OriginPolicy.from_settings(["*"])
    assert websocket_credentials(handshake("https://evil.example"), [], star) == NO_CREDENTIALS


def test_what_a_page_presents_itself_counts_from_any_allowed_origin() -> None:
    """A bearer subprotocol or access_token is not ambient: '*' lets it through."""
    star = OriginPolicy.from_settings(["*"])
    evil = "https://evil.example"
    offered = ["polyport.v1", "bearer.k-123"]
    assert websocket_credentials(handshake(evil), offered, star) == Credentials(bearer="k-123")
    query = handshake(evil, query=b"access_token=k-456")
    assert websocket_credentials(query, [], star) == Credentials(bearer="k-456")


def test_parse_origin() -> None:
    """Origins compare by scheme, lower-case host and port (default ports filled in)."""
    assert parse_origin("https://A.example") == ("https", "a.example", 443)
    assert parse_origin("http://a.example:81") == ("http", "a.example", 81)
    bad: list[Any] = ["null", "", "ftp://a.example", "https://a.example/path", "http://:80"]
    assert all(parse_origin(text) is None for text in bad)
