"""Every WebSocket connection's settings: ``[websocket]``, ``POLYPORT_WEBSOCKET__…``.

Not one edge's: they bound each WebSocket the node accepts — the session at
``/ws``, JSON-RPC at ``/jsonrpc``, ``graphql-transport-ws`` at ``/graphql`` —
and the server that carries them reads them (:mod:`polyport.server.websocket`).
Only ``max_subscriptions`` is the ``/ws`` session's own. Importable without the
'realtime' extra, like every section of the settings.
"""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class WebSocketConfig(Section):
    """Keep-alive and limits per WebSocket connection."""

    ping_interval: float = Field(default=25.0, gt=0, le=3600)
    ping_timeout: float = Field(default=8.0, gt=0, le=3600)
    max_message: int = Field(default=64 * 1024, ge=1024)
    #: Subscriptions (and streams) open at once in one ``/ws`` session.
    max_subscriptions: int = Field(default=64, ge=1)
    send_buffer: int = Field(default=256 * 1024, ge=4096)
    stall_timeout: float = Field(default=5.0, gt=0, le=3600)
