"""The WebSocket edge: frames, auth, bad input, limits, keep-alive, slow consumers."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread


def ws_url(node: RunningNode) -> str:
    return node.url.replace("http://", "ws://") + "/ws"


# One node at a time: the demo's Service object can be served by one node only.
@pytest.fixture
def dev(tmp_path: Any) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(db),
            "rate_limit": {"enabled": False},
            "websocket": {"max_subscriptions": 3, "send_buffer": 64 * 1024, "stall_timeout": 1.0},
            "history": {"max_events": 100_000},
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


@pytest.fixture
def secure(tmp_path: Any) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    db = tmp_path / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "database": str(db),
            "auth": {
                "api_keys": [
                    {"key": "plain-key", "subject": "plain"},
                    {"key": "chat-key", "subject": "chatter", "scopes": ["chat"]},
                ]
            },
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


class Client:
    """A websockets-library client that answers frames by id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        frame = {"id": self.next_id, **frame}
        await self.ws.send(orjson.dumps(frame).decode())
        return await self.answer(self.next_id)

    async def answer(self, frame_id: Any) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                frame = orjson.loads(await self.ws.recv())
                if frame.get("type") == "event":
                    self.events.append(frame["event"])
                elif frame.get("id") == frame_id:
                    return frame  # type: ignore[no-any-return]


@pytest.fixture
async def client(dev: RunningNode) -> AsyncIterator[Client]:
    async with websockets.connect(ws_url(dev), subprotocols=["polyport.v1"]) as ws:  # type: ignore[list-item]
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["heartbeat"] == 25.0
        assert ws.subprotocol == "polyport.v1"
        yield Client(ws)


async def test_call_uses_the_dispatch_pipeline(client: Client) -> None:
    """A call answers like REST: the result, or the same error codes."""
    assert (await client.request({"type": "call", "method": "multiply", "args": {"a": 6, "b": 7}}))[
        "result"
    ] == 42
    missing = await client.request({"type": "call", "method": "get_user", "args": {"id": 9999}})
    assert missing["error"]["code"] == "NOT_FOUND"
    wrong = await client.request({"type": "call", "method": "multiply", "args": {"a": "x"}})
    assert wrong["error"]["code"] == "INVALID_ARGUMENT"
    assert {d["field"] for d in wrong["error"]["details"]} == {"a", "b"}
    unknown = await client.request({"type": "call", "method": "nope", "args": {}})
    assert unknown["error"]["code"] == "NOT_FOUND"
    page = await client.request({"type": "call", "method": "list_products", "args": {"limit": 2}})
    assert len(page["result"]["items"]) == 2 and page["result"]["next_cursor"]


async def test_the_guides_chat_example(dev: RunningNode) -> None:
    """Two clients in a room: a published chat message reaches both, validated."""
    async with (
        websockets.connect(ws_url(dev)) as a_ws,
        websockets.connect(ws_url(dev)) as b_ws,
    ):
        a, b = Client(a_ws), Client(b_ws)
        await a_ws.recv()
        await b_ws.recv()
        for c in (a, b):
            assert (await c.request({"type": "subscribe", "channels": ["chat/support"]}))[
                "type"
            ] == "subscribed"
        sent = await a.request(
            {
                "type": "publish",
                "event": "chat.message",
                "data": {"room": "support", "user": "alice", "text": "Hello!"},
            }
        )
        assert sent["type"] == "published" and ":" in sent["event_id"]
        frame = orjson.loads(await b_ws.recv())
        assert frame["type"] == "event"
        assert frame["event"]["data"] == {"room": "support", "user": "alice", "text": "Hello!"}
        assert frame["event"]["channel"] == "chat/support"
        bad = await a.request(
            {
                "type": "publish",
                "event": "chat.message",
                "data": {"room": "Support Room!", "user": "", "text": "x"},
            }
        )
        assert bad["error"]["code"] == "INVALID_ARGUMENT"
        wrong_room = await a.request(
            {
                "type": "publish",
                "event": "chat.message",
                "channel": "orders/created",
                "data": {"room": "support", "user": "a", "text": "x"},
            }
        )
        assert wrong_room["error"]["code"] == "INVALID_ARGUMENT"
        not_client = await a.request({"type": "publish", "event": "nope", "data": {}})
        assert not_client["error"]["code"] == "NOT_FOUND"


