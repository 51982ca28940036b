"""The server peer: ``POST /webrtc/offer`` makes the node the other end of a WebRTC connection.

The client sends its offer — with its ICE candidates in it, gathering done,
as aiortc's examples do — and gets the node's answer, candidates included.
Each data channel the client opens labelled ``polyport.v1`` then speaks the
session protocol of ``/ws`` (``docs/websocket-protocol.md``) through the same
:class:`~polyport.core.session.Session`: the same frames, ids, errors and
resume. Channels with another label are closed.

Bounds: at most ``webrtc.max_server_peers`` peers at once (``UNAVAILABLE``
beyond); a peer whose channel has not opened ``webrtc.connect_timeout``
seconds after the answer is closed; a peer whose credentials expire (a JWT's
``exp``) is closed then; a channel whose client does not read what it is
sent for ``websocket.stall_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

import orjson
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdatachannel import RTCDataChannel

from polyport.core.auth import Credentials
from polyport.core.errors import InvalidArgument, PayloadTooLarge, ServiceError, Unavailable
from polyport.core.events import Event
from polyport.core.runtime import Runtime
from polyport.core.session import Session, SessionLimits, error_frame, event_frame
from polyport.edges.webrtc.config import WebRtcConfig
from polyport.edges.webrtc.ice import loopback_only
from polyport.edges.webrtc.signaling import EDGE, admit, expires_in
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.websocket_config import WebSocketConfig

log = logging.getLogger("polyport.webrtc")

OFFER_PATH = "/webrtc/offer"
#: The label of the data channels that speak the session protocol.
CHANNEL_LABEL = "polyport.v1"
#: An offer's JSON body: a session description is a few KiB, with many candidates.
_MAX_OFFER = 64 * 1024
#: Messages received and not yet handled, per channel, before the channel is closed.
_INBOX = 256


def _offer_sdp(body: bytes) -> str:
    try:
        offer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidArgument("the body is not JSON", unparseable=True) from None
    if not isinstance(offer, dict) or offer.get("type") != "offer":
        raise InvalidArgument('the body is {"sdp": …, "type": "offer"}')
    sdp = offer.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise InvalidArgument(
            "'sdp' is a session description (RFC 8866)",
            details=[{"field": "sdp", "message": "not a session description"}],
        )
    if "m=application" not in sdp:
        raise InvalidArgument(
            "the offer has no data channel (m=application): create one labelled "
            f"{CHANNEL_LABEL!r} before createOffer()",
            details=[{"field": "sdp", "message": "no data channel"}],
        )
    return sdp


def on_loopback(host: str) -> bool:
    """Whether a node listening on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or "" (every interface)
        return False


