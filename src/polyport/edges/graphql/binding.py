"""The GraphQL edge: ``/graphql`` over HTTP and WebSocket, the SDL beside it.

Built once at start-up: the schema from the type graph
(:mod:`~polyport.edges.graphql.schema`), the document cache with the limits
(:mod:`~polyport.edges.graphql.documents`), the runner executing compiled
plans (:mod:`~polyport.edges.graphql.execute`) — shared by the HTTP transport
(:mod:`~polyport.edges.graphql.transport_http`) and the
``graphql-transport-ws`` transport (``transport_ws``) on the same path.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from polyport.core.errors import MissingExtra

try:  # graphql-core comes with the 'graphql' extra
    from graphql import print_schema
except ImportError as exc:
    raise MissingExtra("graphql", "the GraphQL edge") from exc

from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.documents import DocumentCache
from polyport.edges.graphql.execute import GraphQLRunner
from polyport.edges.graphql.schema import build_schema, source_of
from polyport.edges.graphql.transport_http import HttpTransport
from polyport.edges.kinds import HttpEdge, WebSocketEdge
from polyport.http.openapi import OpenApiDocument
from polyport.http.origins import OriginPolicy
from polyport.http.request import Request, Response
from polyport.http.router import Route

if TYPE_CHECKING:  # the WebSocket transport needs the realtime extra; HTTP does not
    from polyport.edges.graphql.transport_ws import GraphQLTransportWs
    from polyport.http.websocket import WebSocketEndpoint

log = logging.getLogger("polyport.graphql")

EDGE = "graphql"
PATH = "/graphql"
SDL_PATH = "/graphql/schema.graphql"


class GraphQLEdge(HttpEdge, WebSocketEdge):
    """Serves the contract as one GraphQL schema."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.settings.section(GraphQLConfig)
        self.build = build_schema(runtime.spec, runtime.dispatcher)
        self.schema = self.build.schema
        self.sdl = print_schema(self.schema).encode()
        self.documents = DocumentCache(self.schema, self.config)
        self.runner = GraphQLRunner(
            runtime.spec,
            runtime.dispatcher,
            runtime.hub,
            self.build,
            self.documents,
            timeout=self.config.timeout,
            edge=EDGE,
        )
        self.http = HttpTransport(self.runner, EDGE)
        self.socket: GraphQLTransportWs | None = None
        try:
            transport = importlib.import_module("polyport.edges.graphql.transport_ws")
        except ImportError as exc:  # the WebSocket server comes with the 'realtime' extra
            log.info("GraphQL subscriptions are off: %s", exc)
        else:
            self.socket = transport.GraphQLTransportWs(
                self.runner,
                self.config,
                metrics=runtime.metrics,
                origins=OriginPolicy.from_settings(runtime.settings.cors_origins),
            )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self.socket is not None:
            self.socket.shutdown()

    def routes(self) -> list[Route]:
        return [
            Route("POST", PATH, self.http.post, "graphql"),
            Route("GET", PATH, self.http.get, "graphql"),
            Route("GET", SDL_PATH, self.schema_document, "graphql-schema"),
            Route("GET", "/static/graphiql/{name}", self.http.asset, "graphiql"),
        ]

    def describe(self, doc: OpenApiDocument) -> None:
        """Nothing: GraphQL is described by its schema (``/graphql/schema.graphql``)."""

    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        """``graphql-transport-ws`` on ``/graphql`` (its handler selects the subprotocol)."""
        return {PATH: self.socket} if self.socket is not None else {}

    async def schema_document(self, request: Request) -> Response:
        if not self.config.introspection:
            return Response(
                404,
                b"# introspection is turned off on this node\n",
                content_type=b"text/plain; charset=utf-8",
            )
        return Response(
            200,
            self.sdl,
            content_type=b"text/plain; charset=utf-8",
            headers=[(b"cache-control", b"no-cache")],
        )

    def catalog(self) -> list[CatalogEntry]:
        """Every method and event type by its contract name, with its GraphQL field."""
        entries = [
            CatalogEntry("GraphQL", "endpoint", "document", f"POST {PATH} · GET {PATH}"),
            CatalogEntry("GraphQL", "SDL", "document", f"GET {SDL_PATH}"),
        ]
        roots = (
            ("query", self.schema.query_type),
            ("mutation", self.schema.mutation_type),
            ("subscription", self.schema.subscription_type),
        )
        for operation, root in roots:
            if root is None:
                continue
            for name, field in root.fields.items():
                source = source_of(field)
                if source is None:
                    continue
                address = f"{operation} {{ {name} }}"
                if source.binding is not None:
                    entries.append(CatalogEntry("GraphQL", source.binding.name, "method", address))
                elif source.event is not None:
                    entries.append(
                        CatalogEntry(
                            "GraphQL", source.event.name, "event", f"{address} · ws {PATH}"
                        )
                    )
        return entries
