"""The Server-Sent Events edge: the event log and server streams as text/event-stream.

The edge is :class:`~polyport.edges.sse.binding.SseEdge`; its settings section,
:class:`~polyport.edges.sse.config.SseConfig`, imports without anything the
edge needs. Nothing is imported here, so that importing a module of this
package never loads the edge itself.
"""
