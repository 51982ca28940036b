"""The HTTP request and response as HTTP edges see them: small and cheap.

A :class:`Request` is built by whatever carries HTTP — polyport's own
HTTP/1.1 server (:mod:`polyport.server`) or the ASGI adapter
(:mod:`polyport.http.asgi`) — and reads headers, query and body lazily. The
carrier is a :class:`Connection`: it supplies the body, tells when the client
has gone, and opens streaming responses (SSE). A :class:`Response` is four
fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from typing import Protocol, TypeVar
from urllib.parse import parse_qsl

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.core.dispatch import Caller
from polyport.core.errors import InvalidArgument, Unauthenticated

Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
#: The cookie a browser may carry a ticket (or any bearer token) in, for streams.
TOKEN_COOKIE = "polyport_token"
#: A ``Host`` header worth writing into a document: a name or an address, and a port.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
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


class Stream(Protocol):
    """A response being streamed (chunked): Server-Sent Events, NDJSON.

    ``write`` never blocks: it queues bytes for the socket. ``buffered`` says
    how many bytes are still waiting, so a producer can tell a slow reader.
    """

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int: ...

    async def drain(self, seconds: float) -> bool:
        """Wait while the buffer is over its high-water mark; False if still full after
        ``seconds``: the reader has stalled, and the carrier drops the connection
        where it can (a close would wait for a reader that has stopped)."""
        ...

    async def wait_closed(self) -> None:
        """Return when the client has gone or :meth:`close` was called."""
        ...

    def close(self) -> None:
        """End the response (the last chunk is sent)."""
        ...


class Connection(Protocol):
    """What carries one request: its body, its client, its streaming response."""

    async def read_body(self, limit: int) -> bytes:
        """The whole body; :class:`~polyport.core.errors.PayloadTooLarge` past ``limit``."""
        ...

    async def wait_disconnect(self) -> None:
        """Return once the client has gone away."""
        ...

    def start_stream(self, status: int, headers: Headers, buffer: int) -> Stream:
        """Send the status line and headers now; the body follows as chunks.

        ``buffer`` is the high-water mark of unsent bytes :meth:`Stream.drain` waits on.
        """
        ...


def is_json(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` names JSON: ``application/json`` or ``application/*+json``."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == JSON or (media.startswith(b"application/") and media.endswith(b"+json"))


class Request:
    __slots__ = (
        "_body",
        "_headers",
        "_query",
        "connection",
        "headers_list",
        "max_body",
        "method",
        "params",
        "path",
        "peer",
        "query_string",
        "scheme",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: Headers,
        peer: str | None,
        connection: Connection,
        max_body: int,
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers_list = headers
        #: The client's IP address: the TCP peer's, or the one a trusted proxy
        #: forwarded (:mod:`polyport.http.forwarded`). Rate limits and logs use it.
        self.peer = peer
        #: ``http`` or ``https``: the scheme the client used (a trusted proxy may say).
        self.scheme = scheme
        self.connection = connection
        self.max_body = max_body
        self.params: dict[str, str] = {}
        self._headers: dict[bytes, bytes] | None = None
        self._query: dict[str, str] | None = None
        self._body: bytes | None = None

    @property
    def headers(self) -> dict[bytes, bytes]:
        """Headers by lower-case name (a repeated header keeps its last value)."""
        if self._headers is None:
            self._headers = dict(self.headers_list)
        return self._headers

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def host(self, default: str) -> str:
        """``HOST[:PORT]`` as the client addressed the node, or ``default`` when it did not say.

        For absolute URLs in generated documents (the WSDL's address, AsyncAPI's
        servers): anything but a name or an address with an optional port is
        not taken.
        """
        host = self.header(b"host")
        return host if host is not None and _HOST.fullmatch(host) else default

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated name keeps its last value (see :meth:`query_all`)."""
        if self._query is None:
            raw = self.query_string
            self._query = (
                dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}
            )
        return self._query

    def query_all(self, name: str) -> list[str]:
        raw = self.query_string.decode("latin-1")
        return [v for k, v in parse_qsl(raw, keep_blank_values=True) if k == name]

    def credentials(self, *, query_token: bool = False) -> Credentials:
        """Bearer token from ``Authorization``, API key from ``X-API-Key``.

        With ``query_token`` (streams opened by browsers, which cannot set
        headers on ``EventSource`` or ``WebSocket``) an ``access_token`` query
        parameter counts as a bearer token.
        """
        headers = self.headers
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        if authorization is None and api_key is None:
            if query_token:
                token = self.query.get("access_token") or self.cookie(TOKEN_COOKIE)
                if token:
                    return Credentials(bearer=token)
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

    def cookie(self, name: str) -> str | None:
        """One cookie's value from the ``Cookie`` header."""
        raw = self.headers.get(b"cookie")
        if raw is None:
            return None
        for part in raw.decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value.strip('"')
        return None

    def caller(self, edge: str, *, query_token: bool = False) -> Caller:
        """The core's view of who is calling, for the dispatch pipeline."""
        headers = self.headers
        caller = Caller(edge, self.credentials(query_token=query_token), self.peer)
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
        """The whole body, refusing more than ``max_body`` bytes with PayloadTooLarge."""
        if self._body is None:
            self._body = await self.connection.read_body(self.max_body)
        return self._body

    def query_integer(self, name: str, default: T, low: int, high: int) -> int | T:
        """Query parameter ``name`` as a whole number from ``low`` to ``high`` (``default``
        when absent); InvalidArgument naming the field otherwise."""
        raw = self.query.get(name)
        if raw is None:
            return default
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses (a 500).
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            raise InvalidArgument(
                f"{name} must be a whole number from {low} to {high}",
                details=[{"field": name, "message": f"must be from {low} to {high}"}],
            )
        return int(raw)

    async def json_body(self, limit: int | None = None) -> bytes:
        """The body, after checking it is declared as JSON (or not declared at all); more
        than ``limit`` bytes (``max_body`` at most) is refused with PayloadTooLarge."""
        content_type = self.headers.get(b"content-type")
        if content_type is not None and content_type != JSON and not is_json(content_type):
            raise UnsupportedMediaType(content_type.decode("latin-1"))
        if self._body is None:  # self.body(), without a coroutine of its own
            most = self.max_body if limit is None else min(limit, self.max_body)
            self._body = await self.connection.read_body(most)
        return self._body

    def stream(self, status: int, headers: Headers, *, buffer: int = 256 * 1024) -> Stream:
        """Start a streaming response (see :class:`Stream`)."""
        return self.connection.start_stream(status, headers, buffer)

    async def unless_disconnected(self, work: Awaitable[T]) -> T | None:
        """Await ``work``, or abandon it (None) if the client goes away first.

        For requests held open (long polls): a client that has left should not
        keep a waiter, a task and a socket busy until the wait runs out.
        """
        await self.body()  # the request's own body comes first
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self.connection.wait_disconnect())
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


class UnsupportedMediaType(InvalidArgument):
    """The body is not JSON (HTTP 415)."""

    code = "UNSUPPORTED_MEDIA_TYPE"

    def __init__(self, media: str) -> None:
        super().__init__(f"send the body as application/json, not {media[:60]!r}")


def response_headers(response: Response, extra: Headers | None = None) -> Headers:
    """Content type, the response's own headers, ``extra``, and the length when it has a body."""
    headers = list(response.headers)
    if response.content_type is not None:
        headers.insert(0, (b"content-type", response.content_type))
    if extra:
        headers.extend(extra)
    if response.status not in (204, 304):
        headers.append((b"content-length", str(len(response.body)).encode()))
    return headers


__all__ = [
    "JSON",
    "Connection",
    "Headers",
    "Request",
    "Response",
    "Stream",
    "UnsupportedMediaType",
    "is_json",
    "response_headers",
]
