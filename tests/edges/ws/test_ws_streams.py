"""Streaming methods over the session protocol: server streams stream, the others are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from pydantic import BaseModel

from polyport import InvalidArgument, Service, Settings
from polyport.testing import RunningNode, serve_in_thread

svc = Service("streams")


class Price(BaseModel):
    symbol: str
    cents: int


@svc.stream
async def watch_prices(symbol: str, count: int = 3) -> AsyncIterator[Price]:
    """A few prices for a symbol."""
    for i in range(count):
        yield Price(symbol=symbol, cents=100 + i)


@svc.stream
async def forever(every: float = 0.01) -> AsyncIterator[int]:
    """Counts until cancelled."""
    n = 0
    while True:
        n += 1
        yield n
        await asyncio.sleep(every)


@svc.stream
async def countdown(start: int) -> AsyncIterator[int]:
    """Refuses starts above 5; breaks (internally) on 0 after one item."""
    if start > 5:
        raise InvalidArgument("at most 5")
    yield start or 1
    if start == 0:
        raise RuntimeError("the countdown broke (an internal detail)")


@svc.client_stream
async def total(numbers: AsyncIterator[int]) -> int:
    """Client streaming: not carried by the session."""
    return sum([n async for n in numbers])


@svc.bidi_stream
async def shout(words: AsyncIterator[str]) -> AsyncIterator[str]:
    """Bidirectional: not carried by the session."""
    async for word in words:
        yield word.upper()


@svc.method
async def ping() -> str:
    return "pong"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    settings = Settings(dev=True, database=str(tmp_path / "db.sqlite3"))
    with serve_in_thread(svc, settings, edges=["ws"]) as server:
        yield server


class Frames:
    """A client that keeps every frame, by id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def until(self, frame_id: Any, kind: str) -> list[dict[str, Any]]:
        """Every frame of ``frame_id`` up to and including one of type ``kind``."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if frame.get("id") == frame_id:
                    got.append(frame)
                    if frame["type"] in (kind, "error"):
                        return got


async def connect(node: RunningNode) -> Any:
    ws = await websockets.connect(node.url.replace("http://", "ws://") + "/ws")
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    return ws


async def test_a_server_stream_sends_items_then_end(node: RunningNode) -> None:
    """call on a server stream: one item frame per value, then end with the count."""
    async with await connect(node) as ws:
        client = Frames(ws)
        args = {"symbol": "ACME", "count": 3}
        await client.send({"id": "p", "type": "call", "method": "watch_prices", "args": args})
        frames = await client.until("p", "end")
        assert [f["type"] for f in frames] == ["item", "item", "item", "end"]
        assert [f["item"]["cents"] for f in frames[:3]] == [100, 101, 102]
        assert frames[0]["item"] == {"symbol": "ACME", "cents": 100}
        assert frames[-1]["items"] == 3
        # The session goes on: a unary call after the stream.
        await client.send({"id": 2, "type": "call", "method": "ping"})
        assert (await client.until(2, "result"))[-1]["result"] == "pong"


async def test_stream_errors_are_frames(node: RunningNode) -> None:
    """Refused at the start: one error; failing midway: items, then INTERNAL, no internals."""
    async with await connect(node) as ws:
        client = Frames(ws)
        await client.send({"id": 1, "type": "call", "method": "countdown", "args": {"start": 9}})
        [refused] = await client.until(1, "end")
        assert refused["error"]["code"] == "INVALID_ARGUMENT"
        await client.send({"id": 2, "type": "call", "method": "countdown", "args": {"start": "x"}})
        [invalid] = await client.until(2, "end")
        assert invalid["error"]["code"] == "INVALID_ARGUMENT"
        await client.send({"id": 3, "type": "call", "method": "countdown", "args": {"start": 0}})
        broken = await client.until(3, "end")
        assert [f["type"] for f in broken] == ["item", "error"]
        assert broken[-1]["error"]["code"] == "INTERNAL"
        assert "countdown broke" not in orjson.dumps(broken).decode()


async def test_a_stream_can_be_cancelled(node: RunningNode) -> None:
    """cancel names the call's id; the stream stops and its id is free again."""
    async with await connect(node) as ws:
        client = Frames(ws)
        await client.send({"id": "f", "type": "call", "method": "forever"})
        assert (await client.until("f", "item"))[-1]["item"] == 1
        await client.send({"id": "f", "type": "call", "method": "forever"})
        conflict = await client.until("f", "end")
        assert conflict[-1]["error"]["code"] == "CONFLICT"
        await client.send({"id": "c", "type": "cancel", "call": "f"})
        assert (await client.until("c", "cancelled"))[-1]["call"] == "f"
        await client.send({"id": "c2", "type": "cancel", "call": "f"})
        assert (await client.until("c2", "cancelled"))[-1]["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "kind"), [("total", "client-streaming"), ("shout", "bidirectional-streaming")]
)
async def test_input_streams_are_refused_precisely(
    node: RunningNode, method: str, kind: str
) -> None:
    """Client and bidirectional streams: INVALID_ARGUMENT naming the kind, not INTERNAL."""
    async with await connect(node) as ws:
        client = Frames(ws)
        await client.send({"id": 1, "type": "call", "method": method, "args": {}})
        [answer] = await client.until(1, "result")
        assert answer["error"]["code"] == "INVALID_ARGUMENT"
        assert kind in answer["error"]["message"] and "gRPC" in answer["error"]["message"]
        assert answer["error"]["details"][0]["field"] == "method"


def test_the_catalog_lists_what_the_session_serves(node: RunningNode) -> None:
    """The WebSocket catalog names unary and server-streaming methods, not input streams."""
    methods = {
        e.target for e in node.node.catalog() if e.pattern == "WebSocket" and e.kind == "method"
    }
    assert {"ping", "watch_prices", "forever", "countdown"} <= methods
    assert not methods & {"total", "shout"}
