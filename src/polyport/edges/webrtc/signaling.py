"""The signaling socket at ``/webrtc/signal``: rooms, presence, offer/answer/candidate relay.

One :class:`SignalingSocket` serves every connection of the node. A
connection authenticates as ``/ws`` does (headers, the ``bearer.``
subprotocol, ``?access_token=``, the ticket cookie from an allowed origin),
then each message is decoded (:mod:`polyport.edges.webrtc.frames`), charged
to the connection's rate, and answered with one frame. Nothing a client
sends reaches another client except a relayed offer, answer or candidate,
checked first, to a peer named in a room both are in. See ``docs/webrtc.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from polyport.core.auth import Credentials
from polyport.core.context import Principal
from polyport.core.dispatch import Caller
from polyport.core.errors import (
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from polyport.core.runtime import Runtime
from polyport.core.session import error_frame
from polyport.edges.webrtc.config import WebRtcConfig
from polyport.edges.webrtc.frames import FrameRefused, Signal, decode
from polyport.edges.webrtc.rooms import Member, Rooms
from polyport.http.origins import OriginPolicy, OriginRefused, websocket_credentials
from polyport.http.request import Request
from polyport.http.websocket import CLOSE_POLICY, CLOSE_TOO_SLOW, WebSocket

log = logging.getLogger("polyport.webrtc")

EDGE = "webrtc"
SIGNAL_PATH = "/webrtc/signal"
#: The subprotocol of the signaling frames.
SIGNAL_SUBPROTOCOL = "polyport.signal.v1"


class TokenBucket:
    """``rate`` messages a second on average, ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float | None:
        """None if a message may pass now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


def admit(
    runtime: Runtime, credentials: Credentials, peer: str | None, scope: str | None
) -> Principal:
    """The principal that may signal with ``credentials``, or the error saying why not.

    Signaling hands out nothing of the service but it does reach other people:
    outside development mode an anonymous caller may not use it.
    """
    principal = runtime.dispatcher.authenticate(Caller(EDGE, credentials, peer))
    if principal.anonymous and "*" not in principal.scopes:
        raise Unauthenticated("signaling needs credentials")
    if scope is not None and not principal.has_scopes(frozenset({scope})):
        raise PermissionDenied(f"signaling needs the scope {scope!r}")
    return principal


def expires_in(principal: Principal) -> float | None:
    """Seconds until the principal's credentials expire (a JWT's ``exp``), if they do."""
    exp = principal.claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp) - time.time()
    return None


class SignalingSocket:
    """The WebSocket endpoint of the signaling rooms (one per node)."""

    #: Chosen by the handshake when the client offers it.
    subprotocols: tuple[str, ...] = (SIGNAL_SUBPROTOCOL,)

    def __init__(self, runtime: Runtime, config: WebRtcConfig, origins: OriginPolicy) -> None:
        self.runtime = runtime
        self.config = config
        self.origins = origins
        self.rooms = Rooms(max_room_size=config.max_room_size, max_rooms=config.max_rooms)
        self.sockets: set[WebSocket] = set()

    def welcome(self, principal: Principal) -> dict[str, Any]:
        config = self.config
        return {
            "type": "welcome",
            "subject": None if principal.anonymous else principal.subject,
            "limits": {
                "max_message": config.max_message,
                "max_room_size": config.max_room_size,
                "max_rooms": config.max_rooms,
                "rate": config.rate,
                "burst": config.burst,
            },
            # What a browser passes to new RTCPeerConnection({iceServers}).
            "ice_servers": [
                {
                    "urls": server.urls,
                    **({"username": server.username} if server.username else {}),
                    **(
                        {"credential": server.credential.get_secret_value()}
                        if server.credential
                        else {}
                    ),
                }
                for server in config.ice_servers
            ],
        }

    async def __call__(self, ws: WebSocket, request: Request) -> None:
        def send(frame: dict[str, Any]) -> None:
            ws.send_text(orjson.dumps(frame))

        try:
            credentials = websocket_credentials(request, ws.offered, self.origins)
            principal = admit(self.runtime, credentials, ws.peer, self.config.scope)
        except OriginRefused:
            ws.close(CLOSE_POLICY, "origin not allowed")
            return
        except ServiceError as exc:
            send(error_frame(None, exc))
            ws.close(CLOSE_POLICY, "authentication failed")
            return
        if len(self.sockets) >= self.config.max_peers:
            busy = Unavailable(
                f"this node has {self.config.max_peers} signaling connections", retry_after=5.0
            )
            send(error_frame(None, busy))
            ws.close(CLOSE_TOO_SLOW, "too many signaling connections")
            return
        member = Member(send)
        bucket = TokenBucket(self.config.rate, self.config.burst)
        expiry = None
        left = expires_in(principal)
        if left is not None:
            # As the credentials stop being valid, so does the connection.
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, left), ws.close, CLOSE_POLICY, "credentials expired"
            )
        self.sockets.add(ws)
        self._count()
        try:
            send(self.welcome(principal))
            async for message in ws:
                wait = bucket.take()
                if wait is not None:
                    limited = RateLimited(
                        f"at most {self.config.rate:g} signaling messages a second",
                        retry_after=wait,
                    )
                    send(error_frame(None, limited))
                    continue
                try:
                    signal = decode(message, self.config.max_message)
                except FrameRefused as exc:
                    send(error_frame(exc.frame_id, exc.error))
                    continue
                try:
                    self.handle(member, signal)
                except ServiceError as exc:
                    send(error_frame(signal.id, exc))
        finally:
            if expiry is not None:
                expiry.cancel()
            self.rooms.leave_all(member)
            self.sockets.discard(ws)
            self._count()

    def handle(self, member: Member, signal: Signal) -> None:
        """Act on one frame and answer it; a :class:`ServiceError` says why not."""
        rooms = self.rooms
        if signal.type == "ping":
            member.send({"id": signal.id, "type": "pong"})
        elif signal.type == "join":
            name, others = rooms.join(member, signal.room, signal.peer)
            member.send(
                {
                    "id": signal.id,
                    "type": "joined",
                    "room": signal.room,
                    "peer": name,
                    "members": others,
                }
            )
        elif signal.type == "leave":
            name = rooms.leave(member, signal.room)
            member.send({"id": signal.id, "type": "left", "room": signal.room, "peer": name})
        else:
            relayed: dict[str, Any] = {"type": signal.type}
            if signal.type == "candidate":
                relayed["candidate"] = signal.candidate
            else:
                relayed["sdp"] = signal.sdp
            rooms.relay(member, signal.room, signal.to, relayed)
            member.send({"id": signal.id, "type": "sent", "to": signal.to})

    def _count(self) -> None:
        self.runtime.metrics.set(
            "polyport_webrtc_signaling_connections",
            "Open WebRTC signaling connections.",
            len(self.sockets),
        )
