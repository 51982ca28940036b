"""Streaming methods called over JSON-RPC: -32601 naming their kind and where they are served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

svc = Service("rpcstreams")


@svc.stream
async def ticks(count: int = 2) -> AsyncIterator[int]:
    for n in range(count):
        yield n


@svc.client_stream
async def total(numbers: AsyncIterator[int]) -> int:
    return sum([n async for n in numbers])


@svc.bidi_stream
async def shout(words: AsyncIterator[str]) -> AsyncIterator[str]:
    async for word in words:
        yield word.upper()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    settings = Settings(dev=True, database=str(tmp_path / "db.sqlite3"))
    with serve_in_thread(svc, settings, edges=["jsonrpc"]) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "says"),
    [
        ("rpcstreams.ticks", "ticks is a server-streaming method"),
        ("ticks", "SSE, WebSocket (/ws) or gRPC"),
        ("total", "total is a client-streaming method"),
        ("shout", "shout is a bidirectional-streaming method"),
    ],
)
def test_streams_are_named_not_missing(node: RunningNode, method: str, says: str) -> None:
    """The method exists, so the error says what it is and where to call it."""
    request = {"jsonrpc": "2.0", "method": method, "params": {}, "id": 1}
    error = httpx.post(f"{node.url}/jsonrpc", json=request).json()["error"]
    assert error["code"] == -32601 and says in error["message"], error
    unknown = {"jsonrpc": "2.0", "method": "nope", "id": 2}
    assert (
        "no method named"
        in httpx.post(f"{node.url}/jsonrpc", json=unknown).json()["error"]["message"]
    )
