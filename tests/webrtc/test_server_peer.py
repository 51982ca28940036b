"""The server peer at /webrtc/offer, with an aiortc client over loopback ICE.

The data channel labelled polyport.v1 speaks /ws's session frames through the
same core session: calls answer, events caused by REST writes arrive, resume
works with the same ids, errors have the same codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from polyport.edges.webrtc.ice import loopback_only
from polyport.testing import RunningNode


class Channel:
    """A polyport.v1 data channel seen from the client: frames by id, events kept."""

    def __init__(self, pc: RTCPeerConnection, channel: Any) -> None:
        self.pc = pc
        self.channel = channel
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        channel.on("message", lambda m: self.inbox.put_nowait(orjson.loads(m)))

    async def frame(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return await self.inbox.get()

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        self.channel.send(orjson.dumps({"id": self.next_id, **frame}).decode())
        while True:
            answer = await self.frame()
            if answer.get("type") == "event":
                self.events.append(answer["event"])
            elif answer.get("id") == self.next_id:
                return answer

    async def wait_events(self, count: int) -> list[dict[str, Any]]:
        while len(self.events) < count:
            frame = await self.frame()
            if frame.get("type") == "event":
                self.events.append(frame["event"])
        return self.events


async def offer(node: RunningNode, pc: RTCPeerConnection, **headers: str) -> httpx.Response:
    with loopback_only():  # the client, too, offers 127.0.0.1 only
        await pc.setLocalDescription(await pc.createOffer())
    body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{node.url}/webrtc/offer", json=body, headers=headers)


@contextlib.asynccontextmanager
async def connect(node: RunningNode, **headers: str) -> AsyncIterator[Channel]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        raw = pc.createDataChannel("polyport.v1")
        channel = Channel(pc, raw)
        answer = await offer(node, pc, **headers)
        assert answer.status_code == 200, answer.text
        await pc.setRemoteDescription(RTCSessionDescription(**answer.json()))
        welcome = await channel.frame()
        assert welcome["type"] == "welcome" and welcome["session"]
        yield channel
    finally:
        await pc.close()


async def test_answer_has_loopback_candidates_only(dev: RunningNode) -> None:
    """The node's answer offers a 127.0.0.1 host candidate and no other address."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("polyport.v1")
        answer = (await offer(dev, pc)).json()
        assert answer["type"] == "answer"
        candidates = [line for line in answer["sdp"].splitlines() if "a=candidate" in line]
        assert candidates
        assert all(line.split()[4] == "127.0.0.1" for line in candidates), candidates
    finally:
        await pc.close()


async def test_calls_and_events_over_the_data_channel(dev: RunningNode) -> None:
    """A call answers; events caused by a REST write arrive; errors as on /ws."""
    async with connect(dev) as channel:
        result = await channel.request(
            {"type": "call", "method": "multiply", "args": {"a": 6, "b": 7}}
        )
        assert result == {"id": 1, "type": "result", "result": 42}
        missing = await channel.request({"type": "call", "method": "nope", "args": {}})
        assert missing["error"]["code"] == "NOT_FOUND"
        subscribed = await channel.request({"type": "subscribe", "channels": ["users/#"]})
        assert subscribed["type"] == "subscribed"
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"{dev.url}/v1/users", json={"name": "Ada", "email": "ada@example.com"}
            )
            assert created.status_code == 201
        (event,) = await channel.wait_events(1)
        assert event["type"] == "users.created" and event["data"]["name"] == "Ada"
        assert (await channel.request({"type": "ping"}))["type"] == "pong"


async def test_resume_after_a_reconnect(dev: RunningNode) -> None:
    """A new peer resumes from the last event id seen: exactly the missed events arrive."""
    async with connect(dev) as channel:
        await channel.request({"type": "subscribe", "channels": ["users/#"]})
        async with httpx.AsyncClient() as http:
            posted = await http.post(
                f"{dev.url}/v1/users", json={"name": "A", "email": "a@example.com"}
            )
            assert posted.status_code == 201
            (first,) = await channel.wait_events(1)
    async with httpx.AsyncClient() as http:
        for name in ("B", "C"):
            await http.post(
                f"{dev.url}/v1/users", json={"name": name, "email": f"{name}@example.com"}
            )
    async with connect(dev) as channel:
        answer = await channel.request(
            {"type": "subscribe", "channels": ["users/#"], "after": first["id"]}
        )
        assert answer["recovered"] is True
        missed = await channel.wait_events(2)
        assert [e["data"]["name"] for e in missed] == ["B", "C"]


