"""Signaling at /webrtc/signal with a Python WebSocket client: rooms, presence, relay, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from tests.webrtc.conftest import signal_url

from polyport.testing import RunningNode


def signaling_of(node: RunningNode) -> Any:
    """The node's signaling socket (its rooms, its settings)."""
    (edge,) = [e for e in node.node.edges if e.name == "webrtc"]
    return edge.signaling  # type: ignore[attr-defined]


SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class Peer:
    """A signaling client that answers frames by id and keeps what else arrives."""

    def __init__(self, ws: Any, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.next_id = 0
        self.pushed: list[dict[str, Any]] = []

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(orjson.dumps({"id": self.next_id, **frame}).decode())
        return await self.answer(self.next_id)

    async def answer(self, frame_id: Any) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                frame: dict[str, Any] = orjson.loads(await self.ws.recv())
                if "id" in frame and frame["id"] == frame_id:
                    return frame
                self.pushed.append(frame)

    async def pushed_frame(self, kind: str) -> dict[str, Any]:
        """The next frame of ``kind`` not answering a request."""
        async with asyncio.timeout(5):
            while True:
                for frame in self.pushed:
                    if frame["type"] == kind:
                        self.pushed.remove(frame)
                        return frame
                self.pushed.append(orjson.loads(await self.ws.recv()))


@contextlib.asynccontextmanager
async def peer(node: RunningNode, **headers: str) -> AsyncIterator[Peer]:
    async with websockets.connect(
        signal_url(node),
        subprotocols=["polyport.signal.v1"],  # type: ignore[list-item]
        additional_headers=headers,
    ) as ws:
        welcome = orjson.loads(await ws.recv())
        assert ws.subprotocol == "polyport.signal.v1"
        yield Peer(ws, welcome)


async def test_join_presence_and_relay(dev: RunningNode) -> None:
    """Join answers the members; others hear of joins and leaves; offers, answers and
    candidates reach the named peer only, marked with the sender's name."""
    async with peer(dev) as a, peer(dev) as b, peer(dev) as c:
        assert a.welcome["type"] == "welcome" and a.welcome["ice_servers"] == []
        joined = await a.request({"type": "join", "room": "r1", "peer": "alice"})
        assert joined == {"id": 1, "type": "joined", "room": "r1", "peer": "alice", "members": []}
        joined = await b.request({"type": "join", "room": "r1", "peer": "bob"})
        assert joined["members"] == ["alice"]
        assert await a.pushed_frame("peer-joined") == {
            "type": "peer-joined",
            "room": "r1",
            "peer": "bob",
        }
        anonymous = await c.request({"type": "join", "room": "r1"})
        assert anonymous["peer"].startswith("peer-") and anonymous["members"] == ["alice", "bob"]
        await a.pushed_frame("peer-joined")
        await b.pushed_frame("peer-joined")

        sent = await b.request({"type": "offer", "room": "r1", "to": "alice", "sdp": SDP})
        assert sent == {"id": 2, "type": "sent", "to": "alice"}
        offer = await a.pushed_frame("offer")
        assert offer == {"type": "offer", "room": "r1", "from": "bob", "sdp": SDP}
        await a.request({"type": "answer", "room": "r1", "to": "bob", "sdp": SDP})
        assert (await b.pushed_frame("answer"))["from"] == "alice"
        candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
        await a.request({"type": "candidate", "room": "r1", "to": "bob", "candidate": candidate})
        relayed = await b.pushed_frame("candidate")
        assert relayed["candidate"] == candidate and relayed["from"] == "alice"
        await a.request({"type": "candidate", "room": "r1", "to": "bob", "candidate": None})
        assert (await b.pushed_frame("candidate"))["candidate"] is None
        assert not [f for f in c.pushed if f["type"] in ("offer", "answer", "candidate")]

        left = await b.request({"type": "leave", "room": "r1"})
        assert left == {"id": 3, "type": "left", "room": "r1", "peer": "bob"}
        assert (await a.pushed_frame("peer-left"))["peer"] == "bob"
    # A closed connection leaves its rooms: the room is gone with its last member.
    for _ in range(50):
        if not signaling_of(dev).rooms.rooms:
            break
        await asyncio.sleep(0.05)
    assert signaling_of(dev).rooms.rooms == {}


async def test_errors_are_clear_and_harm_nobody(dev: RunningNode) -> None:
    """Unknown rooms, absent peers, malformed frames and SDP, oversized messages: an error
    frame each, with the frame's id when it had one; the room goes on."""
    async with peer(dev) as a, peer(dev) as b:
        await a.request({"type": "join", "room": "r", "peer": "alice"})
        await b.request({"type": "join", "room": "r", "peer": "bob"})
        to_nobody = await a.request({"type": "offer", "room": "r", "to": "carol", "sdp": SDP})
        assert to_nobody["error"]["code"] == "NOT_FOUND"
        assert "no peer 'carol' in room 'r'" in to_nobody["error"]["message"]
        unknown = await a.request({"type": "offer", "room": "elsewhere", "to": "bob", "sdp": SDP})
        assert (
            unknown["error"]["code"] == "NOT_FOUND"
            and "join it first" in unknown["error"]["message"]
        )
        assert (await a.request({"type": "leave", "room": "nope"}))["error"]["code"] == "NOT_FOUND"
        bad_sdp = await a.request({"type": "offer", "room": "r", "to": "bob", "sdp": "hello"})
        assert bad_sdp["error"]["code"] == "INVALID_ARGUMENT"
        assert bad_sdp["error"]["details"][0]["field"] == "sdp"
        bad_name = await a.request({"type": "join", "room": "a room/with spaces"})
        assert bad_name["error"]["details"][0]["field"] == "room"
        taken = await a.request({"type": "join", "room": "r2", "peer": "x"})
        assert taken["type"] == "joined"
        again = await a.request({"type": "join", "room": "r", "peer": "other"})
        assert again["error"]["code"] == "CONFLICT"
        unknown_type = await a.request({"type": "dance", "room": "r"})
        assert unknown_type["error"]["code"] == "INVALID_ARGUMENT"

        await a.ws.send("not json")
        assert (await a.answer(None))["error"]["code"] == "INVALID_ARGUMENT"
        await a.ws.send(orjson.dumps({"type": "ping"}).decode())
        assert "'id'" in (await a.answer(None))["error"]["message"]
        await a.ws.send(
            orjson.dumps(
                {"id": 9, "type": "offer", "room": "r", "to": "bob", "sdp": "v=0" + "x" * 5000}
            ).decode()
        )
        too_big = await a.answer(None)
        assert too_big["error"]["code"] == "PAYLOAD_TOO_LARGE"

        # Nothing of that reached bob, and the room still works.
        assert not [f for f in b.pushed if f["type"] == "offer"]
        await a.request({"type": "offer", "room": "r", "to": "bob", "sdp": SDP})
        assert (await b.pushed_frame("offer"))["sdp"] == SDP
        assert (await a.request({"type": "ping"}))["type"] == "pong"


async def test_room_size_and_rooms_per_connection(dev: RunningNode) -> None:
    """A full room and a connection in too many rooms are refused with RATE_LIMITED."""
    async with peer(dev) as a, peer(dev) as b, peer(dev) as c, peer(dev) as d:
        for p in (a, b, c):
            assert (await p.request({"type": "join", "room": "full"}))["type"] == "joined"
        refused = await d.request({"type": "join", "room": "full"})
        assert refused["error"]["code"] == "RATE_LIMITED" and "full" in refused["error"]["message"]
        await d.request({"type": "join", "room": "one"})
        await d.request({"type": "join", "room": "two"})
        third = await d.request({"type": "join", "room": "three"})
        assert third["error"]["code"] == "RATE_LIMITED"
        assert "rooms per connection" in third["error"]["message"]


async def test_message_rate(dev: RunningNode) -> None:
    """Beyond the burst, messages are refused with RATE_LIMITED and a retry_after."""
    async with peer(dev) as a:
        for n in range(60):
            await a.ws.send(orjson.dumps({"id": n, "type": "ping"}).decode())
        answers = [orjson.loads(await a.ws.recv()) for _ in range(60)]
        limited = [f for f in answers if f["type"] == "error"]
        assert limited and all(f["error"]["code"] == "RATE_LIMITED" for f in limited)
        assert limited[0]["error"]["retry_after"] > 0
        assert len([f for f in answers if f["type"] == "pong"]) >= 40


async def test_peers_per_node(dev: RunningNode) -> None:
    """Beyond webrtc.max_peers connections, a new one gets UNAVAILABLE and is closed."""
    signaling = signaling_of(dev)
    signaling.config = signaling.config.model_copy(update={"max_peers": 1})
    async with peer(dev) as a:
        assert a.welcome["type"] == "welcome"
        async with websockets.connect(signal_url(dev)) as ws:
            refused = orjson.loads(await ws.recv())
            assert refused["error"]["code"] == "UNAVAILABLE"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_authentication_like_ws(secure: RunningNode) -> None:
    """No credentials, or too few scopes: an error frame, then close 1008. A key in a header,
    the bearer subprotocol or ?access_token= is let in."""
    for headers, code in (
        ({}, "UNAUTHENTICATED"),
        ({"X-API-Key": "plain-key"}, "PERMISSION_DENIED"),
    ):
        async with websockets.connect(signal_url(secure), additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv())["error"]["code"] == code
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with peer(secure, **{"X-API-Key": "rtc-key"}) as a:
        assert a.welcome["subject"] == "alice"
    async with websockets.connect(
        signal_url(secure),
        subprotocols=["polyport.signal.v1", "bearer.rtc-key"],  # type: ignore[list-item]
    ) as ws:
        assert orjson.loads(await ws.recv())["subject"] == "alice"
    async with websockets.connect(signal_url(secure) + "?access_token=rtc-key") as ws:
        assert orjson.loads(await ws.recv())["subject"] == "alice"


async def drain(ws: Any) -> None:
    """Read until the connection closes."""
    while True:
        await ws.recv()


async def test_closed_when_the_credentials_expire(tmp_path: Any) -> None:
    """A connection authenticated with a JWT is closed (1008) when the token expires."""
    import time

    import jwt

    from polyport import Settings
    from polyport.demo.shop import shop
    from polyport.testing import serve_in_thread

    secret = "s" * 32
    settings = Settings.model_validate(
        {"database": str(tmp_path / "db.sqlite3"), "auth": {"jwt": {"hs256_secret": secret}}}
    )
    token = jwt.encode({"sub": "eve", "exp": int(time.time()) + 2}, secret, algorithm="HS256")
    with serve_in_thread(shop, settings) as node:
        async with peer(node, Authorization=f"Bearer {token}") as a:
            assert a.welcome["subject"] == "eve"
            assert (await a.request({"type": "join", "room": "r"}))["type"] == "joined"
            async with asyncio.timeout(6):
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await drain(a.ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "credentials expired"
