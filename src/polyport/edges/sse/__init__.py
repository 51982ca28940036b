"""The Server-Sent Events edge: the event log and server streams as text/event-stream."""

from polyport.edges.sse.binding import SseEdge

__all__ = ["SseEdge"]
