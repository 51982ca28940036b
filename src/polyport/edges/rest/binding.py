"""REST: resources at resource URLs, plain methods as ``POST /v{n}/{name}``.

GET    /v1/users            list      200 {"items": [...], "next_cursor": ...}
POST   /v1/users            create    201 + Location
GET    /v1/users/{id}       get       200 + ETag, Cache-Control (304 on If-None-Match)
PUT    /v1/users/{id}       update    200
DELETE /v1/users/{id}       delete    204
POST   /v1/multiply         method    200 (204 when it returns nothing)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from polyport.core.contract import MethodKind
from polyport.core.dispatch import Binding, PageResult
from polyport.core.errors import ContractError, InvalidArgument
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.core.spec import ResourceSpec
from polyport.core.types import Unit
from polyport.edges.kinds import HttpEdge
from polyport.edges.rest.expand import MAX_PATHS, Expander, expandable
from polyport.http.caching import cache_control, etag_of, not_modified
from polyport.http.openapi import OpenApiDocument
from polyport.http.request import Request, Response
from polyport.http.router import Endpoint, Route

EDGE = "rest"
#: Path segments under /v{n}/ that other edges own.
RESERVED = frozenset({"events", "jobs", "webhooks"})


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidArgument("the request body is not valid JSON", unparseable=True) from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return value


class RestEdge(HttpEdge):
    """Builds the REST routes of a service from its contract."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.dispatcher = runtime.dispatcher
        self.prefix = f"/v{runtime.spec.version}"
        names = set(runtime.spec.resources) | {
            m.name for m in runtime.spec.methods.values() if m.resource is None
        }
        clash = names & RESERVED
        if clash:
            raise ContractError(
                f"REST: {sorted(clash)} would shadow /v1/events, /jobs or /webhooks"
            )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- routes ---------------------------------------------------------------------

    def routes(self) -> list[Route]:
        routes: list[Route] = []
        spec = self.runtime.spec
        for resource in spec.resources.values():
            routes.extend(self._resource_routes(resource))
        for method in spec.methods.values():
            if method.resource is None and method.kind is MethodKind.UNARY:
                binding = self.dispatcher.bindings[method.name]
                routes.append(
                    Route(
                        "POST", f"{self.prefix}/{method.name}", self._method(binding), method.name
                    )
                )
        return routes

    def _resource_routes(self, resource: ResourceSpec) -> list[Route]:
        collection = f"{self.prefix}/{resource.name}"
        item = f"{collection}/{{{resource.key.name}}}"
        bindings = {op: self.dispatcher.bindings[m.name] for op, m in resource.operations.items()}
        makers = {
            "list": ("GET", collection, self._list),
            "create": ("POST", collection, self._create),
            "get": ("GET", item, self._get),
            "update": ("PUT", item, self._update),
            "delete": ("DELETE", item, self._delete),
        }
        routes = []
        for op, binding in bindings.items():
            verb, path, maker = makers[op]
            routes.append(Route(verb, path, maker(binding, resource), binding.name))
        return routes

    def describe(self, doc: OpenApiDocument) -> None:
        describe(self, doc)

    def catalog(self) -> list[CatalogEntry]:
        entries = []
        for route in self.routes():
            entries.append(
                CatalogEntry("REST", route.name, "method", f"{route.method} {route.path}")
            )
        entries.append(CatalogEntry("REST", "OpenAPI", "document", "GET /openapi.json"))
        entries.append(CatalogEntry("REST", "API docs", "document", "GET /docs"))
        return entries

    # -- endpoints --------------------------------------------------------------------

    def _get(self, binding: Binding, resource: ResourceSpec) -> Endpoint:
        call = self.dispatcher.call
        dump = binding.dump_json
        cache = cache_control(public=binding.public, max_age=resource.resource.cache_max_age)
        expander = Expander(self.dispatcher, resource.model)

        async def get_item(request: Request) -> Response:
            caller = request.caller(EDGE)
            expand = request.query.get("expand") if request.query_string else None
            tree = expander.parse(expand) if expand is not None else None
            result = await call(binding, binding.from_text(request.params), caller)
            if tree:
                item = binding.dump_python(result)
                await expander.apply([item], tree, caller)
                return _cacheable(request, orjson.dumps(item), cache)
            return _cacheable(request, dump(result), cache)

        return get_item

    def _list(self, binding: Binding, resource: ResourceSpec) -> Endpoint:
        call = self.dispatcher.call
        dump = binding.dump_json
        cache = cache_control(public=binding.public, max_age=resource.resource.cache_max_age)
        base = f"{self.prefix}/{resource.name}"
        expander = Expander(self.dispatcher, resource.model)
        many = binding.list_params

        async def list_items(request: Request) -> Response:
            caller = request.caller(EDGE)
            query: dict[str, Any] = dict(request.query)
            tree = None
            if "expand" in query:
                tree = expander.parse(query.pop("expand"))
            for name in many & query.keys():  # a list parameter: every value of the name
                query[name] = request.query_all(name)
            page: PageResult = await call(binding, binding.from_text(query), caller)
            if tree:
                items = binding.dump_python(page.items)
                await expander.apply(items, tree, caller)
                items_json = orjson.dumps(items)
            else:
                items_json = dump(page.items)
            body = (
                b'{"items":'
                + items_json
                + b',"next_cursor":'
                + orjson.dumps(page.next_cursor)
                + b"}"
            )
            response = _cacheable(request, body, cache)
            if page.next_cursor is not None:
                query = dict(request.query, cursor=page.next_cursor)
                link = f'<{base}?{urlencode(query)}>; rel="next"'
                response.headers.append((b"link", link.encode()))
            return response

        return list_items

    def _create(self, binding: Binding, resource: ResourceSpec) -> Endpoint:
        call = self.dispatcher.call
        dump = binding.dump_json
        key = resource.key.name
        base = f"{self.prefix}/{resource.name}/"

        async def create_item(request: Request) -> Response:
            caller = request.caller(EDGE)
            result = await call(binding, await request.json_body(), caller)
            location = base + str(getattr(result, key))
            return Response(201, dump(result), headers=[(b"location", location.encode())])

        return create_item

    def _update(self, binding: Binding, resource: ResourceSpec) -> Endpoint:
        call = self.dispatcher.call
        dump = binding.dump_json
        key = resource.key.name

        async def update_item(request: Request) -> Response:
            caller = request.caller(EDGE)
            fields = _json_object(await request.json_body())
            item = binding.from_text(request.params)[key]
            if key in fields and fields[key] != item:
                raise InvalidArgument(f"the body's {key!r} does not match the URL")
            fields[key] = item
            result = await call(binding, fields, caller)
            return Response(200, dump(result))

        return update_item

    def _delete(self, binding: Binding, resource: ResourceSpec) -> Endpoint:
        call = self.dispatcher.call

        async def delete_item(request: Request) -> Response:
            await call(binding, binding.from_text(request.params), request.caller(EDGE))
            return Response(204, content_type=None)

        return delete_item

    def _method(self, binding: Binding) -> Endpoint:
        call = self.dispatcher.call
        dump = binding.dump_json
        returns_nothing = binding.spec.returns == Unit

        async def call_method(request: Request) -> Response:
            caller = request.caller(EDGE)
            result = await call(binding, await request.json_body(), caller)
            if returns_nothing:
                return Response(204, content_type=None)
            return Response(200, dump(result))

        return call_method


