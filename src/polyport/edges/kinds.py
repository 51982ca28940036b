"""What an edge is, by kind: the node composes edges by what they declare to serve.

    Edge              start, stop, catalog — every edge
    ├── HttpEdge      routes on the node's one HTTP port, described in /openapi.json
    ├── WebSocketEdge WebSocket paths on that port
    ├── ListenerEdge  a port of its own (gRPC, MQTT)
    └── ChannelEdge   carries events (queues to come), described in /asyncapi.json

An edge class names its kinds as its bases — ``class GrpcEdge(HttpEdge,
ListenerEdge)`` — so mypy checks every method against its kind's signature,
Python refuses to build an edge that leaves one of them out (they are
abstract), and the node narrows with ``isinstance`` instead of probing for
attributes. The kinds stay protocols, so an edge written outside polyport
fits without inheriting, as long as it has every member of its kinds
(``tests/test_architecture.py`` holds polyport's own edges to declaring them).

This module is shared by every edge and imports none of them, nor any
optional dependency: the WebSocket types are needed for annotations only.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from polyport.core.runtime import Endpoint
    from polyport.http.asyncapi import AsyncApiDocument
    from polyport.http.openapi import OpenApiDocument
    from polyport.http.router import Route
    from polyport.http.websocket import WebSocketEndpoint


@runtime_checkable
class Edge(Protocol):
    """One communication pattern serving the runtime's contract."""

    #: The pattern's short name (``rest``, ``grpc``), as ``--edges`` and the logs spell it.
    name: str

    @abstractmethod
    async def start(self) -> None:
        """Start what the edge runs by itself (workers, its own port); after the core."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop it again, letting work in flight end; before the core stops."""

    @abstractmethod
    def catalog(self) -> list[Endpoint]:
        """Every endpoint this edge serves, for ``polyport routes`` and the dashboard."""


@runtime_checkable
class HttpEdge(Edge, Protocol):
    """An edge served on the node's HTTP port, through its one router."""

    @abstractmethod
    def routes(self) -> list[Route]:
        """The routes to add to the node's router, built once at start-up."""

    @abstractmethod
    def describe(self, doc: OpenApiDocument) -> None:
        """Add this edge's operations to the node's OpenAPI document (or say why none)."""


@runtime_checkable
class WebSocketEdge(Edge, Protocol):
    """An edge answering WebSocket upgrades on paths of the node's HTTP port."""

    @abstractmethod
    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        """Path → endpoint; empty when the edge serves no WebSocket on this installation."""


@runtime_checkable
class ListenerEdge(Edge, Protocol):
    """An edge listening on a port of its own, which it binds in :meth:`start`."""

    #: Why the edge serves nothing (disabled, no port to listen on), else None.
    off: str | None
    #: What a reader must know about where it serves (a default port taken), else None.
    notice: str | None

    @property
    @abstractmethod
    def address(self) -> str:
        """``HOST:PORT`` as a client dials it: the port actually bound, once started."""


@runtime_checkable
class ChannelEdge(Edge, Protocol):
    """An edge that carries events to clients or from them (and, to come, queue messages).

    A kind of its own, beside where the edge is served: SSE and polling are
    HTTP edges, the WebSocket session a WebSocket edge, MQTT will listen on
    its own port — each describes the same channels in /asyncapi.json.
    """

    @abstractmethod
    def describe_channels(self, doc: AsyncApiDocument) -> None:
        """Add this edge's server and its operations on the channels to the AsyncAPI document."""
