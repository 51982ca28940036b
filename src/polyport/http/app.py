"""The node's HTTP application: every HTTP edge's routes behind one router.

It owns what is common to all HTTP edges — 404/405 answers, HEAD, CORS,
request ids, problem+json for errors that escape an endpoint, the access log
— so edges only map their wire to the core and back. It does not know what
carries HTTP: polyport's own server and the ASGI adapter both call
:meth:`HttpApp.handle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from polyport.core.context import new_request_id
from polyport.core.errors import Internal, NotFound, ServiceError
from polyport.http.forwarded import TrustedProxies
from polyport.http.problems import PROBLEM_JSON, problem, problem_body
from polyport.http.request import Headers, Request, Response
from polyport.http.router import Route, Router

log = logging.getLogger("polyport.http")
access_log = logging.getLogger("polyport.access")

ALLOW_HEADERS = (
    b"authorization, content-type, x-api-key, x-request-id, x-request-timeout, "
    b"if-none-match, last-event-id"
)


class HttpApp:
    """The router plus the behaviour every HTTP edge shares."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        max_body: int,
        cors_origins: Iterable[str] = (),
        access_log_enabled: bool = False,
        websocket: dict[str, Any] | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.router = Router(routes)
        self.max_body = max_body
        self.cors_origins = frozenset(cors_origins)
        self.access_log = access_log_enabled
        #: WebSocket endpoints by path, for the carriers that speak WebSocket.
        self.websocket: dict[str, Any] = websocket or {}
        #: The peers whose forwarding headers name the client: carriers ask it
        #: for each request's :attr:`~polyport.http.request.Request.peer`.
        self.proxies = trusted_proxies or TrustedProxies()

    async def handle(self, request: Request) -> tuple[Response | None, bool]:
        """Route and serve one request: the response (None if it streamed) and HEAD-ness."""
        started = time.perf_counter() if self.access_log else 0.0
        method = request.method
        path = request.path
        match = self.router.match(path)
        head = False
        response: Response | None
        if match is None:
            response = self.error(NotFound(f"no route {path[:200]}"), path)
        else:
            endpoint = match.handlers.get(method)
            if endpoint is None and method == "HEAD":
                endpoint = match.handlers.get("GET")
                head = True
            if endpoint is None:
                response = self._not_allowed(method, match.handlers, path, request)
            else:
                request.params = match.params
                try:
                    response = await endpoint(request)
                except ServiceError as exc:
                    response = self.error(exc, path)
                except Exception:
                    request_id = new_request_id()
                    log.exception(
                        "unhandled error on %s %s", method, path, extra={"request_id": request_id}
                    )
                    response = self.error(Internal(), path, request_id)
        if response is not None and self.cors_origins:
            response.headers.extend(self._cors(request))
        if self.access_log:
            access_log.info(
                "%s %s %s",
                method,
                path,
                response.status if response else "stream",
                extra={
                    "client": request.peer,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
        return response, head

    def error(self, error: ServiceError, path: str, request_id: str | None = None) -> Response:
        request_id = request_id or error.request_id
        if request_id is None and isinstance(error, Internal):
            request_id = new_request_id()
        status, headers, body = problem(error, instance=path, request_id=request_id)
        return Response(status, body, content_type=PROBLEM_JSON, headers=headers)

    def _not_allowed(
        self, method: str, handlers: dict[str, Any], path: str, request: Request
    ) -> Response:
        allowed = sorted({*handlers, *(("HEAD",) if "GET" in handlers else ())})
        if method == "OPTIONS":
            headers = [(b"allow", ", ".join(allowed).encode())]
            if self.cors_origins and self._cors(request):
                headers += [
                    (b"access-control-allow-methods", ", ".join(allowed).encode()),
                    (b"access-control-allow-headers", ALLOW_HEADERS),
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

    def _cors(self, request: Request) -> Headers:
        origin = request.headers.get(b"origin")
        if origin is None:
            return []
        if "*" in self.cors_origins:
            return [(b"access-control-allow-origin", b"*")]
        if origin.decode("latin-1") in self.cors_origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return []