def _cacheable(request: Request, body: bytes, cache: bytes) -> Response:
    etag = etag_of(body)
    headers = [(b"etag", etag), (b"cache-control", cache)]
    if not_modified(request.headers.get(b"if-none-match"), etag):
        return Response(304, content_type=None, headers=headers)
    return Response(200, body, headers=headers)


def describe(edge: RestEdge, doc: OpenApiDocument) -> None:
    """Add every REST operation of the service to the OpenAPI document."""
    spec = edge.runtime.spec
    cached = {
        "ETag": {"schema": {"type": "string"}},
        "Cache-Control": {"schema": {"type": "string"}},
    }
    not_modified = {"304": {"description": "Not Modified: the If-None-Match ETag still holds"}}
    for resource in spec.resources.values():
        tag = doc.tag(resource.name, resource.resource.description)
        paths = expandable(edge.dispatcher, resource.model)
        expand = (
            [
                {
                    "name": "expand",
                    "in": "query",
                    "required": False,
                    "description": "Relations to inline, comma-separated, nested with dots"
                    f" (one batch call per relation per level): {', '.join(paths)}",
                    # Exactly what Expander.parse accepts: these paths, comma-separated.
                    "style": "form",
                    "explode": False,
                    "schema": {
                        "type": "array",
                        # No empty list: ?expand= reads as one empty path (leave it out).
                        "minItems": 1,
                        "maxItems": MAX_PATHS,
                        "items": {"type": "string", "enum": paths},
                    },
                    "example": paths[:2],
                }
            ]
            if paths
            else []
        )
        collection = f"{edge.prefix}/{resource.name}"
        item = f"{collection}/{{{resource.key.name}}}"
        item_schema = doc.schemas.ref(resource.model)
        for op, method in resource.operations.items():
            key_param = (
                doc.parameter(method.params[0], "path")
                if op in ("get", "update", "delete")
                else None
            )
            base = {"tags": [tag]}
            if op == "get":
                doc.add(
                    item,
                    "get",
                    doc.describe_method(
                        method,
                        **base,
                        parameters=[key_param, *expand],
                        responses={
                            "200": {
                                "description": f"The {resource.name} item",
                                "headers": cached,
                                "content": doc.json_content(item_schema),
                            },
                            **not_modified,
                            **doc.problems(404, 422),
                        },
                    ),
                )
            elif op == "list":
                page = {
                    "type": "object",
                    "properties": {
                        "items": {"type": "array", "items": item_schema},
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Pass as ?cursor= for the next page",
                        },
                    },
                    "required": ["items", "next_cursor"],
                }
                doc.add(
                    collection,
                    "get",
                    doc.describe_method(
                        method,
                        **base,
                        parameters=[doc.parameter(p, "query") for p in method.params] + expand,
                        responses={
                            "200": {
                                "description": "A page of items",
                                "headers": {**cached, "Link": {"schema": {"type": "string"}}},
                                "content": doc.json_content(page),
                            },
                            **not_modified,
                            **doc.problems(422),
                        },
                    ),
                )
            elif op == "create":
                doc.add(
                    collection,
                    "post",
                    doc.describe_method(
                        method,
                        **base,
                        requestBody={
                            "required": True,
                            "content": doc.json_content(doc.body_schema(method.params)),
                        },
                        responses={
                            "201": {
                                "description": "Created",
                                "headers": {"Location": {"schema": {"type": "string"}}},
                                "content": doc.json_content(item_schema),
                            },
                            **doc.problems(400, 404, 409, 413, 415, 422),
                        },
                    ),
                )
            elif op == "update":
                doc.add(
                    item,
                    "put",
                    doc.describe_method(
                        method,
                        **base,
                        parameters=[key_param],
                        requestBody={
                            "required": True,
                            "content": doc.json_content(doc.body_schema(method.params[1:])),
                        },
                        responses={
                            "200": {
                                "description": "Updated",
                                "content": doc.json_content(item_schema),
                            },
                            **doc.problems(400, 404, 409, 413, 415, 422),
                        },
                    ),
                )
            elif op == "delete":
                doc.add(
                    item,
                    "delete",
                    doc.describe_method(
                        method,
                        **base,
                        parameters=[key_param],
                        responses={
                            "204": {"description": "Deleted"},
                            **doc.problems(404, 409, 422),
                        },
                    ),
                )
    for method in spec.methods.values():
        if method.resource is not None or method.kind is not MethodKind.UNARY:
            continue
        returns_nothing = method.returns == Unit
        success = (
            {"204": {"description": "Done"}}
            if returns_nothing
            else {
                "200": {
                    "description": "The result",
                    "content": doc.json_content(doc.schemas.schema(method.returns)),
                }
            }
        )
        doc.add(
            f"{edge.prefix}/{method.name}",
            "post",
            doc.describe_method(
                method,
                tags=[doc.tag("methods", "Plain methods (RPC-style calls)")],
                requestBody={
                    "required": any(p.required for p in method.params),
                    "content": doc.json_content(doc.body_schema(method.params)),
                },
                responses={**success, **doc.problems(400, 404, 409, 413, 415, 422)},
            ),
        )
