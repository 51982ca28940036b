"""HTTP/1.1 on httptools, speaking straight to polyport's HTTP application.

No ASGI in between: a request is parsed into a
:class:`~polyport.http.request.Request`, served by
:meth:`~polyport.http.app.HttpApp.handle`, and its response written to the
socket as one buffer. Streams (Server-Sent Events) and WebSocket connections
get the transport itself, so a broadcast writes the same bytes to every
subscriber without a task switch per message.

One :class:`HttpConnection` per TCP connection: keep-alive, pipelined requests
answered in order, ``Expect: 100-continue``, body and header limits, idle and
header timeouts, write flow control, and an upgrade to WebSocket.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import httptools

from polyport.core.errors import InvalidArgument, PayloadTooLarge
from polyport.http.request import Headers, Request, Response

if TYPE_CHECKING:
    from polyport.http.app import HttpApp

log = logging.getLogger("polyport.server")

STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()
    for status in http.HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


LAST_CHUNK = b"0\r\n\r\n"
NO_BODY = frozenset({204, 304})


class Limits:
    """Per-connection limits; the defaults follow the mature servers."""

    __slots__ = (
        "body_timeout",
        "header_timeout",
        "keep_alive",
        "max_connections",
        "max_header_bytes",
        "max_headers",
        "max_pipelined",
        "stream_buffer",
    )

    def __init__(
        self,
        *,
        keep_alive: float = 5.0,
        header_timeout: float = 30.0,
        body_timeout: float = 60.0,
        max_headers: int = 100,
        max_header_bytes: int = 64 * 1024,
        max_pipelined: int = 16,
        max_connections: int = 20_000,
        stream_buffer: int = 256 * 1024,
    ) -> None:
        self.keep_alive = keep_alive
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_pipelined = max_pipelined
        self.max_connections = max_connections
        self.stream_buffer = stream_buffer


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, app: HttpApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[HttpConnection] = set()
        self.closing = False
        #: Set when the server is closing and its last connection has gone.
        self.drained = asyncio.Event()
        self._date = b""
        self._date_second = 0
        #: Called with (connection, request, leftover bytes) for a WebSocket upgrade.
        self.upgrade: Callable[[HttpConnection, Request, bytes], None] | None = None

    @property
    def date_header(self) -> bytes:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date


class _TooLarge(Exception):
    """Headers over the limit: answered 431 and closed."""


class ChunkedStream:
    """A streaming response: chunked transfer encoding straight onto the transport."""

    __slots__ = ("_closed", "_exchange", "_finished")

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self._closed = asyncio.get_running_loop().create_future()
        self._finished = False

    @property
    def closed(self) -> bool:
        return self._closed.done() or self._exchange.connection.lost

    def write(self, data: bytes) -> None:
        """Queue ``data`` as one chunk; it never blocks (see :meth:`buffered`)."""
        if data and not self.closed:
            self._exchange.connection.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def buffered(self) -> int:
        connection = self._exchange.connection
        return 0 if connection.lost else connection.transport.get_write_buffer_size()

    async def drain(self, seconds: float) -> bool:
        connection = self._exchange.connection
        if not connection.write_paused or connection.lost:
            return True
        try:
            async with asyncio.timeout(seconds):
                await connection.drain()
        except TimeoutError:
            return False
        return True

    async def wait_closed(self) -> None:
        connection = self._exchange.connection
        if connection.lost:
            return
        await asyncio.wait(
            {self._closed, connection.lost_future}, return_when=asyncio.FIRST_COMPLETED
        )

    def close(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def finish(self) -> None:
        """The final chunk, once the endpoint has returned."""
        self.close()
        if not self._finished and not self._exchange.connection.lost:
            self._finished = True
            self._exchange.connection.transport.write(LAST_CHUNK)


class Exchange:
    """One request and its response on a connection: the Request's ``Connection``."""

    __slots__ = (
        "_body_done",
        "body",
        "body_size",
        "connection",
        "headers",
        "keep_alive",
        "message_complete",
        "stream",
        "too_large",
    )

    def __init__(self, connection: HttpConnection, keep_alive: bool, headers: Headers):
        self.connection = connection
        self.keep_alive = keep_alive
        self.headers = headers  # Content-Length and Expect are read only when needed
        self.body: list[bytes] = []
        self.body_size = 0
        self.too_large = False
        self.message_complete = False
        self._body_done: asyncio.Future[None] | None = None
        self.stream: ChunkedStream | None = None

    def feed(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size > self.connection.state.app.max_body:
            self.too_large = True
            self.body.clear()
        elif not self.too_large:
            self.body.append(chunk)

    def complete(self) -> None:
        self.message_complete = True
        if self._body_done is not None and not self._body_done.done():
            self._body_done.set_result(None)

    def _declared(self) -> tuple[int, bool]:
        """The Content-Length (-1 when not given) and whether ``Expect: 100-continue`` came."""
        declared = -1
        expect = False
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        return declared, expect

    async def read_body(self, limit: int) -> bytes:
        if self.too_large:
            self.keep_alive = False
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        if self.message_complete:
            # The usual case, the body came with the headers: no waiting.
            if self.body_size > limit:
                if self._declared()[0] > limit:
                    self.keep_alive = False
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        else:
            declared, expect = self._declared()
            if declared > limit:
                self.keep_alive = False
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
            if expect and self._body_done is None:  # once, on the first wait
                self.connection.transport.write(CONTINUE)
            self._body_done = asyncio.get_running_loop().create_future()
            self.connection.resume_reading()
            try:
                async with asyncio.timeout(self.connection.state.limits.body_timeout):
                    await asyncio.wait(
                        {self._body_done, self.connection.lost_future},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            except TimeoutError:
                self.keep_alive = False
                raise InvalidArgument("the request body did not arrive in time") from None
            if not self.message_complete:
                self.keep_alive = False
                raise InvalidArgument("the client went away before sending the body")
        if self.too_large or self.body_size > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        return body

    async def wait_disconnect(self) -> None:
        await asyncio.shield(self.connection.lost_future)

    def start_stream(self, status: int, headers: Headers, buffer: int) -> ChunkedStream:
        connection = self.connection
        connection.transport.set_write_buffer_limits(high=buffer, low=buffer // 4)
        head = [status_line(status), connection.state.date_header]
        for name, value in headers:
            head += [name, b": ", _safe(value), b"\r\n"]
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        connection.transport.write(b"".join(head))
        self.stream = ChunkedStream(self)
        return self.stream


def _safe(value: bytes) -> bytes:
    # A header value must not end the header block: strip CR and LF.
    if b"\r" in value or b"\n" in value:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: str | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.lost_future: asyncio.Future[None] = self.loop.create_future()
        self.upgraded: Any = None  # the WebSocket connection after an upgrade
        self.upgraded_task: asyncio.Task[None] | None = None
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._parsing: Exchange | None = None
        self._pending: deque[tuple[Exchange, Request]] = deque()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._task: asyncio.Task[None] | None = None
        self._current: Exchange | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._upgrade_request: Request | None = None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        if len(self.state.connections) >= self.state.limits.max_connections or self.state.closing:
            self.transport.write(
                STATUS_LINES[503] + b"connection: close\r\ncontent-length: 0\r\n\r\n"
            )
            self.transport.close()
            return
        self.state.connections.add(self)
        self._arm(self.state.limits.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.state.connections.discard(self)
        if self.state.closing and not self.state.connections:
            self.state.drained.set()
        self.disarm()
        if not self.lost_future.done():
            self.lost_future.set_result(None)
        if self.upgraded is not None:
            self.upgraded.connection_lost(exc)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.data_received(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :] if upgrade.args else b"")
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooLarge):
                self._refuse(431, b"request headers too large")
            else:
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
                self._refuse(400, b"malformed HTTP request")
        except httptools.HttpParserError:
            self._refuse(400, b"malformed HTTP request")

    def eof_received(self) -> bool | None:
        return None  # half-closed: let the transport close

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is over its high-water mark."""
        return self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._write_paused and not self.lost:
            self._drained = self.loop.create_future()
            await self._drained

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._arm(self.state.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self.state.limits.max_header_bytes:
            raise _TooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        self._header_bytes += len(name) + len(value)
        limits = self.state.limits
        if self._header_bytes > limits.max_header_bytes or len(headers) >= limits.max_headers:
            raise _TooLarge
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.disarm()
        parser = self.parser
        url = httptools.parse_url(self._url)
        path = url.path.decode("latin-1")
        headers = self._headers
        exchange = Exchange(self, parser.should_keep_alive(), headers)
        request = Request(
            parser.get_method().decode("latin-1"),
            path,
            url.query or b"",
            headers,
            self.peer,
            exchange,
            self.state.app.max_body,
        )
        if parser.should_upgrade():
            self._upgrade_request = request
            return
        self._parsing = exchange
        if self._busy:
            self._pending.append((exchange, request))
            if len(self._pending) >= self.state.limits.max_pipelined:
                self.pause_reading()
        else:
            self._start(exchange, request)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed(body)

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing.complete()
            self._parsing = None

    # -- serving ------------------------------------------------------------------------

    def _start(self, exchange: Exchange, request: Request) -> None:
        self._busy = True
        self._current = exchange
        self._task = self.loop.create_task(self._serve(exchange, request))

    async def _serve(self, exchange: Exchange, request: Request) -> None:
        app = self.state.app
        try:
            response, head = await app.handle(request)
        except Exception:  # handle() answers errors itself; this is a last resort
            log.exception("serving %s %s failed", request.method, request.path)
            response, head = Response(500, b'{"code":"INTERNAL"}'), False
        except asyncio.CancelledError:
            self.transport.close()
            raise
        if self.lost:
            return
        if response is not None:
            self._write(exchange, response, head)
        elif exchange.stream is not None:
            exchange.stream.finish()
        else:  # the endpoint gave up on a client that left
            exchange.keep_alive = False
        self._done(exchange)

    def _write(self, exchange: Exchange, response: Response, head: bool) -> None:
        status = response.status
        if not exchange.message_complete:
            # The body was not read (or was too large): the stream is out of step.
            exchange.keep_alive = False
        parts = [status_line(status), self.state.date_header]
        if response.content_type is not None:
            parts += [b"content-type: ", response.content_type, b"\r\n"]
        for name, value in response.headers:
            parts += [name, b": ", _safe(value), b"\r\n"]
        body = response.body
        if status not in NO_BODY:
            parts += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        if not exchange.keep_alive or self.state.closing:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if body and not head and status not in NO_BODY:
            parts.append(body)
        self.transport.write(b"".join(parts))

    def _done(self, exchange: Exchange) -> None:
        self._busy = False
        self._task = None
        self._current = None
        if not exchange.keep_alive or self.state.closing:
            self.transport.close()
            return
        if self._pending:
            self._start(*self._pending.popleft())
            self.resume_reading()
        else:
            self._arm(self.state.limits.keep_alive)

    def _refuse(self, status: int, detail: bytes) -> None:
        if not self.lost:
            body = b'{"status":%d,"detail":"%s"}' % (status, detail)
            self.transport.write(
                STATUS_LINES[status]
                + self.state.date_header
                + b"content-type: application/problem+json\r\nconnection: close\r\n"
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        request = self._upgrade_request
        self._upgrade_request = None
        handler = self.state.upgrade
        if request is None or handler is None or request.path not in self.state.app.websocket:
            self._refuse(404 if request is not None else 400, b"no WebSocket endpoint here")
            return
        handler(self, request, rest)

    # -- timers and flow --------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = self.loop.call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self._busy and not self.lost:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.lost:
            self._reading_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: close when idle, end streams, finish in-flight requests."""
        if self.upgraded is not None:
            self.upgraded.shutdown()
        elif not self._busy:
            self.transport.close()
        elif self._current is not None and self._current.stream is not None:
            self._current.stream.close()  # the endpoint returns; the last chunk goes out

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if not self.lost:
            self.transport.close()


__all__ = ["ChunkedStream", "Exchange", "HttpConnection", "Limits", "ServerState"]