class ServerPeers:
    """Every server peer of this node, and the endpoint that makes them."""

    def __init__(self, runtime: Runtime, config: WebRtcConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.ws = runtime.settings.section(WebSocketConfig)
        self.limits = SessionLimits(
            max_subscriptions=self.ws.max_subscriptions, max_streams=self.ws.max_subscriptions
        )
        self.peers: set[ServerPeer] = set()
        loopback = config.loopback
        #: Whether ICE gathers 127.0.0.1 only (see polyport.edges.webrtc.ice).
        self.loopback = on_loopback(runtime.settings.host) if loopback is None else loopback

    def ice_servers(self) -> list[RTCIceServer]:
        return [
            RTCIceServer(
                urls=server.urls,
                username=server.username,
                credential=server.credential.get_secret_value() if server.credential else None,
            )
            for server in self.config.ice_servers
        ]

    async def offer(self, request: Request) -> Response:
        """Answer an offer with the node as the other peer."""
        credentials = request.credentials()
        principal = admit(self.runtime, credentials, request.peer, self.config.scope)
        sdp = _offer_sdp(await request.json_body(limit=_MAX_OFFER))
        if len(self.peers) >= self.config.max_server_peers:
            raise Unavailable(
                f"this node has {self.config.max_server_peers} WebRTC peers", retry_after=5.0
            )
        # An empty list, not None: aiortc's default is a STUN server on the Internet.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers()))
        peer = ServerPeer(self, pc, credentials, request.peer)
        self.peers.add(peer)
        self._count()
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc raises ValueError and others on bad SDP
                raise InvalidArgument(
                    f"the offer cannot be used: {str(exc)[:200]}",
                    details=[{"field": "sdp", "message": "not usable"}],
                ) from exc
            answer = await pc.createAnswer()
            if self.loopback:
                with loopback_only():
                    await pc.setLocalDescription(answer)
            else:
                await pc.setLocalDescription(answer)
        except BaseException:
            await peer.close()
            raise
        peer.arm(expires_in(principal))
        local = pc.localDescription
        return Response(200, orjson.dumps({"sdp": local.sdp, "type": local.type}))

    def describe(self, doc: OpenApiDocument) -> None:
        def description(kind: str) -> dict[str, Any]:
            return {
                "type": "object",
                "required": ["sdp", "type"],
                "properties": {
                    "sdp": {"type": "string", "pattern": "^v=0", "description": "RFC 8866"},
                    "type": {"type": "string", "enum": [kind]},
                },
            }

        doc.add(
            OFFER_PATH,
            "post",
            {
                "operationId": "webrtc_offer",
                "summary": "Connect to the node over WebRTC",
                "description": (
                    'An RTCPeerConnection\'s offer ({"sdp", "type": "offer"}, after ICE '
                    "gathering) is answered with the node's answer. Each data channel "
                    f"labelled {CHANNEL_LABEL} then speaks the session protocol of /ws "
                    "(docs/webrtc.md)."
                ),
                "tags": [doc.tag("webrtc", "WebRTC: signaling and the server peer")],
                "security": doc.security(False),
                "requestBody": {
                    "required": True,
                    "content": doc.json_content(description("offer")),
                },
                "responses": {
                    "200": {
                        "description": "The answer",
                        "content": doc.json_content(description("answer")),
                    },
                    **doc.problems(400, 401, 403, 422, 503),
                },
            },
        )

    async def close_all(self) -> None:
        for peer in list(self.peers):
            await peer.close()

    def _count(self) -> None:
        self.runtime.metrics.set(
            "polyport_webrtc_server_peers", "Open WebRTC server peers.", len(self.peers)
        )


class ServerPeer:
    """One RTCPeerConnection with a client, and the sessions of its channels."""

    def __init__(
        self, owner: ServerPeers, pc: RTCPeerConnection, credentials: Credentials, ip: str | None
    ) -> None:
        self.owner = owner
        self.pc = pc
        self.credentials = credentials
        self.ip = ip
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: list[asyncio.TimerHandle] = []
        self.opened = False
        self.closed = False
        pc.on("datachannel", self._channel)
        pc.on("connectionstatechange", self._state)

    def arm(self, expires_in: float | None) -> None:
        """Start the clocks: the time to connect, and the credentials' expiry."""
        loop = asyncio.get_running_loop()
        self.timers.append(loop.call_later(self.owner.config.connect_timeout, self._too_late))
        if expires_in is not None:
            self.timers.append(loop.call_later(max(0.0, expires_in), self._expire))

    def _too_late(self) -> None:
        if not self.opened:
            log.info("a WebRTC peer did not connect in time; closed")
            self._spawn(self.close())

    def _expire(self) -> None:
        self._spawn(self.close())

    def _state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _channel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL:
            channel.close()
            return
        self.opened = True
        self._spawn(self._serve(channel))

    async def _serve(self, channel: RTCDataChannel) -> None:
        owner = self.owner
        options = owner.ws
        # Unbounded, so that the end (None) always fits; _INBOX bounds what the client adds.
        inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        high = options.send_buffer
        channel.bufferedAmountLowThreshold = high // 2
        low = asyncio.Event()

        def receive(message: str | bytes) -> None:
            if inbox.qsize() >= _INBOX:  # the client sends faster than it is answered
                channel.close()
                return
            inbox.put_nowait(message)

        channel.on("message", receive)
        channel.on("close", lambda: inbox.put_nowait(None))
        channel.on("bufferedamountlow", low.set)

        def send(frame: dict[str, Any]) -> None:
            if channel.readyState == "open":
                channel.send(orjson.dumps(frame).decode())

        async def drain() -> None:
            # Paced like /ws: wait while the client is behind, close it if it stalls.
            if channel.bufferedAmount <= high:
                return
            low.clear()
            try:
                await asyncio.wait_for(low.wait(), options.stall_timeout)
            except TimeoutError:
                channel.close()

        async def deliver(events: list[Event]) -> None:
            if channel.readyState != "open":
                return
            for event in events:
                channel.send(event_frame(event).decode())
            await drain()

        async def deliver_frame(payload: bytes) -> None:
            if channel.readyState == "open":
                channel.send(payload.decode())
                await drain()

        runtime = owner.runtime
        session = Session(
            dispatcher=runtime.dispatcher,
            hub=runtime.hub,
            codec=runtime.codec,
            send=send,
            deliver=deliver,
            deliver_frame=deliver_frame,
            edge=EDGE,
            credentials=self.credentials,
            peer=self.ip,
            limits=owner.limits,
        )
        try:
            try:
                send(
                    session.welcome(
                        options.ping_interval,
                        {
                            "max_message": options.max_message,
                            "max_subscriptions": options.max_subscriptions,
                        },
                    )
                )
            except ServiceError as exc:
                send(error_frame(None, exc))
                channel.close()
                return
            while (message := await inbox.get()) is not None:
                size = len(message) if isinstance(message, bytes) else len(message.encode())
                if size > options.max_message:
                    too_big = PayloadTooLarge(
                        f"a frame is at most {options.max_message} bytes, not {size}"
                    )
                    send(error_frame(None, too_big))
                    continue
                await session.receive(message)
        finally:
            await session.close()
            await self.close()

    async def close(self) -> None:
        """End the sessions and the connection; forget the peer."""
        if self.closed:
            return
        self.closed = True
        for timer in self.timers:
            timer.cancel()
        self.owner.peers.discard(self)
        self.owner._count()
        with contextlib.suppress(Exception):
            await self.pc.close()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
