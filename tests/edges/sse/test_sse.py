"""The SSE edge: the wire format, auth for browsers, server streams, slow readers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread


class Price(BaseModel):
    symbol: str
    cents: int
    note: str = ""


svc = Service("ticker")
PriceEvent = svc.event("prices.changed", Price, channel="prices/{symbol}")
Public = svc.event("news.posted", Price, channel="news", public=True)


@svc.stream
async def watch_prices(symbol: str, count: int = 3) -> AsyncIterator[Price]:
    """Stream a few prices for a symbol."""
    for i in range(count):
        yield Price(symbol=symbol, cents=100 + i)


@svc.stream
async def failing(count: int = 1) -> AsyncIterator[int]:
    yield 1
    raise RuntimeError("feed broke")


@svc.method(public=True)
async def post_prices(symbol: str, count: int, size: int = 0) -> int:
    for i in range(count):
        await svc.publish(PriceEvent, Price(symbol=symbol, cents=i, note="x" * size))
    return count


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("sse") / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "database": str(db),
            "rate_limit": {"enabled": False},
            "auth": {"api_keys": [{"key": "reader", "subject": "reader"}]},
            "sse": {"heartbeat": 0.3, "send_buffer": 64 * 1024, "stall_timeout": 1.0},
            "history": {"max_events": 100_000},
        }
    )
    with serve_in_thread(svc, settings) as server:
        yield server


async def read_sse(response: httpx.Response, until: int) -> list[tuple[str, dict[str, Any]]]:
    """(field, value) pairs of the first ``until`` messages: comments, retry, events."""
    out: list[tuple[str, dict[str, Any]]] = []
    message: dict[str, Any] = {}
    async with asyncio.timeout(10):
        async for line in response.aiter_lines():
            if line.startswith(":"):
                out.append(("comment", {"text": line[1:].strip()}))
            elif line == "":
                if message:
                    out.append(("message", message))
                    message = {}
            else:
                field, _, value = line.partition(": ")
                message[field] = value
            if len(out) >= until:
                break
    return out


@pytest.fixture
async def http(node: RunningNode) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=None) as client:
        yield client


async def test_the_wire_format(http: httpx.AsyncClient) -> None:
    """id is the event id, event the type, data the envelope; retry and heartbeats too."""
    async with http.stream(
        "GET", "/v1/events/stream", params={"channel": "prices/+"}, headers={"x-api-key": "reader"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        await http.post("/v1/post_prices", json={"symbol": "ACME", "count": 2})
        items = await read_sse(response, 5)
    messages = [m for kind, m in items if kind == "message"]
    assert messages[0] == {"retry": "2000"}
    first = messages[1]
    envelope = orjson.loads(first["data"])
    assert first["id"] == envelope["id"] and first["event"] == "prices.changed"
    assert envelope["channel"] == "prices/ACME"
    assert envelope["data"] == {"symbol": "ACME", "cents": 0, "note": ""}


async def test_heartbeat_comments(http: httpx.AsyncClient) -> None:
    """An idle stream carries a comment every heartbeat (0.3 s here, 15 s by default)."""
    async with http.stream("GET", "/v1/events/stream", params={"channel": "news"}) as response:
        items = await read_sse(response, 4)
    assert ("comment", {"text": "ping"}) in items


async def test_browser_authentication(http: httpx.AsyncClient, node: RunningNode) -> None:
    """Header, ticket in the query string, or the ticket cookie; nothing for non-public events."""
    params = {"channel": "prices/+"}
    denied = await http.get("/v1/events/stream", params=params)
    assert denied.status_code == 401
    assert (
        await http.get("/v1/events/stream", params={**params, "access_token": "junk"})
    ).status_code == 401
    ticket = await http.post("/auth/ticket", headers={"x-api-key": "reader"})
    assert ticket.status_code == 200
    body = ticket.json()
    assert body["ticket"].startswith("pt.") and body["expires_in"] == 60
    assert "HttpOnly" in ticket.headers["set-cookie"]
    async with http.stream(
        "GET", "/v1/events/stream", params={**params, "access_token": body["ticket"]}
    ) as response:
        assert response.status_code == 200
    cookie = {"cookie": f"polyport_token={body['ticket']}"}
    async with http.stream("GET", "/v1/events/stream", params=params, headers=cookie) as response:
        assert response.status_code == 200
    assert (await http.post("/auth/ticket")).status_code == 401
    # A public event type needs no credentials at all.
    async with http.stream("GET", "/v1/events/stream", params={"channel": "news"}) as response:
        assert response.status_code == 200


async def test_bad_requests(http: httpx.AsyncClient) -> None:
    """No channel, a bad pattern, a malformed cursor: 422 before any stream starts."""
    headers = {"x-api-key": "reader"}
    assert (await http.get("/v1/events/stream", headers=headers)).status_code == 422
    assert (
        await http.get("/v1/events/stream", params={"channel": "a/#/b"}, headers=headers)
    ).status_code == 422
    bad_cursor = await http.get(
        "/v1/events/stream", params={"channel": "news"}, headers={"last-event-id": "nonsense"}
    )
    assert bad_cursor.status_code == 422


async def test_server_streams_are_served_as_sse(http: httpx.AsyncClient) -> None:
    """@service.stream methods: one `item` event per value, then `end` (or `error`)."""
    async with http.stream(
        "GET", "/v1/watch_prices/stream", params={"symbol": "ACME"}, headers={"x-api-key": "reader"}
    ) as response:
        assert response.status_code == 200
        items = await read_sse(response, 5)
    messages = [m for kind, m in items if kind == "message"]
    assert [orjson.loads(m["data"])["cents"] for m in messages[1:4]] == [100, 101, 102]
    assert messages[1]["event"] == "item" and messages[1]["id"] == "1"
    assert messages[4] == {"event": "end", "data": '{"items":3}'}
    async with http.stream(
        "GET", "/v1/failing/stream", headers={"x-api-key": "reader"}
    ) as response:
        items = await read_sse(response, 3)
    error = [m for kind, m in items if kind == "message"][-1]
    assert error["event"] == "error"
    assert orjson.loads(error["data"]) == {"code": "INTERNAL", "message": "internal error"}
    wrong = await http.get(
        "/v1/watch_prices/stream", params={"count": "x"}, headers={"x-api-key": "reader"}
    )
    assert wrong.status_code == 422


def _sse_edge(node: RunningNode) -> Any:
    return next(e for e in node.node.edges if e.name == "sse")


async def test_a_slow_reader_is_disconnected(http: httpx.AsyncClient, node: RunningNode) -> None:
    """A client that stops reading is cut off; others receive everything meanwhile."""
    slow = socket.create_connection((node.host, node.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.sendall(
            b"GET /v1/events/stream?channel=prices/%2B HTTP/1.1\r\nhost: x\r\n"
            b"x-api-key: reader\r\n\r\n"
        )
        assert slow.recv(12).startswith(b"HTTP/1.1 200")
        async with http.stream(
            "GET",
            "/v1/events/stream",
            params={"channel": "prices/+"},
            headers={"x-api-key": "reader"},
        ) as response:
            await asyncio.sleep(0.2)
            before = len(_sse_edge(node).streams)
            count = 3000
            poster = asyncio.create_task(
                http.post("/v1/post_prices", json={"symbol": "S", "count": count, "size": 1500})
            )
            got = 0
            async with asyncio.timeout(20):
                async for line in response.aiter_lines():
                    if line.startswith("event: prices.changed"):
                        got += 1
                        if got == count:
                            break
            await poster
            assert got == count
            began = time.monotonic()
            while len(_sse_edge(node).streams) >= before and time.monotonic() - began < 10:
                await asyncio.sleep(0.05)
            assert len(_sse_edge(node).streams) == before - 1
    finally:
        slow.close()


async def test_recovery_failed_moves_the_browser_cursor(http: httpx.AsyncClient) -> None:
    """The recovery-failed message carries an id, so EventSource resumes from there."""
    headers = {"x-api-key": "reader", "last-event-id": "aaaaaaaaaa:1"}
    params = {"channel": "prices/+"}
    async with http.stream("GET", "/v1/events/stream", params=params, headers=headers) as first:
        items = await read_sse(first, 3)
    failed = [m for kind, m in items if kind == "message" and m.get("event") == "recovery-failed"]
    assert failed and "@" in failed[0]["id"]
    await http.post("/v1/post_prices", json={"symbol": "LATE", "count": 1})
    resumed = {"x-api-key": "reader", "last-event-id": failed[0]["id"]}
    async with http.stream("GET", "/v1/events/stream", params=params, headers=resumed) as again:
        items = await read_sse(again, 3)
    events = [m for kind, m in items if kind == "message" and m.get("event") == "prices.changed"]
    assert orjson.loads(events[0]["data"])["data"]["symbol"] == "LATE"
