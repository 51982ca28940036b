"""One request and its response on a connection, and a response streamed in chunks.

An :class:`Exchange` is what :class:`~polyport.http.request.Request` sees as
its ``Connection``: it holds the request's body as it arrives, waits for the
rest when an endpoint asks for it, and opens a :class:`ChunkedStream`. Every
byte goes out through :meth:`HttpConnection.write
<polyport.server.http1.HttpConnection.write>`, which counts what it wrote so a
client that reads nothing can be told from one that reads slowly.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING

from polyport.core.errors import InvalidArgument, PayloadTooLarge
from polyport.http.request import Headers

if TYPE_CHECKING:
    from polyport.server.http1 import HttpConnection

log = logging.getLogger("polyport.server")

STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()
    for status in http.HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
NO_BODY = frozenset({204, 304})


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def safe(value: bytes) -> bytes:
    """A header value that cannot end the header block: CR and LF become spaces."""
    if b"\r" in value or b"\n" in value:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


def problem_response(status: int, detail: bytes, date: bytes, extra: bytes = b"") -> bytes:
    """A whole ``Connection: close`` problem response, for what the server answers itself."""
    body = b'{"status":%d,"detail":"%s"}' % (status, detail)
    return (
        status_line(status)
        + date
        + b"content-type: application/problem+json\r\nconnection: close\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


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
        """Queue ``data`` as one chunk; it never blocks (see :meth:`drain`)."""
        if data and not self.closed:
            self._exchange.connection.write(b"%x\r\n%b\r\n" % (len(data), data))

    def buffered(self) -> int:
        return self._exchange.connection.buffered()

    async def drain(self, seconds: float) -> bool:
        """Wait while the client is behind; False, and the connection dropped, if it
        still is after ``seconds``.

        Dropped, not closed: a close waits for the buffer to go out first, and
        a reader that has stopped would keep it (and its memory) forever.
        """
        connection = self._exchange.connection
        if not connection.write_paused or connection.lost:
            return True
        try:
            async with asyncio.timeout(seconds):
                await connection.drain()
        except TimeoutError:
            log.debug(
                "dropping a stream whose client read nothing for %g s (%d bytes unread)",
                seconds,
                connection.buffered(),
            )
            connection.abort()
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
            self._exchange.connection.write(LAST_CHUNK)


class Exchange:
    """One request and its response on a connection: the Request's ``Connection``."""

    __slots__ = (
        "_body_done",
        "body",
        "body_size",
        "canned",
        "connection",
        "headers",
        "keep_alive",
        "message_complete",
        "stream",
        "timed_out",
        "too_large",
        "upgrade_rest",
    )

    def __init__(self, connection: HttpConnection, keep_alive: bool, headers: Headers):
        self.connection = connection
        self.keep_alive = keep_alive
        self.headers = headers  # Content-Length and Expect are read only when needed
        self.body: list[bytes] = []
        self.body_size = 0
        self.too_large = False
        self.timed_out = False
        self.message_complete = False
        self._body_done: asyncio.Future[None] | None = None
        self.stream: ChunkedStream | None = None
        #: A whole response the server answers itself (a refusal), in its turn.
        self.canned: bytes | None = None
        #: A WebSocket upgrade waiting its turn: the bytes that came after its request.
        self.upgrade_rest: bytes | None = None

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
            connection = self.connection
            if expect and self._body_done is None:  # once, on the first wait
                connection.write(CONTINUE)
            self._body_done = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(connection.state.limits.body_timeout):
                    await asyncio.wait(
                        {self._body_done, connection.lost_future},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            except TimeoutError:
                # The server answers 408 for the endpoint (see HttpConnection._serve):
                # whatever the endpoint makes of the error, the request never arrived.
                self.keep_alive = False
                self.timed_out = True
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
            head += [name, b": ", safe(value), b"\r\n"]
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        connection.write(b"".join(head))
        self.stream = ChunkedStream(self)
        return self.stream


__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "NO_BODY",
    "STATUS_LINES",
    "ChunkedStream",
    "Exchange",
    "problem_response",
    "safe",
    "status_line",
]
