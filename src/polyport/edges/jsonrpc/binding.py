"""JSON-RPC 2.0 at ``POST /jsonrpc`` and over WebSocket at ``/jsonrpc``; OpenRPC beside it."""

from __future__ import annotations

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Caller
from polyport.core.errors import ServiceError
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.jsonrpc.config import JsonRpcConfig
from polyport.edges.jsonrpc.openrpc import openrpc_document
from polyport.edges.jsonrpc.protocol import JsonRpc
from polyport.edges.kinds import HttpEdge, WebSocketEdge
from polyport.http.openapi import OpenApiDocument
from polyport.http.origins import OriginPolicy, OriginRefused, websocket_credentials
from polyport.http.request import Request, Response
from polyport.http.router import Route
from polyport.http.websocket import CLOSE_POLICY, WebSocket, WebSocketEndpoint

EDGE = "jsonrpc"
PATH = "/jsonrpc"


class JsonRpcEdge(HttpEdge, WebSocketEdge):
    """Serves every unary method as a JSON-RPC 2.0 method, over HTTP and WebSocket."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.openrpc = orjson.dumps(openrpc_document(runtime.spec))
        self.rpc = JsonRpc(
            runtime.dispatcher,
            max_batch=runtime.settings.section(JsonRpcConfig).max_batch,
            discover=lambda: self.openrpc,
        )
        self.origins = OriginPolicy.from_settings(runtime.settings.cors_origins)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def routes(self) -> list[Route]:
        return [
            Route("POST", PATH, self.post, "jsonrpc"),
            Route("GET", "/openrpc.json", self.document, "openrpc"),
        ]

    def describe(self, doc: OpenApiDocument) -> None:
        """Nothing: JSON-RPC's methods are described by OpenRPC (``/openrpc.json``)."""

    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        return {PATH: self.websocket}

    def catalog(self) -> list[CatalogEntry]:
        service = self.runtime.spec.name
        entries = [
            CatalogEntry("JSON-RPC", "OpenRPC", "document", "GET /openrpc.json · rpc.discover")
        ]
        for name, binding in self.runtime.dispatcher.bindings.items():
            if binding.kind is MethodKind.UNARY:
                entries.append(
                    CatalogEntry("JSON-RPC", name, "method", f"POST {PATH} {service}.{name}")
                )
        return entries

    async def post(self, request: Request) -> Response:
        caller = request.caller(EDGE)
        answer = await self.rpc.handle(await request.json_body(), caller)
        if answer is None:
            return Response(204, content_type=None)  # notifications only
        return Response(200, answer)

    async def document(self, request: Request) -> Response:
        return Response(200, self.openrpc, headers=[(b"cache-control", b"no-cache")])

    async def websocket(self, ws: WebSocket, request: Request) -> None:
        """Each text message is a request or a batch; each answer a message back.

        Credentials and the origin rule are those of every WebSocket endpoint
        (:func:`~polyport.http.origins.websocket_credentials`).
        """
        try:
            credentials = websocket_credentials(request, ws.offered, self.origins)
        except OriginRefused:
            ws.close(CLOSE_POLICY, "origin not allowed")
            return
        except ServiceError:
            ws.close(CLOSE_POLICY, "malformed credentials")
            return
        caller = Caller(EDGE, credentials, ws.peer)
        async for message in ws:
            payload = message.encode() if isinstance(message, str) else message
            answer = await self.rpc.handle(payload, caller)
            if answer is not None:
                ws.send_text(answer)
