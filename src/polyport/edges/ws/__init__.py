"""The WebSocket edge: the session protocol (subscribe, publish, call, ping) at /ws.

The edge is :class:`~polyport.edges.ws.binding.WsEdge` (importing it without
the 'realtime' extra raises :class:`~polyport.core.errors.MissingExtra`, which
switches the edge off). Nothing is imported here, so that importing a module of
this package never loads the edge itself.
"""
