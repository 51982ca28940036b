"""GraphQL over HTTP: ``POST /graphql`` and ``GET /graphql``, as the GraphQL-over-HTTP spec says.

* ``POST`` with ``Content-Type: application/json`` (or ``application/graphql+json``)
  and a body ``{"query", "variables", "operationName", "extensions"}``.
* ``GET`` with those as query parameters (``variables`` and ``extensions`` as
  JSON): queries only — a mutation over GET is ``405`` with ``Allow: POST``.
  GET answers carry an ``ETag`` and ``Cache-Control`` (``private`` when the
  request carried credentials) and honour ``If-None-Match``.
* The answer's media type follows ``Accept``: ``application/graphql-response+json``
  when asked for first, else ``application/json`` (also when ``Accept`` is absent).
  With ``application/json`` every well-formed request is answered ``200``;
  with ``application/graphql-response+json`` a request that cannot be executed
  (syntax, validation, limits, bad variables) is ``400`` and a response
  with ``data`` is ``200``. A body that is not a GraphQL request at all is
  ``400`` in both; bad credentials ``401``.
* A browser (``Accept`` naming ``text/html`` before any JSON type) asking
  ``GET /graphql`` gets the in-browser IDE, served from the package (no CDN):
  the page, and its script and styles at ``/static/graphiql/{name}``.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import orjson
from graphql import OperationType

from polyport.core.errors import InvalidArgument, RateLimited, ServiceError, Unauthenticated
from polyport.edges.graphql import errors
from polyport.edges.graphql.errors import RequestError, field_error, request_error
from polyport.edges.graphql.execute import GraphQLRunner
from polyport.http.caching import cache_control, etag_of, not_modified
from polyport.http.request import Request, Response

JSON = b"application/json"
GRAPHQL_RESPONSE = b"application/graphql-response+json"
JSON_UTF8 = b"application/json; charset=utf-8"
RESPONSE_UTF8 = b"application/graphql-response+json; charset=utf-8"
HTML = b"text/html; charset=utf-8"
#: Request bodies accepted on POST (the second is an older name some clients still send).
_BODY_TYPES = (JSON, b"application/graphql+json")

_NOT_FOUND_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>GraphQL</title>"
    b"<p>The GraphQL IDE is not installed. POST queries to <code>/graphql</code>; "
    b"the schema is at <a href=/graphql/schema.graphql>/graphql/schema.graphql</a>.</p>"
)


_MEDIA_CACHE: dict[str, bytes | None] = {}


def preferred_media(accept: str | None) -> bytes | None:
    """The response media type for ``Accept``; None when neither JSON type is acceptable."""
    if accept is None or not accept.strip():
        return JSON
    try:
        return _MEDIA_CACHE[accept]
    except KeyError:
        pass
    media = _negotiate(accept)
    if len(_MEDIA_CACHE) < 256:  # clients send a handful of distinct Accept headers
        _MEDIA_CACHE[accept] = media
    return media


def _negotiate(accept: str) -> bytes | None:
    best: tuple[float, int, bytes] | None = None
    for position, part in enumerate(accept.split(",")):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media == "application/graphql-response+json":
            candidate = GRAPHQL_RESPONSE
        elif media in ("application/json", "application/*", "*/*"):
            candidate = JSON
        else:
            continue
        rank = (quality, -position, candidate)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best else None


def wants_html(request: Request) -> bool:
    """A browser navigating here (``text/html`` before any JSON type in ``Accept``)."""
    accept = (request.header(b"accept") or "").lower()
    html = accept.find("text/html")
    if html == -1:
        return False
    json = [p for p in (accept.find("application/json"), accept.find("+json")) if p != -1]
    return not json or html < min(json)


#: The IDE's files by suffix: what GET /static/graphiql/{name} serves.
_ASSET_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
    ".html": HTML,
}


def ide_assets() -> dict[str, tuple[bytes, bytes]]:
    """The IDE's bundled files (GraphiQL, built offline into the package), by name."""
    found: dict[str, tuple[bytes, bytes]] = {}
    try:
        folder = resources.files("polyport.web").joinpath("static/graphiql")
        for entry in folder.iterdir():
            suffix = entry.name[entry.name.rfind(".") :]
            if entry.is_file() and suffix in _ASSET_TYPES:
                found[entry.name] = (entry.read_bytes(), _ASSET_TYPES[suffix])
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError, OSError):
        return {}
    return found


def cached_file(request: Request, body: bytes, content_type: bytes) -> Response:
    """A file with a strong ETag, revalidated on every use (304 when unchanged)."""
    etag = etag_of(body)
    headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
    if not_modified(request.headers.get(b"if-none-match"), etag):
        return Response(304, content_type=None, headers=headers)
    return Response(200, body, content_type=content_type, headers=headers)


