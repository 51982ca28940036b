"""HTTP/1.1 on httptools, speaking straight to polyport's HTTP application.

No ASGI in between: a request is parsed into a
:class:`~polyport.http.request.Request`, served by
:meth:`~polyport.http.app.HttpApp.handle`, and its response written to the
socket as one buffer. Streams (Server-Sent Events) and WebSocket connections
get the transport itself, so a broadcast writes the same bytes to every
subscriber without a task switch per message.

One :class:`HttpConnection` per TCP connection: keep-alive, pipelined requests
answered in order, ``Expect: 100-continue``, body and header limits, idle and
header timeouts, an upgrade to WebSocket, and flow control both ways:

* **reading** stops while pipelined requests wait (more than ``max_pipelined``,
  bodies over a small budget, or answers the client is not taking): the bytes
  not yet parsed wait as they came, parsed a slice at a time, so a flood of
  small requests in one read cannot become thousands of queued requests;
* **writing**: the next pipelined request starts only once the transport has
  drained below its high-water mark, so a client that never reads holds at
  most one response; and a client that takes none of our bytes for
  ``send_timeout`` seconds is aborted (nginx's ``send_timeout``), as is one we
  closed that never takes the rest: a close alone would wait on it forever
  (:class:`~polyport.server.flow.FlowControl`, shared with WebSocket).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import httptools

from polyport.http.request import Headers, Request, Response
from polyport.server.exchange import (
    NO_BODY,
    STATUS_LINES,
    ChunkedStream,
    Exchange,
    problem_response,
    safe,
    status_line,
)
from polyport.server.flow import HOLD_PIPELINE, HOLD_WRITES, FlowControl
from polyport.server.limits import Limits

if TYPE_CHECKING:
    from polyport.http.app import HttpApp

log = logging.getLogger("polyport.server")

#: Bytes handed to the parser at a time. Between slices the connection checks
#: whether it should stop parsing, so one read full of tiny pipelined requests
#: queues at most a slice's worth of them beyond the limit.
FEED_SLICE = 8 * 1024
#: Body bytes pipelined requests may hold while they wait their turn (the one
#: being answered may have up to ``max_body``): more, and reading stops.
QUEUED_BODY_BUDGET = 64 * 1024


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


class _Refusal(Exception):
    """Raised in a parser callback: the request is answered ``status`` and the connection closed."""

    def __init__(self, status: int, detail: bytes) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


def _wants_websocket(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"upgrade":
            return any(token.strip().lower() == b"websocket" for token in value.split(b","))
    return False


class HttpConnection(FlowControl):
    """One client connection."""

    def __init__(self, state: ServerState) -> None:
        super().__init__(state.limits.send_timeout)
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.upgraded: Any = None  # the WebSocket connection after an upgrade
        self.upgraded_task: asyncio.Task[None] | None = None
        # The request being parsed.
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._hosts = 0
        self._parsing: Exchange | None = None
        # Requests parsed and waiting their turn, and the one being answered.
        self._pending: deque[tuple[Exchange, Request | None]] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._current: Exchange | None = None
        # Bytes received but not parsed yet, while requests wait (reading is paused).
        self._backlog = b""
        # No more HTTP on this connection: a refusal, or a WebSocket upgrade, came.
        self._ended = False
        # An Upgrade this server does not take (h2c, or not a WebSocket route): the
        # parser stops at it anyway, so its head is parsed again by a fresh parser.
        self._ignore_upgrade: tuple[bytes, bytes] | None = None
        self._replaying = False
        # A WebSocket upgrade: being parsed, then (behind earlier requests) waiting its turn.
        self._websocket: tuple[Exchange, Request] | None = None
        self._handshake: Exchange | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The peer is a trusted proxy: each request's forwarding headers name its client.
        self._proxied = False

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        state = self.state
        if len(state.connections) >= state.limits.max_connections or state.closing:
            log.debug("refusing a connection from %s: %d open", self.peer, len(state.connections))
            self.write(
                STATUS_LINES[503]
                + b"connection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
            )
            self.close()
            return
        state.connections.add(self)
        self._proxied = state.app.proxies.trusts(self.peer)
        self._arm(state.limits.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.state.connections.discard(self)
        if self.state.closing and not self.state.connections:
            self.state.drained.set()
        self.disarm()
        if self.upgraded is not None:
            self.upgraded.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.data_received(data)
        elif self._handshake is not None:  # reading is paused; a read under way lands here
            self._handshake.upgrade_rest = (self._handshake.upgrade_rest or b"") + data
        elif self._ended:
            return
        elif self._backlog:  # reading is paused; a read already under way lands here
            self._backlog += data
        else:
            self._feed(data)

    def eof_received(self) -> bool | None:
        return None  # half-closed: let the transport close

    # -- flow control (see FlowControl) ------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.upgraded is not None:
            # Control frames (pongs) and answers are written for what is read: a
            # peer that takes none of them is read no further.
            self.hold_reading(HOLD_WRITES)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.upgraded is not None:
            self.release_reading(HOLD_WRITES)
        elif not self._busy:
            self._next()

    def close(self) -> None:
        self.disarm()
        super().close()

    def _gone(self) -> None:
        super()._gone()
        self._backlog = b""
        self._pending.clear()

    # -- parsing ----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse ``data``; an Upgrade this server ignores gives more to parse, not a recursion."""
        while data:
            data = self._feed_slices(data)

    def _feed_slices(self, data: bytes) -> bytes:
        """Parse ``data`` a slice at a time; what is left while requests wait is kept.

        Returns the bytes to parse next when an ignored Upgrade restarted the parser.
        """
        size = len(data)
        view = memoryview(data) if size > FEED_SLICE else None
        offset = 0
        try:
            while offset < size:
                if self._ended:
                    return b""
                if self._stalled():
                    self._backlog = data[offset:]
                    self.hold_reading(HOLD_PIPELINE)
                    return b""
                end = offset + FEED_SLICE
                self.parser.feed_data(data if view is None else view[offset:end])
                offset = end
        except httptools.HttpParserUpgrade as upgrade:
            # The parser stops after the head of any request with an Upgrade (and
            # a CONNECT): what follows is the body, the next request, or WebSocket.
            return self._after_upgrade(data[offset + (upgrade.args[0] if upgrade.args else 0) :])
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, refusal.detail)
            else:  # our own callbacks failed: a bug worth its traceback
                log.error("HTTP parser callback failed", exc_info=refusal)
                self._refuse(500, b"internal error")
        except httptools.HttpParserError as exc:
            self._refuse(400, b"malformed HTTP request", reason=exc)
        return b""

    def _stalled(self) -> bool:
        """Parse no further: requests wait, and the client is not taking answers or
        has queued enough of them (or of their bodies)."""
        pending = self._pending
        if not pending:
            return False
        if self._write_paused or len(pending) >= self.state.limits.max_pipelined:
            return True
        return sum(exchange.body_size for exchange, _ in pending) > QUEUED_BODY_BUDGET

    def _after_upgrade(self, rest: bytes) -> bytes:
        """Hand ``rest`` to the WebSocket, or return it to be parsed as HTTP/1.1 again."""
        if self._websocket is not None:
            exchange, request = self._websocket
            self._websocket = None
            self._ended = True
            self.hold_reading(HOLD_PIPELINE)
            if self._busy or self._pending:
                # Answers to earlier requests go first; the handshake waits its turn.
                exchange.upgrade_rest = rest
                self._handshake = exchange
                self._pending.append((exchange, request))
            else:
                self._handoff(request, rest)
            return b""
        ignored = self._ignore_upgrade
        if ignored is None:  # CONNECT is refused in on_headers_complete; nothing else gets here
            self._refuse(400, b"malformed HTTP request")
            return b""
        # RFC 9110 7.8: a server may ignore Upgrade and answer in HTTP/1.1. The
        # parser has already stopped before the body, so the head is given again
        # (without Upgrade) to a fresh parser, which frames the body and goes on.
        self._ignore_upgrade = None
        start_line, head = ignored
        self.parser = httptools.HttpRequestParser(self)
        self._replaying = True
        return start_line + head + b"\r\n" + rest

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._replaying:
            return
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._hosts = 0
        self._arm(self.state.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        if self._replaying:
            return
        self._url += url
        self._header_bytes += len(url)
        if len(self._url) > self.state.limits.max_url:
            raise _Refusal(414, b"request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._replaying:
            return
        headers = self._headers
        self._header_bytes += len(name) + len(value)
        limits = self.state.limits
        if self._header_bytes > limits.max_header_bytes or len(headers) >= limits.max_headers:
            raise _Refusal(431, b"request headers too large")
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._replaying:
            self._replaying = False  # the body (if any) and what follows are new bytes
            return
        self.disarm()
        parser = self.parser
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Refusal(400, b"CONNECT is not supported: this server is not a proxy")
        version = parser.get_http_version()
        if self._hosts > 1 or (self._hosts == 0 and version == "1.1"):
            raise _Refusal(400, b"an HTTP/1.1 request needs exactly one Host header")
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise _Refusal(400, b"malformed request target") from None
        headers = self._headers
        exchange = Exchange(self, parser.should_keep_alive(), headers)
        peer, scheme = self.peer, "http"
        if self._proxied:
            client = self.state.app.proxies.client(peer, headers)
            peer, scheme = client.address, client.scheme
        request = Request(
            method.decode("latin-1"),
            url.path.decode("latin-1"),
            url.query or b"",
            headers,
            peer,
            exchange,
            self.state.app.max_body,
            scheme,
        )
        if parser.should_upgrade():
            if self._takes_websocket(request):
                self._websocket = (exchange, request)
                return
            start_line = b"%s %s HTTP/%s\r\n" % (method, self._url, version.encode())
            head = b"".join(
                name + b": " + value + b"\r\n" for name, value in headers if name != b"upgrade"
            )
            self._ignore_upgrade = (start_line, head)
        self._parsing = exchange
        if self._busy or self._pending:
            self._pending.append((exchange, request))
        else:
            self._start(exchange, request)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed(body)

    def on_message_complete(self) -> None:
        if self._ignore_upgrade is not None:
            return  # not the end: the parser skipped the body, the replay reads it
        if self._parsing is not None:
            self._parsing.complete()
            self._parsing = None

    def _takes_websocket(self, request: Request) -> bool:
        return (
            self.state.upgrade is not None
            and request.method == "GET"
            and request.path in self.state.app.websocket
            and _wants_websocket(request.headers_list)
        )

    # -- serving ------------------------------------------------------------------------

    def _start(self, exchange: Exchange, request: Request | None) -> None:
        if exchange.canned is not None:
            self.write(exchange.canned)
            self.close()
            return
        assert request is not None
        if exchange.upgrade_rest is not None:
            self._handshake = None
            self._handoff(request, exchange.upgrade_rest)
            return
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
            self.abort()
            raise
        if self.lost:
            return
        if exchange.timed_out:
            # The body did not come in time: whatever the endpoint made of that,
            # the answer is the server's own (nginx's client_body_timeout).
            self.write(
                problem_response(
                    408, b"the request body did not arrive in time", self.state.date_header
                )
            )
            self.close()
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
            parts += [name, b": ", safe(value), b"\r\n"]
        body = response.body
        if status not in NO_BODY:
            parts += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        if not exchange.keep_alive or self.state.closing:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if body and not head and status not in NO_BODY:
            parts.append(body)
        self.write(b"".join(parts))

    def _done(self, exchange: Exchange) -> None:
        self._busy = False
        self._task = None
        self._current = None
        if not exchange.keep_alive or self.state.closing:
            self.close()
            return
        self._next()

    def _next(self) -> None:
        """Serve the next pipelined request, and parse on, unless the client is behind."""
        if self._no_more_http():
            return
        if self._pending:
            if self._write_paused:
                return  # resume_writing() comes back here; the send timer watches
            self._start(*self._pending.popleft())
            if self._no_more_http():
                return  # a refusal, or the WebSocket handshake that waited its turn
        if self._backlog and not self._stalled():
            backlog, self._backlog = self._backlog, b""
            self._feed(backlog)
        if (
            self._holds & HOLD_PIPELINE
            and not self._backlog
            and not self._ended
            and not self._stalled()
        ):
            self.release_reading(HOLD_PIPELINE)
        if not self._busy and not self._pending and self._timer is None:
            # Idle (a request begun in the backlog keeps its header timer).
            self._arm(self.state.limits.keep_alive)

    def _no_more_http(self) -> bool:
        return self.lost or self._closing or self.upgraded is not None

    def _refuse(self, status: int, detail: bytes, *, reason: Exception | None = None) -> None:
        """Answer ``status`` in turn and close: nothing after this request is parsed."""
        # A client's mistake, not ours: one line at debug, never a traceback to flood the log.
        log.debug("refused a request from %s: %d %s (%s)", self.peer, status, detail, reason)
        self._ended = True
        self._backlog = b""
        self._parsing = None
        self.hold_reading(HOLD_PIPELINE)
        if self.lost:
            return
        response = problem_response(status, detail.replace(b'"', b"'"), self.state.date_header)
        if self._busy or self._pending:
            refusal = Exchange(self, False, [])
            refusal.canned = response
            self._pending.append((refusal, None))
        else:
            self.write(response)
            self.close()

    def _handoff(self, request: Request, rest: bytes) -> None:
        handler = self.state.upgrade
        assert handler is not None  # checked by _takes_websocket
        self.disarm()
        self.release_reading(HOLD_PIPELINE)
        handler(self, request, rest)

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = self.loop.call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if not self._busy and not self._pending and not self.lost and self.upgraded is None:
            self.close()

    def shutdown(self) -> None:
        """The server is stopping: close when idle, end streams, finish in-flight requests."""
        if self.upgraded is not None:
            self.upgraded.shutdown()
        elif not self._busy:
            self.close()
        elif self._current is not None and self._current.stream is not None:
            self._current.stream.close()  # the endpoint returns; the last chunk goes out

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.abort()


__all__ = ["ChunkedStream", "Exchange", "HttpConnection", "Limits", "ServerState"]
