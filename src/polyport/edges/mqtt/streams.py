"""The byte streams an MQTT connection runs on: TCP, or binary WebSocket messages.

    mqtt://HOST:PORT         asyncio's StreamReader / StreamWriter, as they are
    ws://HOST:8000/mqtt      WebSocketStream: each binary message carries packets
                             (subprotocol ``mqtt``, MQTT 6.0), on the node's HTTP port

:class:`~polyport.edges.mqtt.connection.MqttConnection` and the outbox read
and write through :class:`PacketReader` and :class:`PacketWriter`, which an
asyncio stream pair already is; :class:`WebSocketStream` is both over a
:class:`~polyport.http.websocket.WebSocket`, so MQTT over WebSocket is the
same state machine, limits and credentials as over TCP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # polyport.http.websocket needs the 'realtime' extra (websockets)
    from polyport.http.websocket import WebSocket

#: What the outbox reports as buffered while the WebSocket client is behind: more
#: than a shared subscription gives a member (see :mod:`.shared`).
_BEHIND = 1 << 30
#: RFC 6455 7.4.1 close codes: normal, going away, data of a type the endpoint cannot
#: accept (a text message), policy (no ``mqtt`` subprotocol, an origin refused).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008


class PacketTransport(Protocol):
    def abort(self) -> None: ...

    def get_write_buffer_size(self) -> int: ...


class PacketReader(Protocol):
    async def read(self, n: int = -1) -> bytes:
        """Bytes received, or ``b""`` once the stream ended."""
        ...


class PacketWriter(Protocol):
    @property
    def transport(self) -> PacketTransport: ...

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    async def wait_closed(self) -> None: ...

    async def drain(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class WebSocketStream:
    """An MQTT byte stream over one WebSocket: reader, writer and transport in one."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._messages = aiter(ws)

    @property
    def transport(self) -> WebSocketStream:
        return self

    async def read(self, n: int = -1) -> bytes:
        while True:
            try:
                message = await anext(self._messages)
            except StopAsyncIteration:
                return b""
            if isinstance(message, str):
                # MQTT-6.0.0-1: packets come in binary messages; a text one ends it.
                self.ws.close(CLOSE_UNSUPPORTED_DATA, "MQTT packets travel in binary messages")
                return b""
            if message:
                return message

    def write(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def is_closing(self) -> bool:
        return self.ws.closed

    def close(self) -> None:
        self.ws.close(CLOSE_NORMAL)

    def can_write_eof(self) -> bool:
        return False  # a WebSocket closes whole, with its closing handshake

    def write_eof(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """Nothing to wait for: the server finishes the closing handshake itself."""

    async def drain(self) -> None:
        await self.ws.drain()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername" and self.ws.peer is not None:
            return (self.ws.peer, 0)
        return default

    def abort(self) -> None:
        self.ws.close(CLOSE_GOING_AWAY)

    def get_write_buffer_size(self) -> int:
        return _BEHIND if self.ws.write_paused else 0
