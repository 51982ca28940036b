"""The WebSocket edge: the session protocol (subscribe, publish, call, ping) at /ws."""

from polyport.core.errors import MissingExtra

try:
    from polyport.edges.ws.binding import WsEdge
except ImportError as exc:  # the websockets library comes with the 'realtime' extra
    if exc.name and exc.name.split(".")[0] == "websockets":
        raise MissingExtra("realtime", "the WebSocket edge") from exc
    raise

__all__ = ["WsEdge"]
