"""A node behind a proxy: rate limits, WebSocket, SSE, logs and the WSDL see the forwarded client.

Only from a trusted peer: these nodes run on loopback, and either trust
127.0.0.1 (the test is the proxy) or trust another network only (the test
is a client spoofing the header).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest
from pydantic import BaseModel
from websockets.sync.client import ClientConnection, connect

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

service = Service("proxied", description="A node behind a proxy.")


class Note(BaseModel):
    text: str


Noted = service.event("notes.created", Note, channel="notes")


@service.method
async def ping() -> str:
    """Answer pong."""
    return "pong"


def settings(trusted: list[str], **more: object) -> Settings:
    return Settings.model_validate(
        {
            "dev": True,
            "database": ":memory:",
            "event_log": "memory",
            # Two calls per client, and none earned back during a test.
            "rate_limit": {"rate": 0.001, "burst": 2},
            "server": {"trusted_proxies": trusted},
            **more,
        }
    )


@pytest.fixture
def behind_proxy() -> Iterator[RunningNode]:
    """A node whose loopback peer (this test) is a trusted proxy."""
    with serve_in_thread(service, settings(["127.0.0.1"]), edges=["rest", "sse", "ws"]) as node:
        yield node


def ping_as(node: RunningNode, forwarded_for: str | None) -> int:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for is not None else {}
    return httpx.post(f"{node.url}/v1/ping", json={}, headers=headers, timeout=10).status_code


def test_a_trusted_proxy_gives_each_client_its_own_rate_limit(behind_proxy: RunningNode) -> None:
    """anon:{client} is the forwarded address; a client's own claim to the left is not believed."""
    assert [ping_as(behind_proxy, "203.0.113.1") for _ in range(3)] == [200, 200, 429]
    assert ping_as(behind_proxy, "203.0.113.2") == 200
    # The client wrote 198.51.100.9 itself; the proxy appended what it saw: still 203.0.113.1.
    assert ping_as(behind_proxy, "198.51.100.9, 203.0.113.1") == 429
    assert ping_as(behind_proxy, "198.51.100.9") == 200
    # Without the header (a health check, say) the proxy is the client, with a bucket of its own.
    assert ping_as(behind_proxy, None) == 200
    # A header the walk cannot read leaves the proxy as the client too: never a 500.
    assert ping_as(behind_proxy, "203.0.113.3, junk") == 200
    assert ping_as(behind_proxy, "203.0.113.3, junk") == 429


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    """Spoofing: a peer outside trusted_proxies shares one bucket however it names itself."""
    with serve_in_thread(service, settings(["192.0.2.0/24"]), edges=["rest"]) as node:
        assert [ping_as(node, f"203.0.113.{i}") for i in range(3)] == [200, 200, 429]


def ws_call(ws: ClientConnection, frame_id: int) -> dict[str, object]:
    ws.send(orjson.dumps({"id": frame_id, "type": "call", "method": "ping", "args": {}}))
    while True:
        answer: dict[str, object] = orjson.loads(ws.recv(timeout=10))
        if answer.get("id") == frame_id:
            return answer


def test_a_websocket_is_the_forwarded_client_of_its_handshake(behind_proxy: RunningNode) -> None:
    """Calls over a WebSocket charge the bucket of the address its handshake was forwarded for."""
    url = behind_proxy.url.replace("http://", "ws://") + "/ws"
    with connect(url, additional_headers={"x-forwarded-for": "203.0.113.1"}) as ws:
        answers = [ws_call(ws, i) for i in range(3)]
    assert [a["type"] for a in answers] == ["result", "result", "error"]
    assert answers[2]["error"]["code"] == "RATE_LIMITED"  # type: ignore[index]
    with connect(url, additional_headers={"x-forwarded-for": "203.0.113.2"}) as ws:
        assert ws_call(ws, 1)["type"] == "result"
    # The first client's bucket was spent over the WebSocket: REST sees the same client.
    assert ping_as(behind_proxy, "203.0.113.1") == 429


def test_an_sse_stream_is_opened_as_the_forwarded_client(behind_proxy: RunningNode) -> None:
    """Subscribing charges the forwarded client's bucket, as any call does."""
    stream = f"{behind_proxy.url}/v1/events/stream?channel=notes"

    def subscribe(forwarded_for: str) -> int:
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", stream, headers={"x-forwarded-for": forwarded_for}) as answer,
        ):
            return answer.status_code

    assert [ping_as(behind_proxy, "203.0.113.1") for _ in range(2)] == [200, 200]
    assert subscribe("203.0.113.1") == 429
    assert subscribe("203.0.113.2") == 200


def test_the_access_log_names_the_forwarded_client() -> None:
    """Each access-log record carries the client's address as ``client``."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    access = logging.getLogger("polyport.access")
    keep, level = Keep(), access.level
    access.addHandler(keep)
    access.setLevel(logging.INFO)
    try:
        trusted = settings(["127.0.0.1"], log={"access": True})
        with serve_in_thread(service, trusted, edges=["rest"]) as node:
            assert ping_as(node, "2001:db8::7") == 200
            assert ping_as(node, None) == 200
    finally:
        access.removeHandler(keep)
        access.setLevel(level)
    assert [getattr(r, "client", None) for r in records] == ["2001:db8::7", "127.0.0.1"]


@pytest.mark.parametrize(
    ("trusted", "header", "headers", "scheme"),
    [
        (["127.0.0.1"], "x-forwarded-for", {"x-forwarded-proto": "https"}, "https"),
        (["127.0.0.1"], "forwarded", {"forwarded": "for=203.0.113.7;proto=https"}, "https"),
        (["127.0.0.1"], "forwarded", {"x-forwarded-proto": "https"}, "http"),  # not its header
        (["192.0.2.0/24"], "x-forwarded-for", {"x-forwarded-proto": "https"}, "http"),
    ],
)
def test_the_wsdl_address_has_the_scheme_the_client_used(
    trusted: list[str], header: str, headers: dict[str, str], scheme: str
) -> None:
    """Behind a proxy that ends TLS, soap:address says https — if the proxy is trusted."""
    configured = settings(trusted, server={"trusted_proxies": trusted, "forwarded_header": header})
    with serve_in_thread(service, configured, edges=["soap"]) as node:
        wsdl = httpx.get(f"{node.url}/soap?wsdl", headers=headers, timeout=10)
    assert wsdl.status_code == 200
    host = node.url.removeprefix("http://")
    assert f'location="{scheme}://{host}/soap"' in wsdl.text
