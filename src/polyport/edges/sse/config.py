"""The Server-Sent Events edge's settings: ``[sse]``, ``POLYPORT_SSE__…``."""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class SseConfig(Section):
    """The Server-Sent Events edge."""

    heartbeat: float = Field(default=15.0, gt=0, le=3600)
    send_buffer: int = Field(default=256 * 1024, ge=4096)
    stall_timeout: float = Field(default=5.0, gt=0, le=3600)
