"""The JSON-RPC edge's settings: ``[jsonrpc]``, ``POLYPORT_JSONRPC__…``."""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class JsonRpcConfig(Section):
    """JSON-RPC 2.0 over HTTP and WebSocket."""

    max_batch: int = Field(default=100, ge=1, le=10_000)