async def test_bad_offers_and_bounds(secure: RunningNode) -> None:
    """Credentials as for signaling; malformed offers are refused; peers per node bounded."""
    async with httpx.AsyncClient() as http:
        url = f"{secure.url}/webrtc/offer"
        nobody = await http.post(url, json={"sdp": "v=0\r\n", "type": "offer"})
        assert nobody.status_code == 401
        key = {"X-API-Key": "rtc-key"}
        assert (await http.post(url, content=b"{", headers=key)).status_code == 400
        not_sdp = await http.post(url, json={"sdp": "hello", "type": "offer"}, headers=key)
        assert not_sdp.status_code == 422
        no_channel = await http.post(url, json={"sdp": "v=0\r\n", "type": "offer"}, headers=key)
        assert "no data channel" in no_channel.text
        broken = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        garbage = await http.post(url, json={"sdp": broken, "type": "offer"}, headers=key)
        assert garbage.status_code == 422, garbage.text
    async with connect(secure, **{"X-API-Key": "rtc-key"}) as channel:
        assert (
            await channel.request({"type": "call", "method": "multiply", "args": {"a": 2, "b": 3}})
        )["result"] == 6


def peers_of(node: RunningNode) -> Any:
    """The node's server peers (their set, their settings)."""
    (edge,) = [e for e in node.node.edges if e.name == "webrtc"]
    return edge.peers  # type: ignore[attr-defined]


async def wait_until(condition: Any, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_peer_that_never_connects_is_closed(dev: RunningNode) -> None:
    """An answered offer whose client never connects is closed after connect_timeout (3 s);
    beyond max_server_peers, offers are answered 503 with Retry-After."""
    peers = peers_of(dev)
    peers.config = peers.config.model_copy(update={"max_server_peers": 1})
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("polyport.v1")
        assert (await offer(dev, pc)).status_code == 200  # and never connect
        other.createDataChannel("polyport.v1")
        busy = await offer(dev, other)
        assert busy.status_code == 503 and busy.headers["retry-after"]
        assert len(peers.peers) == 1
        assert await wait_until(lambda: not peers.peers, 6.0)
    finally:
        await pc.close()
        await other.close()


async def test_closed_when_the_credentials_expire(tmp_path: Any) -> None:
    """A peer authenticated with a JWT is closed when the token expires, as signaling is."""
    import time

    import jwt

    from polyport import Settings
    from polyport.demo.shop import shop
    from polyport.testing import serve_in_thread

    secret = "s" * 32
    settings = Settings.model_validate(
        {
            "database": str(tmp_path / "db.sqlite3"),
            "auth": {"jwt": {"hs256_secret": secret}},
            "webrtc": {"loopback": True},
        }
    )
    token = jwt.encode({"sub": "eve", "exp": int(time.time()) + 2}, secret, algorithm="HS256")
    with serve_in_thread(shop, settings) as node:
        async with connect(node, Authorization=f"Bearer {token}") as channel:
            closed = asyncio.Event()
            channel.channel.on("close", closed.set)
            assert (await channel.request({"type": "ping"}))["type"] == "pong"
            async with asyncio.timeout(6):
                await closed.wait()
        assert await wait_until(lambda: not peers_of(node).peers, 2.0)


def test_loopback_follows_the_host_unless_set() -> None:
    """Unset, webrtc.loopback is on when the node listens on a loopback address only."""
    from polyport.edges.webrtc.peer import on_loopback

    assert on_loopback("127.0.0.1") and on_loopback("::1") and on_loopback("localhost")
    assert not on_loopback("0.0.0.0") and not on_loopback("") and not on_loopback("example.com")


async def test_other_channels_are_closed_and_peers_forgotten(dev: RunningNode) -> None:
    """A channel not labelled polyport.v1 is closed; a peer whose client leaves is forgotten."""
    peers = peers_of(dev)
    async with connect(dev) as channel:
        other = channel.pc.createDataChannel("something-else")
        closed = asyncio.Event()
        other.on("close", closed.set)
        async with asyncio.timeout(5):
            await closed.wait()
        assert (await channel.request({"type": "ping"}))["type"] == "pong"
        assert len(peers.peers) == 1
    assert await wait_until(lambda: not peers.peers, 10.0)