async def test_subscribe_resume_and_unsubscribe(client: Client, dev: RunningNode) -> None:
    """Events after the cursor, then live; overlaps refused; unsubscribing stops them."""
    async with httpx.AsyncClient(base_url=dev.url) as http:
        await http.post("/v1/users", json={"name": "Wes", "email": "wes@example.com"})
        start = (await http.get("/v1/events", params={"channel": "users/#"})).json()
        first = start["events"][0]["id"]
        sub = await client.request({"type": "subscribe", "channels": ["users/#"], "after": first})
        assert sub["recovered"] is True
        assert "@" in sub["cursor"]  # where it starts: resumable before any event arrives
        overlap = await client.request({"type": "subscribe", "channels": ["users/created"]})
        assert overlap["error"]["code"] == "CONFLICT"
        await http.post("/v1/users", json={"name": "Wil", "email": "wil@example.com"})
        async with asyncio.timeout(10):
            while not any(e["data"].get("name") == "Wil" for e in client.events):
                client.events.append(orjson.loads(await client.ws.recv())["event"])
        gone = await client.request({"type": "unsubscribe", "subscription": sub["subscription"]})
        assert gone["type"] == "unsubscribed"
        again = await client.request({"type": "unsubscribe", "subscription": sub["subscription"]})
        assert again["error"]["code"] == "NOT_FOUND"
    stale = await client.request(
        {"type": "subscribe", "channels": ["orders/+"], "after": "zzzzzzzzzz:1"}
    )
    assert stale["type"] == "subscribed" and stale["recovered"] is False


async def test_bad_frames_get_error_frames(client: Client) -> None:
    """Non-JSON, non-objects, missing or bad ids, unknown types: an error frame each."""
    for raw, code_id in (
        ("not json", None),
        ("[1, 2]", None),
        ('{"type": "ping"}', None),
        ('{"id": true, "type": "ping"}', None),
        ('{"id": {}, "type": "ping"}', None),
        ('{"id": 7, "type": "dance"}', 7),
        ('{"id": 8}', 8),
        ('{"id": 9, "type": "subscribe", "channels": "orders"}', 9),
        ('{"id": 10, "type": "subscribe", "channels": ["a/#/b"]}', 10),
        ('{"id": 11, "type": "call", "method": 5}', 11),
        ('{"id": 12, "type": "subscribe", "channels": ["x"], "after": "garbage"}', 12),
    ):
        await client.ws.send(raw)
        frame = orjson.loads(await client.ws.recv())
        assert frame["type"] == "error", raw
        assert frame["id"] == code_id, raw
        assert frame["error"]["code"] == "INVALID_ARGUMENT", raw
    assert (await client.request({"type": "ping"}))["type"] == "pong"  # still usable


async def test_subscription_limit(client: Client) -> None:
    """At most max_subscriptions per connection."""
    for channel in ("a", "b", "c"):
        assert (await client.request({"type": "subscribe", "channels": [channel]}))[
            "type"
        ] == "subscribed"
    extra = await client.request({"type": "subscribe", "channels": ["d"]})
    assert extra["error"]["code"] == "RATE_LIMITED"


