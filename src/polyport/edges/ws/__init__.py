"""The WebSocket edge: the session protocol (subscribe, publish, call, ping) at /ws."""

from polyport.edges.ws.binding import WsEdge

__all__ = ["WsEdge"]
