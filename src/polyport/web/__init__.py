"""The node's own pages: the OpenAPI and AsyncAPI documents, the API docs page, the
dashboard, and the demo's live pages (an SSE order feed, a WebSocket chat room, and a
sensor chart over SSE).

Everything is served from files inside the package — no CDN — so it works
offline and behind firewalls.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import orjson

from polyport.core.errors import NotFound
from polyport.edges.kinds import ChannelEdge, HttpEdge
from polyport.http.asyncapi import AsyncApiDocument
from polyport.http.caching import etag_of, not_modified
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import JSON, Request, Response
from polyport.http.router import Endpoint, Route

if TYPE_CHECKING:
    from polyport.node import Node

HTML = b"text/html; charset=utf-8"
STATIC_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".html": HTML,
    ".svg": b"image/svg+xml",
}

#: The demo pages: each is served only when the service declares the events it
#: shows (the demo shop does), so another service gets no page that cannot work.
#: ``demo-links.js`` applies the same rule to the dashboard's links to them.
DEMO_PAGES = {
    "/demo/orders": ("orders.html", ("orders.created", "orders.updated")),
    "/demo/chat": ("chat.html", ("chat.message",)),
    "/demo/monitor": ("monitor.html", ("sensors.temperature", "sensors.humidity", "alerts.raised")),
}


def _static(name: str) -> bytes:
    return resources.files("polyport.web").joinpath("static", name).read_bytes()


def openapi_document(node: Node) -> dict[str, object]:
    """The node's OpenAPI 3.1 document, described by each HTTP edge that can."""
    doc = OpenApiDocument(node.runtime.spec, auth_optional=node.settings.dev)
    for edge in node.edges:
        if isinstance(edge, HttpEdge):
            edge.describe(doc)
    return doc.build()


def asyncapi_document(node: Node) -> AsyncApiDocument:
    """The node's AsyncAPI 3.0 document, described by each edge that carries events.

    Built once; :meth:`AsyncApiDocument.build` writes it for the host a request used.
    """
    runtime = node.runtime
    doc = AsyncApiDocument(
        runtime.spec, runtime.dispatcher.event_types, auth_optional=node.settings.dev
    )
    for edge in node.edges:
        if isinstance(edge, ChannelEdge):
            edge.describe_channels(doc)
    return doc


def catalog_document(node: Node) -> dict[str, object]:
    spec = node.runtime.spec
    return {
        "service": {
            "name": spec.name,
            "version": spec.version,
            "description": spec.service.description,
        },
        "dev": node.settings.dev,
        "methods": [
            {
                "name": m.name,
                "operation_id": m.name,  # the REST operationId in /openapi.json
                "kind": m.kind.value,
                "summary": m.summary,
                "resource": m.resource.name if m.resource else None,
                "operation": m.operation,
                "public": m.public,
            }
            for m in spec.methods.values()
        ],
        "events": [
            {"name": e.name, "channel": e.event.channel, "description": e.description}
            for e in spec.events.values()
        ],
        "endpoints": [
            {"pattern": e.pattern, "target": e.target, "kind": e.kind, "address": e.address}
            for e in node.catalog()
        ],
        "skipped_edges": node.skipped,
    }


def web_routes(node: Node) -> list[Route]:
    """Routes for /openapi.json, /asyncapi.json, /docs, the dashboard at /, the demo pages
    and static files.

    Everything but the catalog is built once; answers carry an ETag and ``no-cache``, so a
    browser revalidates (a 304 costs nothing) and never mixes files of two
    versions after an upgrade.
    """
    documents = {
        "openapi": (orjson.dumps(openapi_document(node)), JSON),
        "docs": (_static("docs.html"), HTML),
        "dashboard": (_static("dashboard.html"), HTML),
    }
    files: dict[str, tuple[bytes, bytes]] = {}
    static_dir = resources.files("polyport.web").joinpath("static")
    for entry in static_dir.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])

    def serve(body: bytes, content_type: bytes, request: Request) -> Response:
        etag = etag_of(body)
        headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
        if not_modified(request.headers.get(b"if-none-match"), etag):
            return Response(304, content_type=None, headers=headers)
        return Response(200, body, content_type=content_type, headers=headers)

    def document(name: str) -> Endpoint:
        body, content_type = documents[name]

        async def endpoint(request: Request) -> Response:
            return serve(body, content_type, request)

        return endpoint

    asyncapi = asyncapi_document(node)

    async def asyncapi_json(request: Request) -> Response:
        # Its servers are this node's: written for the host and scheme the client used.
        settings = node.settings
        host = request.host(f"{settings.host}:{settings.port}")
        document = asyncapi.build(host, secure=request.scheme == "https")
        return serve(orjson.dumps(document), JSON, request)

    async def catalog(request: Request) -> Response:
        # Written per request, not at start-up: the addresses of listeners on ports
        # of their own (gRPC) are known only once they are bound.
        return serve(orjson.dumps(catalog_document(node)), JSON, request)

    async def static(request: Request) -> Response:
        name = request.params["name"]
        found = files.get(name)
        if found is None:
            raise NotFound(f"no static file {name[:80]!r}")
        return serve(*found, request)

    routes = [
        Route("GET", "/openapi.json", document("openapi"), "openapi"),
        Route("GET", "/asyncapi.json", asyncapi_json, "asyncapi"),
        Route("GET", "/catalog.json", catalog, "catalog"),
        Route("GET", "/docs", document("docs"), "docs"),
        Route("GET", "/", document("dashboard"), "dashboard"),
        Route("GET", "/static/{name}", static, "static"),
    ]
    events = node.runtime.spec.events
    for path, (page, shown) in DEMO_PAGES.items():
        if all(name in events for name in shown):
            documents[page] = (_static(page), HTML)
            routes.append(Route("GET", path, document(page), f"demo_{page.removesuffix('.html')}"))
    return routes