async def test_oversized_frames_close_with_1009(dev: RunningNode) -> None:
    """A message over 64 KiB closes the connection with 'message too big'."""
    async with websockets.connect(ws_url(dev), max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (70 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_authentication_on_connect_and_per_channel(secure: RunningNode) -> None:
    """Header, subprotocol, query token, or an auth frame; channels need their scopes."""
    url = ws_url(secure)
    async with websockets.connect(url) as ws:
        welcome = orjson.loads(await ws.recv())
        assert welcome["subject"] is None
        c = Client(ws)
        denied = await c.request({"type": "subscribe", "channels": ["orders/#"]})
        assert denied["error"]["code"] == "UNAUTHENTICATED"
        assert (await c.request({"type": "call", "method": "multiply", "args": {"a": 1, "b": 2}}))[
            "result"
        ] == 2  # public
        bad = await c.request({"type": "auth", "token": "wrong"})
        assert bad["error"]["code"] == "UNAUTHENTICATED"
        assert (await c.request({"type": "auth", "api_key": "plain-key"}))["subject"] == "plain"
        assert (await c.request({"type": "subscribe", "channels": ["orders/#"]}))[
            "type"
        ] == "subscribed"
        chat = await c.request({"type": "subscribe", "channels": ["chat/+"]})
        assert chat["error"]["code"] == "PERMISSION_DENIED"
        publish = await c.request(
            {
                "type": "publish",
                "event": "chat.message",
                "data": {"room": "r", "user": "u", "text": "t"},
            }
        )
        assert publish["error"]["code"] == "PERMISSION_DENIED"
    async with websockets.connect(url, additional_headers={"x-api-key": "chat-key"}) as ws:
        assert orjson.loads(await ws.recv())["subject"] == "chatter"
    async with websockets.connect(url, subprotocols=["polyport.v1", "bearer.chat-key"]) as ws:  # type: ignore[list-item]
        assert orjson.loads(await ws.recv())["subject"] == "chatter"
        assert ws.subprotocol == "polyport.v1"
    async with httpx.AsyncClient() as http:
        issued = await http.post(f"{secure.url}/auth/ticket", headers={"x-api-key": "chat-key"})
    ticket = issued.json()
    async with websockets.connect(f"{url}?access_token={ticket['ticket']}") as ws:
        assert orjson.loads(await ws.recv())["subject"] == "chatter"
    async with websockets.connect(url, additional_headers={"x-api-key": "nope"}) as ws:
        frame = orjson.loads(await ws.recv())
        assert frame["error"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def _live_sockets(node: RunningNode) -> int:
    edge = next(e for e in node.node.edges if e.name == "ws")
    return len(edge.sockets)  # type: ignore[attr-defined]


async def test_connections_and_objects_return_to_baseline(dev: RunningNode) -> None:
    """After many connections with bad input come and go, nothing is left behind."""
    from polyport.core.session import Session
    from polyport.server.websocket import WebSocket

    def alive() -> tuple[int, int, int]:
        gc.collect()
        objects = gc.get_objects()
        return (
            _live_sockets(dev),
            sum(isinstance(o, WebSocket) for o in objects),
            sum(isinstance(o, Session) for o in objects),
        )

    await asyncio.sleep(0.2)
    before = alive()
    for _ in range(30):
        async with websockets.connect(ws_url(dev)) as ws:
            await ws.recv()
            await ws.send("garbage")
            await ws.recv()
            await ws.send('{"id": 1, "type": "subscribe", "channels": ["orders/#"]}')
            await ws.recv()
    for _ in range(100):
        if alive() == before:
            break
        await asyncio.sleep(0.05)
    assert alive() == before


def _raw_websocket(node: RunningNode) -> socket.socket:
    """A hand-made client that completes the handshake and then does what it is told."""
    sock = socket.create_connection((node.host, node.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_a_slow_consumer_is_cut_off_while_others_keep_up(dev: RunningNode) -> None:
    """A client that stops reading is closed (1013); a reading client still gets everything."""
    from polyport.demo.shop import ChatEvent, ChatMessage

    count, text = 4000, "x" * 1500  # ~6 MB: more than socket buffers hold
    slow = _raw_websocket(dev)
    try:
        slow.sendall(_masked_text(b'{"id":1,"type":"subscribe","channels":["chat/flood"]}'))
        async with websockets.connect(ws_url(dev), max_queue=None) as fast_ws:
            fast = Client(fast_ws)
            await fast_ws.recv()
            await fast.request({"type": "subscribe", "channels": ["chat/flood"]})
            await asyncio.sleep(0.2)
            before = _live_sockets(dev)

            async def flood() -> None:
                for _ in range(count):
                    await ChatEvent.publish(ChatMessage(room="flood", user="bot", text=text))

            received = 0

            async def reader() -> None:
                nonlocal received
                while received < count:
                    frame = orjson.loads(await fast_ws.recv())
                    if frame.get("type") == "event":
                        received += 1

            reading = asyncio.create_task(reader())
            await asyncio.get_running_loop().run_in_executor(None, dev.call, flood())
            await asyncio.wait_for(reading, 60)
            assert received == count
            for _ in range(200):
                if _live_sockets(dev) < before:
                    break
                await asyncio.sleep(0.05)
            assert _live_sockets(dev) == before - 1, "the slow client is still connected"
    finally:
        slow.close()


async def test_silent_clients_are_closed_by_the_heartbeat(tmp_path: Any) -> None:
    """No pong, no frame for ping_interval + ping_timeout: closed with 1001."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "hb.sqlite3"),
            "websocket": {"ping_interval": 0.2, "ping_timeout": 0.2},
        }
    )
    with serve_in_thread(shop, settings) as node:
        async with websockets.connect(ws_url(node), ping_interval=None) as polite:
            await polite.recv()
            silent = _raw_websocket(node)  # never answers the server's pings
            silent.settimeout(5)

            def read_until_closed() -> bytes:
                data = b""
                while b"heartbeat timeout" not in data:
                    chunk = silent.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return data

            began = time.monotonic()
            try:  # read in a thread: the polite client must keep answering pings meanwhile
                data = await asyncio.get_running_loop().run_in_executor(None, read_until_closed)
            finally:
                silent.close()
            assert b"heartbeat timeout" in data
            assert time.monotonic() - began < 5
            # The websockets client answers pings itself, so it stays connected.
            await asyncio.sleep(0.8)
            assert (await Client(polite).request({"type": "ping"}))["type"] == "pong"


async def test_an_auth_frame_checks_every_subscription_again(secure: RunningNode) -> None:
    """Rights change with an auth frame: what the new principal may not read stops."""
    from polyport.demo.shop import InventoryEvent, shop

    url = ws_url(secure)
    chat_message = {"room": "support", "user": "u", "text": "for chatters only"}
    headers = {"x-api-key": "chat-key"}
    async with (
        websockets.connect(url, additional_headers=headers) as narrow_ws,
        websockets.connect(url, additional_headers=headers) as wide_ws,
        websockets.connect(url, additional_headers=headers) as sender_ws,
    ):
        for ws in (narrow_ws, wide_ws, sender_ws):
            await ws.recv()
        narrow, wide, sender = Client(narrow_ws), Client(wide_ws), Client(sender_ws)
        only_chat = await narrow.request({"type": "subscribe", "channels": ["chat/+"]})
        everything = await wide.request({"type": "subscribe", "channels": ["#"]})
        assert only_chat["type"] == everything["type"] == "subscribed"
        for client in (narrow, wide):
            signed = await client.request({"type": "auth", "api_key": "plain-key"})
            assert signed["subject"] == "plain"
        async with asyncio.timeout(10):
            ended = orjson.loads(await narrow_ws.recv())
        assert ended["type"] == "subscription-ended"
        assert ended["subscription"] == only_chat["subscription"]
        assert ended["error"]["code"] == "PERMISSION_DENIED"
        sent = await sender.request(
            {"type": "publish", "event": "chat.message", "data": chat_message}
        )
        assert sent["type"] == "published"
        stock = {"product_id": 1, "stock": 5, "delta": 1, "reason": "restock"}
        secure.call(shop.publish(InventoryEvent, stock))
        # "#" goes on, without chat.message: the inventory event arrives, the chat
        # message published before it does not.
        async with asyncio.timeout(10):
            frame = orjson.loads(await wide_ws.recv())
        assert frame["type"] == "event" and frame["event"]["type"] == "inventory.changed"
        await narrow.request({"type": "ping"})
        assert narrow.events == [] and wide.events == []
