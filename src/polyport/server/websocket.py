"""WebSocket on polyport's own server: handshake, frames, heartbeat, limits.

:class:`WebSocket` implements the edges' interface,
:class:`polyport.http.websocket.WebSocket`. The opening handshake and frame
parsing are the ``websockets`` library's sans-I/O protocol (well tested,
standards-complete); the connection is ours, so frames encoded once for many
clients (:func:`~polyport.http.websocket.text_frame`) go straight to the
socket as bytes; no per-message extension (compression) is negotiated, so
those bytes are valid on every connection.

Keep-alive: a ping every ``ping_interval`` seconds; a client that has sent
nothing (not even a pong) for ``ping_interval + ping_timeout`` is closed with
1001. Limits: inbound messages over ``max_message`` bytes close with 1009 (the
protocol does it), a text message that is not UTF-8 with 1007; a send buffer
over ``send_buffer`` bytes stops reading (a ping flood's pongs, a caller's
answers wait for the client to take them), and one over four times that, or a
client that takes nothing for ``stall_timeout`` while a broadcast waits, is
closed with 1013 and dropped. A close the client does not answer in
``CLOSE_TIMEOUT`` seconds is dropped too, not left half-closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from polyport.http.request import Request
from polyport.http.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_TOO_SLOW,
    SUBPROTOCOL,
    EncodedFrames,
    WebSocketEndpoint,
    endpoint_subprotocols,
)
from polyport.server.flow import HOLD_MESSAGES

if TYPE_CHECKING:
    from polyport.server.http1 import HttpConnection

log = logging.getLogger("polyport.websocket")

#: Seconds a client has to answer our close frame before the socket is closed.
CLOSE_TIMEOUT = 2.0


class WebSocketOptions:
    __slots__ = (
        "max_message",
        "max_queue",
        "ping_interval",
        "ping_timeout",
        "send_buffer",
        "stall_timeout",
    )

    def __init__(
        self,
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 8.0,
        max_message: int = 64 * 1024,
        send_buffer: int = 256 * 1024,
        stall_timeout: float = 5.0,
        max_queue: int = 64,
    ) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message = max_message
        self.send_buffer = send_buffer
        self.stall_timeout = stall_timeout
        self.max_queue = max_queue


class WebSocket:
    """One accepted WebSocket connection (:class:`polyport.http.websocket.WebSocket`)."""

    def __init__(
        self,
        connection: HttpConnection,
        protocol: ServerProtocol,
        options: WebSocketOptions,
        subprotocol: str | None,
        offered: list[str],
        peer: str | None,
    ) -> None:
        self.connection = connection
        #: The subprotocols the client offered (a browser may carry a token in one).
        self.offered = offered
        self.protocol = protocol
        self.options = options
        self.subprotocol = subprotocol
        #: The client's address: the handshake request's (a trusted proxy may have named it).
        self.peer = peer
        self._messages: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self.closed = False
        self.close_code: int | None = None
        self.last_seen = time.monotonic()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._schedule_heartbeat()

    # -- from the network ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            if isinstance(frame, Frame) and not self._frame(frame):
                break
        self._flush()
        if self.protocol.close_expected():
            # The client sent its close frame (our answer is flushed), or the
            # protocol failed the connection: the server closes TCP first.
            self._closing()
            self.connection.close()

    def _frame(self, frame: Frame) -> bool:
        """Take one frame; False when it failed the connection (nothing after it counts)."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._fragment_text = opcode is Opcode.TEXT
            self._fragments = [bytes(frame.data)]
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        else:
            return True  # CLOSE and PING are answered by the protocol; PONG proves liveness
        if not frame.fin:
            return True
        data = b"".join(self._fragments)
        self._fragments = []
        if self._fragment_text:
            try:
                message: str | bytes = data.decode()
            except UnicodeDecodeError as exc:
                # RFC 6455 8.1: a text message that is not UTF-8 fails the connection.
                log.debug("closing a WebSocket client that sent invalid UTF-8 (%s)", exc.reason)
                self.protocol.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")
                return False
        else:
            message = data
        self._messages.append(message)
        if len(self._messages) >= self.options.max_queue:
            self.connection.hold_reading(HOLD_MESSAGES)  # the handler is behind: stop reading
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing()

    def _closing(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = self.protocol.close_code
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self.connection.lost:
            self._flush()
            # We sent a close frame: give the client a moment to answer it.
            self._loop.call_later(CLOSE_TIMEOUT, self._close_timeout)

    def _close_timeout(self) -> None:
        connection = self.connection
        if connection.buffered():
            # It has not even taken our close frame: closing would wait on it forever.
            connection.abort()
        else:
            connection.close()

    # -- to the handler --------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection is closed."""
        while not self._messages:
            if self.closed:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
            self._waiter = None
        if len(self._messages) <= self.options.max_queue // 2:
            self.connection.release_reading(HOLD_MESSAGES)
        return self._messages.popleft()

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    # -- to the network -----------------------------------------------------------------

    def send_text(self, text: str | bytes) -> None:
        """Send one text message (through the protocol, for per-connection framing)."""
        if self.closed:
            return
        try:
            self.protocol.send_text(text.encode() if isinstance(text, str) else text)
        except InvalidState:
            return
        self._flush()
        self._check_buffer()

    def send_binary(self, data: bytes) -> None:
        """Send one binary message (through the protocol, for per-connection framing)."""
        if self.closed:
            return
        try:
            self.protocol.send_binary(data)
        except InvalidState:
            return
        self._flush()
        self._check_buffer()

    def send_frames(self, frames: EncodedFrames) -> None:
        """Write frames encoded once for many clients, as they are."""
        if not self.closed:
            self.connection.write(frames)
            self._check_buffer()

    async def deliver(self, frames: EncodedFrames) -> None:
        """Write a batch of broadcast frames, then wait while the client catches up.

        While this waits, new events wait in the subscription (and then in the
        event log), so a burst is paced to the client's speed instead of
        filling memory. A client that reads nothing for ``stall_timeout``
        seconds is closed with 1013.
        """
        if self.closed:
            return
        self.connection.write(frames)
        if self.connection.write_paused:
            await self.drain()

    async def drain(self) -> None:
        """Wait while the client is behind; one reading nothing for ``stall_timeout`` gets 1013."""
        if self.closed or not self.connection.write_paused:
            return
        try:
            async with asyncio.timeout(self.options.stall_timeout):
                await self.connection.drain()
        except TimeoutError:
            self._too_slow()

    @property
    def write_paused(self) -> bool:
        """The client is behind: the transport's buffer is over its high-water mark."""
        # The connection's own flag (FlowControl, same package), not its property:
        # this is read once per message per subscriber on GraphQL's broadcast
        # path, where a property calling a property costs a second call.
        return self.connection._write_paused

    def buffered(self) -> int:
        return self.connection.buffered()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        with contextlib.suppress(InvalidState):
            self.protocol.send_close(code, reason)
        self._flush()
        self._closing()

    def shutdown(self) -> None:
        """The server is stopping."""
        self.close(CLOSE_GOING_AWAY, "server shutting down")

    def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            self.connection.write(b"".join(data))

    def _check_buffer(self) -> None:
        # Answers are small and unpaced; only a client that sends requests but
        # never reads the answers gets this far behind.
        if self.buffered() > 4 * self.options.send_buffer:
            self._too_slow()

    def _too_slow(self) -> None:
        if not self.closed:
            log.info(
                "closing a WebSocket client that cannot keep up (%d bytes unread)", self.buffered()
            )
            self.close(CLOSE_TOO_SLOW, "try again later: client too slow")
            # Do not wait for a close frame the client is not reading anyway.
            self.connection.abort()

    # -- keep-alive ------------------------------------------------------------------------

    def _schedule_heartbeat(self) -> None:
        self._heartbeat = self._loop.call_later(self.options.ping_interval, self._beat)

    def _beat(self) -> None:
        if self.closed:
            return
        silent = time.monotonic() - self.last_seen
        if silent > self.options.ping_interval + self.options.ping_timeout:
            self.close(CLOSE_GOING_AWAY, "going away: heartbeat timeout")
            return
        try:
            self.protocol.send_ping(b"")
        except InvalidState:
            return
        self._flush()
        self._schedule_heartbeat()


def _select(offered: Sequence[str], known: Sequence[str]) -> Subprotocol | None:
    """The first subprotocol the client offered that the endpoint speaks."""
    return next((Subprotocol(p) for p in offered if p in known), None)


def accept(
    connection: HttpConnection,
    request: Request,
    rest: bytes,
    handler: WebSocketEndpoint,
    options: WebSocketOptions,
) -> None:
    """Complete the opening handshake of ``request`` and start ``handler`` on it."""
    path = request.path + (
        ("?" + request.query_string.decode("latin-1")) if request.query_string else ""
    )
    offered = [
        token.strip()
        for name, value in request.headers_list
        if name == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
    ]
    # An endpoint may speak other subprotocols than ours (GraphQL's
    # graphql-transport-ws) by giving its handler a ``subprotocols`` attribute.
    known = endpoint_subprotocols(handler)
    protocol = ServerProtocol(
        select_subprotocol=lambda _, subprotocols: _select(subprotocols, known),
        max_size=options.max_message,
    )
    # The protocol parses the handshake itself (its frame parser starts after
    # it), so hand it the request again as bytes.
    head = [f"GET {path} HTTP/1.1\r\n".encode("latin-1")]
    head += [name + b": " + value + b"\r\n" for name, value in request.headers_list]
    protocol.receive_data(b"".join(head) + b"\r\n")
    parsed = next((e for e in protocol.events_received() if isinstance(e, WsRequest)), None)
    if parsed is None:
        connection.close()
        return
    response = protocol.accept(parsed)
    protocol.send_response(response)
    connection.write(b"".join(protocol.data_to_send()))
    if response.status_code != 101:
        connection.close()
        return
    subprotocol = _select(offered, known)
    connection.transport.set_write_buffer_limits(
        high=options.send_buffer, low=options.send_buffer // 4
    )
    ws = WebSocket(connection, protocol, options, subprotocol, offered, request.peer)
    connection.upgraded = ws
    connection.disarm()
    if rest:
        ws.data_received(rest)
    connection.upgraded_task = asyncio.get_running_loop().create_task(_run(ws, request, handler))


async def _run(ws: WebSocket, request: Request, handler: WebSocketEndpoint) -> None:
    try:
        await handler(ws, request)  # the endpoint's interface: checked here by mypy
    except Exception:
        log.exception("WebSocket handler for %s failed", request.path)
        ws.close(CLOSE_INTERNAL_ERROR, "internal error")
    else:
        ws.close(CLOSE_NORMAL, "")


__all__ = ["SUBPROTOCOL", "WebSocket", "WebSocketOptions", "accept"]
