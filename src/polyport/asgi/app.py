"""The node's single ASGI application: every HTTP edge's routes behind one router.

It owns what is common to all HTTP edges — 404/405 answers, HEAD, CORS,
request ids, problem+json for errors that escape an endpoint, the access log
— so edges only map their wire to the core and back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from polyport.asgi.http import Headers, Request, Response, send_response
from polyport.asgi.problems import PROBLEM_JSON, problem, problem_body
from polyport.asgi.router import Route, Router
from polyport.core.context import new_request_id
from polyport.core.errors import Internal, NotFound, ServiceError

log = logging.getLogger("polyport.http")
access_log = logging.getLogger("polyport.access")

WebSocketHandler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class HttpApp:
    """An ASGI app over :class:`Router`, with the behaviour every HTTP edge shares."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        max_body: int,
        cors_origins: Iterable[str] = (),
        access_log_enabled: bool = False,
        websocket: dict[str, WebSocketHandler] | None = None,
    ) -> None:
        self.router = Router(routes)
        self.max_body = max_body
        self.cors_origins = frozenset(cors_origins)
        self.access_log = access_log_enabled
        self.websocket = websocket or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            handler = self.websocket.get(scope["path"])
            if handler is None:
                await send({"type": "websocket.close", "code": 1008, "reason": "no such endpoint"})
            else:
                await handler(scope, receive, send)
        elif kind == "lifespan":
            # The node starts and stops around the server; nothing to do here.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter() if self.access_log else 0.0
        method = scope["method"]
        path = scope["path"]
        extra: Headers = []
        if self.cors_origins:
            extra = self._cors(scope)
        match = self.router.match(path)
        head = False
        response: Response | None
        if match is None:
            response = self._error(NotFound(f"no route {path[:200]}"), path, scope)
        else:
            endpoint = match.handlers.get(method)
            if endpoint is None and method == "HEAD":
                endpoint = match.handlers.get("GET")
                head = True
            if endpoint is None:
                response = self._not_allowed(method, match.handlers, path, scope, extra)
            else:
                request = Request(scope, receive, send, match.params, self.max_body, self)
                try:
                    response = await endpoint(request)
                except ServiceError as exc:
                    response = self._error(exc, path, scope)
                except Exception:
                    request_id = new_request_id()
                    log.exception(
                        "unhandled error on %s %s", method, path, extra={"request_id": request_id}
                    )
                    response = self._error(Internal(), path, scope, request_id)
        if response is not None:
            await send_response(send, response, head=head, extra=extra)
        if self.access_log:
            access_log.info(
                "%s %s %s",
                method,
                path,
                response.status if response else "stream",
                extra={"ms": round((time.perf_counter() - started) * 1000, 3)},
            )

    def _error(
        self, error: ServiceError, path: str, scope: dict[str, Any], request_id: str | None = None
    ) -> Response:
        request_id = request_id or error.request_id
        if request_id is None and isinstance(error, Internal):
            request_id = new_request_id()
        status, headers, body = problem(error, instance=path, request_id=request_id)
        return Response(status, body, content_type=PROBLEM_JSON, headers=headers)

    def _not_allowed(
        self,
        method: str,
        handlers: dict[str, Any],
        path: str,
        scope: dict[str, Any],
        extra: Headers,
    ) -> Response:
        allowed = sorted({*handlers, *(("HEAD",) if "GET" in handlers else ())})
        if method == "OPTIONS":
            headers = [(b"allow", ", ".join(allowed).encode())]
            if extra:
                headers += [
                    (b"access-control-allow-methods", ", ".join(allowed).encode()),
                    (
                        b"access-control-allow-headers",
                        b"authorization, content-type, x-api-key, x-request-id, if-none-match, "
                        b"last-event-id",
                    ),
                    (b"access-control-max-age", b"600"),
                ]
            return Response(204, content_type=None, headers=headers)
        body = problem_body(
            405,
            "Method Not Allowed",
            "METHOD_NOT_ALLOWED",
            f"{method} is not allowed on {path[:200]}; allowed: {', '.join(allowed)}",
            instance=path,
        )
        return Response(
            405, body, content_type=PROBLEM_JSON, headers=[(b"allow", ", ".join(allowed).encode())]
        )

    def _cors(self, scope: dict[str, Any]) -> Headers:
        origin = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        if origin is None:
            return []
        if "*" in self.cors_origins:
            return [(b"access-control-allow-origin", b"*")]
        if origin.decode("latin-1") in self.cors_origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return []
