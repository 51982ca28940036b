"""The WebRTC edge's settings: ``[webrtc]``, ``POLYPORT_WEBRTC__…``.

Importable without the 'webrtc' extra, like every section of the settings.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from polyport.core.config import Section


class IceServerConfig(Section):
    """A STUN or TURN server the server peer (and, through the docs, browsers) may use."""

    #: ``stun:host:port``, ``turn:host:port?transport=udp``, ``turns:host:port``.
    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: SecretStr | None = None


class WebRtcConfig(Section):
    """Signaling rooms and the server peer."""

    #: Peers in one room at once (a join beyond it: RATE_LIMITED).
    max_room_size: int = Field(default=16, ge=2)
    #: Signaling connections open at once on this node (beyond: UNAVAILABLE, then closed).
    max_peers: int = Field(default=1000, ge=1)
    #: Rooms one signaling connection may be in at once.
    max_rooms: int = Field(default=8, ge=1)
    #: Bytes in one signaling message; a longer one is answered PAYLOAD_TOO_LARGE. The
    #: WebSocket layer closes the connection (1009) over ``websocket.max_message`` first.
    max_message: int = Field(default=16 * 1024, ge=1024)
    #: Signaling messages per second per connection, and the burst allowed above it.
    rate: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    #: A scope needed to signal; None: any authenticated caller (anyone in development mode).
    scope: str | None = None
    #: Server peers (``POST /webrtc/offer``) open at once on this node.
    max_server_peers: int = Field(default=100, ge=1)
    #: Seconds a server peer may take to connect after its answer before it is closed.
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    #: Gather only a 127.0.0.1 host candidate, never an interface's address. None: when
    #: the node listens on a loopback address (``host``, 127.0.0.1 by default), since then
    #: every client is on this machine anyway.
    loopback: bool | None = None
    #: STUN/TURN servers for the server peer; empty: host candidates only (no STUN).
    ice_servers: list[IceServerConfig] = []
