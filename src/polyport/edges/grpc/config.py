"""The gRPC edge's settings: ``[grpc]``, ``POLYPORT_GRPC__…`` (importable without grpcio)."""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class GrpcConfig(Section):
    """The gRPC edge: its own HTTP/2 port."""

    enabled: bool = True
    host: str | None = None  # None: the node's host
    #: 0: any free port. When the default is taken the node serves gRPC on a free
    #: port and says so; a port set explicitly (file, variable) must be free.
    port: int = Field(default=50051, ge=0, le=65535)
    max_message: int = Field(default=4 * 1024 * 1024, ge=1024)
