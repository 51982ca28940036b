"""A WebSocket connection as the edges see it, whichever server carries it.

The WebSocket endpoints (``/ws``, ``/jsonrpc``, ``graphql-transport-ws`` on
``/graphql``) are written against :class:`WebSocket`, never against a server's
own class: polyport's server implements it (:mod:`polyport.server.websocket`),
and so can an adapter to another server (ASGI). The handshake, keep-alive,
inbound limits and the slow-client rule are the implementation's business.

Broadcasts stay cheap on any implementation: a frame that many clients
receive (an event) is encoded once with :func:`text_frame` into
:data:`EncodedFrames`, and each connection writes those bytes as they are. No
per-message extension (compression) is ever negotiated, so the same bytes are
valid on every connection. An implementation that cannot write raw frames
gets the messages back with :func:`frame_messages`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Final, NewType, Protocol

from websockets.frames import Frame, Opcode

from polyport.http.request import Request

# Close codes (RFC 6455, 7.4.1) that polyport sends; endpoints may send their own
# (graphql-transport-ws has 44xx).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # the server stops, or the client stopped answering pings
CLOSE_INVALID_DATA: Final = 1007  # a text message that is not UTF-8
CLOSE_POLICY: Final = 1008  # origin refused, credentials malformed or refused
CLOSE_TOO_BIG: Final = 1009  # a message over the inbound limit
CLOSE_INTERNAL_ERROR: Final = 1011  # the endpoint failed
CLOSE_TOO_SLOW: Final = 1013  # the client does not read what it is sent ("try again later")

#: The subprotocol of the session frames, chosen for an endpoint that names none.
SUBPROTOCOL: Final = "polyport.v1"

#: One or more complete WebSocket frames, server to client (unmasked, final,
#: text, no extension), ready to be written as they are. Only :func:`text_frame`
#: and :func:`join_frames` make them: a frame is never re-encoded per client.
EncodedFrames = NewType("EncodedFrames", bytes)


def text_frame(payload: bytes) -> EncodedFrames:
    """The text frame carrying ``payload`` (UTF-8 JSON), encoded once for any number of clients."""
    return EncodedFrames(Frame(Opcode.TEXT, payload).serialize(mask=False))


def join_frames(frames: Iterable[EncodedFrames]) -> EncodedFrames:
    """Several encoded frames as one write, in order."""
    return EncodedFrames(b"".join(frames))


def frame_messages(frames: EncodedFrames) -> list[bytes]:
    """The payloads of ``frames``, for an implementation that sends messages, not frames.

    Only frames made by :func:`text_frame` are read: no mask, no fragments.
    """
    messages: list[bytes] = []
    view = memoryview(frames)
    at, end = 0, len(frames)
    while at < end:
        size = view[at + 1] & 0x7F
        at += 2
        if size == 126:
            size = int.from_bytes(view[at : at + 2], "big")
            at += 2
        elif size == 127:
            size = int.from_bytes(view[at : at + 8], "big")
            at += 8
        messages.append(bytes(view[at : at + size]))
        at += size
    return messages


class WebSocket(Protocol):
    """One accepted WebSocket connection, from the endpoint's side.

    Nothing here raises once the connection is gone: sends are dropped, and
    iteration ends. A client that cannot keep up with what it is sent is
    closed with :data:`CLOSE_TOO_SLOW` by the implementation, never buffered
    without a bound.
    """

    @property
    def peer(self) -> str | None:
        """The client's IP address, if the transport knows it (rate limits and logs use it)."""
        ...

    @property
    def offered(self) -> Sequence[str]:
        """Every subprotocol the client offered (a browser may carry a token in one)."""
        ...

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the handshake chose, or None."""
        ...

    @property
    def closed(self) -> bool:
        """A close frame was sent or received, or the connection is lost."""
        ...

    @property
    def write_paused(self) -> bool:
        """The client is behind: what was sent waits over the send buffer's high-water mark.

        Cheap enough to read once per message; :meth:`drain` waits until it is False.
        """
        ...

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """The client's messages, text as ``str`` and binary as ``bytes``, until it closes.

        Raises nothing: a connection that closes, for any reason, ends the iteration.
        """
        ...

    def send_text(self, text: str | bytes) -> None:
        """Send one text message, encoded for this connection (``bytes`` are UTF-8).

        Raises nothing: after the close it is dropped.
        """
        ...

    def send_binary(self, data: bytes) -> None:
        """Send one binary message, encoded for this connection (MQTT packets, say).

        Raises nothing: after the close it is dropped.
        """
        ...

    def send_frames(self, frames: EncodedFrames) -> None:
        """Send frames encoded once for many clients, without waiting.

        Raises nothing: after the close they are dropped; a client far behind
        (several send buffers) is closed with :data:`CLOSE_TOO_SLOW`.
        """
        ...

    async def deliver(self, frames: EncodedFrames) -> None:
        """Send frames encoded once for many clients, then :meth:`drain`.

        Raises nothing (as :meth:`send_frames` and :meth:`drain`).
        """
        ...

    async def drain(self) -> None:
        """Wait while the client is behind (:attr:`write_paused`).

        A client that takes nothing for the implementation's stall timeout is
        closed with :data:`CLOSE_TOO_SLOW` and this returns.

        Raises nothing.
        """
        ...

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame with ``code`` and ``reason`` (at most 123 bytes of UTF-8).

        Raises nothing: closing a closed connection does nothing.
        """
        ...

    def shutdown(self) -> None:
        """The server is stopping: close with :data:`CLOSE_GOING_AWAY`.

        Raises nothing.
        """
        ...


#: What serves one WebSocket path. It may carry a ``subprotocols`` attribute
#: (a sequence of names) to be chosen from what the client offers; without it,
#: :data:`SUBPROTOCOL` is.
WebSocketEndpoint = Callable[[WebSocket, Request], Awaitable[None]]


def endpoint_subprotocols(endpoint: WebSocketEndpoint) -> Sequence[str]:
    """The subprotocols ``endpoint`` speaks: the first the client offers of these is chosen."""
    subprotocols: Sequence[str] = getattr(endpoint, "subprotocols", (SUBPROTOCOL,))
    return subprotocols


__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_SLOW",
    "SUBPROTOCOL",
    "EncodedFrames",
    "WebSocket",
    "WebSocketEndpoint",
    "endpoint_subprotocols",
    "frame_messages",
    "join_frames",
    "text_frame",
]
