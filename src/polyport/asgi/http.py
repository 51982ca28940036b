"""The HTTP request and response as HTTP edges see them: small and cheap.

A :class:`Request` reads headers, query and body lazily from the ASGI scope;
a :class:`Response` is three fields. Edges never touch raw ASGI messages
except to stream (SSE).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.core.dispatch import Caller
from polyport.core.errors import InvalidArgument, PayloadTooLarge, Unauthenticated

Headers = list[tuple[bytes, bytes]]
Scope = dict[str, Any]
Message = dict[str, Any]

JSON = b"application/json"
T = TypeVar("T")


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        content_type: bytes | None = JSON,
        headers: Headers | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers if headers is not None else []


class Request:
    __slots__ = (
        "_body",
        "_headers",
        "_query",
        "app",
        "max_body",
        "params",
        "receive",
        "scope",
        "send",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Any,
        send: Any,
        params: dict[str, str],
        max_body: int,
        app: Any = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.params = params
        self.max_body = max_body
        self.app = app
        self._headers: dict[bytes, bytes] | None = None
        self._query: dict[str, str] | None = None
        self._body: bytes | None = None

    @property
    def method(self) -> str:
        return self.scope["method"]  # type: ignore[no-any-return]

    @property
    def path(self) -> str:
        return self.scope["path"]  # type: ignore[no-any-return]

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        if self._headers is None:
            self._headers = dict(self.scope["headers"])
        return self._headers

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated name keeps its last value (see :meth:`query_all`)."""
        if self._query is None:
            raw = self.scope.get("query_string", b"")
            self._query = (
                dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}
            )
        return self._query

    def query_all(self, name: str) -> list[str]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return [v for k, v in parse_qsl(raw, keep_blank_values=True) if k == name]

    def credentials(self) -> Credentials:
        """Bearer token from ``Authorization``, API key from ``X-API-Key``."""
        headers = self.headers
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        if authorization is None and api_key is None:
            return NO_CREDENTIALS
        bearer = None
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
            else:
                raise Unauthenticated(
                    "the Authorization header must be 'Bearer <token>'", invalid_token=True
                )
        return Credentials(bearer=bearer, api_key=api_key.decode("latin-1") if api_key else None)

    def caller(self, edge: str) -> Caller:
        """The core's view of who is calling, for the dispatch pipeline."""
        headers = self.headers
        caller = Caller(edge, self.credentials(), self.peer)
        request_id = headers.get(b"x-request-id")
        if request_id is not None:
            caller.request_id = request_id.decode("latin-1")[:128]
        traceparent = headers.get(b"traceparent")
        if traceparent is not None:
            parts = traceparent.split(b"-")
            if len(parts) == 4 and len(parts[1]) == 32:
                caller.trace_id = parts[1].decode("latin-1")
        timeout = headers.get(b"x-request-timeout")
        if timeout is not None:
            try:
                seconds = float(timeout)
            except ValueError:
                raise InvalidArgument("X-Request-Timeout must be a number of seconds") from None
            if not 0 < seconds <= 86400:
                raise InvalidArgument("X-Request-Timeout must be between 0 and 86400 seconds")
            caller.timeout = seconds
        return caller

    async def body(self) -> bytes:
        """The whole body, refusing more than ``max_body`` bytes with :class:`PayloadTooLarge`."""
        if self._body is not None:
            return self._body
        length = self.headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise InvalidArgument("bad Content-Length", unparseable=True) from None
            if declared > self.max_body:
                raise PayloadTooLarge(f"the body is over the {self.max_body}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(f"the body is over the {self.max_body}-byte limit")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def unless_disconnected(self, work: Awaitable[T]) -> T | None:
        """Await ``work``, or abandon it (None) if the client goes away first.

        For requests held open (long polls): a client that has left should not
        keep a waiter, a task and a socket busy until the wait runs out.
        """
        if self._body is None:
            await self.body()  # the request's own messages come first
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self._disconnect())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def json_body(self) -> bytes:
        """The body, after checking it is declared as JSON (or not declared at all)."""
        content_type = self.headers.get(b"content-type")
        if content_type is not None:
            media = content_type.split(b";", 1)[0].strip().lower()
            if media != JSON and not (
                media.startswith(b"application/") and media.endswith(b"+json")
            ):
                raise UnsupportedMediaType(content_type.decode("latin-1"))
        return await self.body()


class UnsupportedMediaType(InvalidArgument):
    """The body is not JSON (HTTP 415)."""

    code = "UNSUPPORTED_MEDIA_TYPE"

    def __init__(self, media: str) -> None:
        super().__init__(f"send the body as application/json, not {media[:60]!r}")


async def send_response(
    send: Any, response: Response, *, head: bool = False, extra: Headers | None = None
) -> None:
    headers = response.headers
    if response.content_type is not None:
        headers = [(b"content-type", response.content_type), *headers]
    if extra:
        headers = headers + extra
    body = response.body
    if response.status in (204, 304):
        body = b""
    else:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