class HttpTransport:
    """Decodes GraphQL-over-HTTP requests for a :class:`GraphQLRunner`, encodes its results."""

    def __init__(self, runner: GraphQLRunner, edge: str) -> None:
        self.runner = runner
        self.edge = edge
        self.assets = ide_assets()

    async def asset(self, request: Request) -> Response:
        """``GET /static/graphiql/{name}``: the IDE's script, styles and licences."""
        found = self.assets.get(request.params["name"])
        if found is None or request.params["name"] == "index.html":
            return Response(404, b"not found\n", content_type=b"text/plain; charset=utf-8")
        return cached_file(request, *found)

    async def post(self, request: Request) -> Response:
        headers = request.headers
        accept = headers.get(b"accept")
        media = JSON if accept is None else preferred_media(accept.decode("latin-1"))
        if media is None:
            return _refuse(406, "accept application/graphql-response+json or application/json")
        content_type = headers.get(b"content-type", b"")
        if content_type != JSON and content_type.split(b";")[0].strip().lower() not in _BODY_TYPES:
            return _errors(
                415,
                media,
                [_error("send the request as Content-Type: application/json", errors.BAD_REQUEST)],
            )
        try:
            body = await request.body()
        except ServiceError as exc:
            return _errors(413, media, [field_error(exc, None)])
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _errors(400, media, [_error("the body is not valid JSON", errors.BAD_REQUEST)])
        if not isinstance(payload, dict):
            return _errors(
                400, media, [_error("the body must be a JSON object", errors.BAD_REQUEST)]
            )
        return await self._answer(request, payload, media, get=False)

    async def get(self, request: Request) -> Response:
        if wants_html(request):
            page = self.assets.get("index.html")
            if page:
                return cached_file(request, *page)
            return Response(404, _NOT_FOUND_PAGE, content_type=HTML)
        media = preferred_media(request.header(b"accept"))
        if media is None:
            return _refuse(406, "accept application/graphql-response+json or application/json")
        query = request.query
        payload: dict[str, Any] = {}
        if "query" in query:
            payload["query"] = query["query"]
        if query.get("operationName"):
            payload["operationName"] = query["operationName"]
        for name in ("variables", "extensions"):
            if query.get(name):
                try:
                    payload[name] = orjson.loads(query[name])
                except orjson.JSONDecodeError:
                    return _errors(
                        400, media, [_error(f"{name} is not valid JSON", errors.BAD_REQUEST)]
                    )
        response = await self._answer(request, payload, media, get=True)
        if response.status == 200:
            etag = etag_of(response.body)
            has_credentials = b"authorization" in request.headers or b"x-api-key" in request.headers
            response.headers.append((b"etag", etag))
            response.headers.append(
                (b"cache-control", cache_control(public=not has_credentials, max_age=0))
            )
            response.headers.append((b"vary", b"Accept, Authorization, X-API-Key"))
            if not_modified(request.headers.get(b"if-none-match"), etag):
                return Response(304, content_type=None, headers=response.headers)
        return response

    async def _answer(
        self, request: Request, payload: dict[str, Any], media: bytes, *, get: bool
    ) -> Response:
        runner = self.runner
        try:
            caller = request.caller(self.edge)
            principal = runner.dispatcher.authenticate(caller)
        except Unauthenticated as exc:
            return _errors(
                401,
                media,
                [field_error(exc, None)],
                [(b"www-authenticate", b'Bearer error="invalid_token"')],
            )
        except InvalidArgument as exc:
            return _errors(400, media, [field_error(exc, None)])
        try:
            runner.charge(principal, caller)  # before the document costs anything
            plan, variables, source = runner.prepare(payload)
            if get and plan.operation is not OperationType.QUERY:
                return Response(
                    405,
                    _body({"errors": [_error("only queries may use GET", errors.BAD_REQUEST)]}),
                    content_type=_content_type(media),
                    headers=[(b"allow", b"POST")],
                )
            if plan.operation is OperationType.SUBSCRIPTION:
                raise request_error(
                    "subscriptions run over the graphql-transport-ws WebSocket at /graphql",
                    errors.BAD_REQUEST,
                )
            result = await runner.run_plan(plan, variables, principal, caller, source)
        except RequestError as exc:
            status = exc.status if media == GRAPHQL_RESPONSE else 200
            if exc.errors[0]["extensions"]["code"] == errors.BAD_REQUEST:
                status = exc.status if exc.status != 200 else 400
            return _errors(status, media, exc.errors)
        except RateLimited as exc:  # charged once per request, before anything ran
            retry = [(b"retry-after", str(math.ceil(exc.retry_after or 1)).encode())]
            return _errors(429, media, [field_error(exc, None)], retry)
        except ServiceError as exc:
            return _errors(400, media, [field_error(exc, None)])
        return Response(200, _body(result), content_type=_content_type(media))


def _content_type(media: bytes) -> bytes:
    return RESPONSE_UTF8 if media == GRAPHQL_RESPONSE else JSON_UTF8


def _body(result: dict[str, Any]) -> bytes:
    return orjson.dumps(result)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}


def _errors(
    status: int,
    media: bytes,
    found: list[dict[str, Any]],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    return Response(
        status, _body({"errors": found}), content_type=_content_type(media), headers=headers
    )


def _refuse(status: int, message: str) -> Response:
    return _errors(status, JSON, [_error(message, errors.BAD_REQUEST)])


__all__ = ["GRAPHQL_RESPONSE", "HttpTransport", "preferred_media"]
