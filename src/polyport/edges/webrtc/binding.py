"""The WebRTC edge: signaling rooms at ``/webrtc/signal``, the server peer at ``/webrtc/offer``.

Signaling needs only the WebSocket layer; the server peer needs aiortc. Both
come with the 'webrtc' extra, and importing this module without it raises
:class:`~polyport.core.errors.MissingExtra`, which switches the edge off.
See ``docs/webrtc.md``.
"""

from __future__ import annotations

from polyport.core.errors import MissingExtra

try:  # both come with the 'webrtc' extra
    import aiortc  # noqa: F401  (the server peer, polyport.edges.webrtc.peer)
    import websockets  # noqa: F401  (the frames of polyport.http.websocket)
except ImportError as exc:
    raise MissingExtra("webrtc", "the WebRTC edge") from exc

from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import HttpEdge, WebSocketEdge
from polyport.edges.webrtc.config import WebRtcConfig
from polyport.edges.webrtc.peer import OFFER_PATH, ServerPeers
from polyport.edges.webrtc.signaling import SIGNAL_PATH, SignalingSocket
from polyport.http.openapi import OpenApiDocument
from polyport.http.origins import OriginPolicy
from polyport.http.router import Route
from polyport.http.websocket import WebSocketEndpoint


class WebRtcEdge(HttpEdge, WebSocketEdge):
    """Signaling between browsers, and the node itself as a peer."""

    name = "webrtc"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = config = runtime.settings.section(WebRtcConfig)
        origins = OriginPolicy.from_settings(runtime.settings.cors_origins)
        self.signaling = SignalingSocket(runtime, config, origins)
        self.peers = ServerPeers(runtime, config)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for ws in list(self.signaling.sockets):
            ws.shutdown()
        await self.peers.close_all()

    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        return {SIGNAL_PATH: self.signaling}

    def routes(self) -> list[Route]:
        return [Route("POST", OFFER_PATH, self.peers.offer, "webrtc_offer")]

    def describe(self, doc: OpenApiDocument) -> None:
        self.peers.describe(doc)

    def catalog(self) -> list[CatalogEntry]:
        return [
            CatalogEntry("WebRTC", "signaling", "document", f"ws {SIGNAL_PATH}"),
            CatalogEntry("WebRTC", "server peer", "document", f"POST {OFFER_PATH}"),
        ]
