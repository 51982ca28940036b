"""One origin rule on every WebSocket endpoint of a node (cross-site WebSocket hijacking).

A browser sends the ticket cookie with any WebSocket handshake, whichever page
opens it. Every endpoint the node serves — whatever edges it has — must refuse
a page on a foreign origin, and ``cors_origins = ["*"]`` must never make the
cookie count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

CHAT_KEY = "chat-key-0123456789"
APP = "https://app.example"
EVIL = "https://evil.example"
#: Offered on every path: each endpoint selects the subprotocol it speaks.
SUBPROTOCOLS: Any = ["polyport.v1", "graphql-transport-ws", "mqtt", "polyport.signal.v1"]


@pytest.fixture(params=[[APP], ["*", APP]], ids=["listed", "star"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": str(tmp_path / "db.sqlite3"),
            "cors_origins": request.param,
            "grpc": {"port": 0},
            "auth": {"api_keys": [{"key": CHAT_KEY, "subject": "agent", "scopes": ["chat"]}]},
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


def ticket_cookie(node: RunningNode) -> str:
    answer = httpx.post(f"{node.url}/auth/ticket", headers={"x-api-key": CHAT_KEY})
    return f"polyport_token={answer.json()['ticket']}"


def ws_url(node: RunningNode, path: str) -> str:
    return node.url.replace("http://", "ws://") + path


async def first_close(node: RunningNode, path: str, origin: str, cookie: str) -> int | None:
    """The close code a handshake from ``origin`` is answered with first; None: left open."""
    async with websockets.connect(
        ws_url(node, path),
        origin=origin,  # type: ignore[arg-type]
        subprotocols=SUBPROTOCOLS,
        additional_headers={"cookie": cookie},
    ) as ws:
        try:
            # /jsonrpc says nothing until asked: a second of silence means "let in".
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await ws.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
    return None


async def test_every_websocket_endpoint_refuses_foreign_pages(node: RunningNode) -> None:
    """/ws, /jsonrpc, /graphql and any other: a foreign origin is closed before anything."""
    paths = sorted(node.node.http.websocket)
    assert {"/ws", "/jsonrpc", "/graphql"} <= set(paths)
    cookie = ticket_cookie(node)
    star = "*" in node.node.settings.cors_origins
    for path in paths:
        code = await first_close(node, path, EVIL, cookie)
        if star:
            assert code not in (1008, 4403), path  # let in, as anonymous (below)
        else:
            # 1008 policy violation; graphql-transport-ws's own "Forbidden".
            assert code in (1008, 4403), path


async def test_the_ticket_cookie_counts_only_from_an_allowed_origin(node: RunningNode) -> None:
    """/ws and /jsonrpc: the cookie authenticates a listed origin's page, never a '*' one's."""
    cookie = ticket_cookie(node)
    star = "*" in node.node.settings.cors_origins
    origins = [APP, EVIL] if star else [APP]
    for origin in origins:
        trusted = origin == APP
        async with websockets.connect(
            ws_url(node, "/ws"),
            origin=origin,
            additional_headers={"cookie": cookie},  # type: ignore[arg-type]
        ) as ws:
            welcome = orjson.loads(await ws.recv())
            assert welcome["subject"] == ("agent" if trusted else None), origin
        async with websockets.connect(
            ws_url(node, "/jsonrpc"),
            origin=origin,
            additional_headers={"cookie": cookie},  # type: ignore[arg-type]
        ) as ws:
            call = {"jsonrpc": "2.0", "method": "sales_report", "params": {"delay": 0}, "id": 1}
            await ws.send(orjson.dumps(call).decode())
            answer = orjson.loads(await ws.recv())
            if trusted:
                assert "result" in answer, answer
            else:
                assert answer["error"]["code"] == -32001, answer  # anonymous: sign in


async def test_same_origin_pages_keep_their_cookie(node: RunningNode) -> None:
    """The node's own pages (Origin = Host) are let in with the cookie on every path."""
    cookie = ticket_cookie(node)
    own = node.url
    async with websockets.connect(
        ws_url(node, "/jsonrpc"),
        origin=own,
        additional_headers={"cookie": cookie},  # type: ignore[arg-type]
    ) as ws:
        call = {"jsonrpc": "2.0", "method": "sales_report", "params": {"delay": 0}, "id": 1}
        await ws.send(orjson.dumps(call).decode())
        assert "result" in orjson.loads(await ws.recv())
    async with websockets.connect(
        ws_url(node, "/graphql"),
        origin=own,
        subprotocols=["graphql-transport-ws"],  # type: ignore[arg-type, list-item]
    ) as ws:
        await ws.send(
            orjson.dumps({"type": "connection_init", "payload": {"x-api-key": CHAT_KEY}}).decode()
        )
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
