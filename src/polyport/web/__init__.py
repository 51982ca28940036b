"""The node's own pages: the OpenAPI document, the API docs page, the dashboard.

Everything is served from files inside the package — no CDN — so it works
offline and behind firewalls.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import orjson

from polyport.asgi.http import Request, Response
from polyport.asgi.openapi import OpenApiDocument
from polyport.asgi.router import Route

if TYPE_CHECKING:
    from polyport.node import Node

HTML = b"text/html; charset=utf-8"
STATIC_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".html": HTML,
    ".svg": b"image/svg+xml",
}


def _static(name: str) -> bytes:
    return resources.files("polyport.web").joinpath("static", name).read_bytes()


def openapi_document(node: Node) -> dict[str, object]:
    """The node's OpenAPI 3.1 document, described by each HTTP edge that can."""
    doc = OpenApiDocument(node.runtime.spec, auth_optional=node.settings.dev)
    for edge in node.edges:
        describe = getattr(edge, "describe", None)
        if describe is not None:
            describe(doc)
    return doc.build()


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
    """Routes for /openapi.json, /docs, the dashboard at / and its static files."""
    openapi = orjson.dumps(openapi_document(node))
    catalog = orjson.dumps(catalog_document(node))
    pages = {"docs": _static("docs.html"), "dashboard": _static("dashboard.html")}
    cache = [(b"cache-control", b"no-cache")]

    async def openapi_json(request: Request) -> Response:
        return Response(200, openapi, headers=cache)

    async def docs(request: Request) -> Response:
        return Response(200, pages["docs"], content_type=HTML, headers=cache)

    async def dashboard(request: Request) -> Response:
        return Response(200, pages["dashboard"], content_type=HTML, headers=cache)

    async def catalog_json(request: Request) -> Response:
        return Response(200, catalog, headers=cache)

    async def static(request: Request) -> Response:
        name = request.params["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            from polyport.core.errors import NotFound

            raise NotFound(f"no static file {name[:80]!r}")
        try:
            body = _static(name)
        except (FileNotFoundError, IsADirectoryError):
            from polyport.core.errors import NotFound

            raise NotFound(f"no static file {name[:80]!r}") from None
        return Response(
            200,
            body,
            content_type=STATIC_TYPES[suffix],
            headers=[(b"cache-control", b"public, max-age=300")],
        )

    return [
        Route("GET", "/openapi.json", openapi_json, "openapi"),
        Route("GET", "/docs", docs, "docs"),
        Route("GET", "/", dashboard, "dashboard"),
        Route("GET", "/catalog.json", catalog_json, "catalog"),
        Route("GET", "/static/{name}", static, "static"),
    ]
