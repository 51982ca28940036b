"""A light gRPC load client: raw HTTP/2 frames on an :class:`asyncio.Protocol`, as wrk is for HTTP.

A grpc.aio client spends about as much CPU per call as the server it
measures, on the same two cores; this one spends a few microseconds, so what
the lab measures is the server. It speaks just enough HTTP/2 (RFC 9113) for
gRPC calls on one cleartext connection with prior knowledge:

* the connection preface and ``SETTINGS`` with the largest windows, so flow
  control never holds the server back (a connection ``WINDOW_UPDATE`` tops
  the window up long before it could run out); ``SETTINGS`` and ``PING`` are
  acknowledged;
* a call is a ``HEADERS`` frame (HPACK: static-table entries and literals,
  never the dynamic table) and one ``DATA`` frame with the gRPC message;
* an answer is read from its frames' headers only: ``DATA`` frames carry the
  gRPC messages (5-byte prefix, then the message), and the frame that ends
  the stream ends the call. Header blocks are not decoded, so the status is
  not read: a call that ends without a message (gRPC's "trailers only", how
  errors come back) or is reset counts as an error. The lab checks a real
  answer with grpc.aio before it measures.

:class:`UnaryLoad` keeps ``concurrency`` calls in flight; :class:`StreamReader`
reads one server stream, handing each message to a callback.
"""

from __future__ import annotations

import asyncio
import struct
import time
from array import array
from collections.abc import Callable
from typing import cast

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
MAX_WINDOW = 2**31 - 1
_HEADER = struct.Struct(">BHBBL")  # 24-bit length as a byte and a short, type, flags, stream


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEADER.pack(size >> 16, size & 0xFFFF, kind, flags, stream) + payload


def _literal(index: int, value: str) -> bytes:
    """An HPACK literal without indexing, its name from the static table (RFC 7541 §6.2.2)."""
    data = value.encode()
    return _integer(index, 4, 0x00) + _integer(len(data), 7, 0x00) + data


def _integer(value: int, prefix: int, flags: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def request_headers(authority: str, path: str) -> bytes:
    """The HPACK block of a gRPC call: ``POST path`` over ``http``, ``application/grpc``."""
    te = b"\x00\x02te\x08trailers"  # a literal name: "te" is not in the static table
    return (
        b"\x83\x86"  # :method POST, :scheme http (static entries 3 and 6)
        + _literal(4, path)
        + _literal(1, authority)
        + _literal(31, "application/grpc")  # content-type
        + te
    )


def grpc_message(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, then the length, then the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: the preface, settings, pings, windows, and frames to streams."""

    def __init__(self, authority: str) -> None:
        self.authority = authority
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.received = 0  # DATA bytes since the last connection WINDOW_UPDATE
        self.next_stream = 1
        self.closed = asyncio.get_running_loop().create_future()
        self.error: str | None = None
        #: Frames to send, written at once when the current read (or ``ready``) is done,
        #: so the calls that a read of answers replaces leave in one write, as grpc's own
        #: client batches its writes.
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        settings = struct.pack(">HL", 0x4, MAX_WINDOW)  # SETTINGS_INITIAL_WINDOW_SIZE
        self.transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(0x8, 0, 0, struct.pack(">L", MAX_WINDOW - 65_535))  # WINDOW_UPDATE
        )
        self.ready()
        self._flush()

    def ready(self) -> None:
        """The connection is open: start calling."""

    def call(self, path: str, message: bytes) -> int:
        """Open a stream calling ``path`` with ``message``; its stream id."""
        assert self.transport is not None
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        self.outgoing.append(
            frame(HEADERS, END_HEADERS, stream, request_headers(self.authority, path))
            + frame(DATA, END_STREAM, stream, grpc_message(message))
        )
        return stream

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        position, end = 0, len(buffer)
        while end - position >= 9:
            high, low, kind, flags, stream = _HEADER.unpack_from(buffer, position)
            size = high << 16 | low
            if end - position - 9 < size:
                break
            payload = buffer[position + 9 : position + 9 + size]
            position += 9 + size
            if kind == DATA:
                self.received += size
                if flags & PADDED:
                    payload = payload[1 : size - payload[0]]
                self.on_data(stream, payload)
                if flags & END_STREAM:
                    self.on_end(stream)
            elif kind == HEADERS:
                if flags & END_STREAM:
                    self.on_end(stream)
            elif kind == RST_STREAM:
                self.on_reset(stream)
            elif kind == SETTINGS and not flags & ACK:
                self._write(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                self.error = f"the server sent GOAWAY: {payload[8:100]!r}"
                self._close()
        self.buffer = buffer[position:]
        if self.received > 1 << 30:  # keep the connection window far from empty
            self._write(frame(0x8, 0, 0, struct.pack(">L", self.received)))
            self.received = 0
        self._flush()

    def on_data(self, stream: int, payload: bytes) -> None: ...

    def on_end(self, stream: int) -> None: ...

    def on_reset(self, stream: int) -> None:
        self.on_end(stream)

    def _write(self, data: bytes) -> None:
        self.outgoing.append(data)

    def _flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = str(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class UnaryLoad(_Connection):
    """``concurrency`` unary calls in flight, each replaced as soon as it ends."""

    def __init__(self, authority: str, path: str, message: bytes, concurrency: int) -> None:
        super().__init__(authority)
        self.path, self.message, self.concurrency = path, message, concurrency
        self.sent_at: dict[int, float] = {}
        self.answered: set[int] = set()
        self.measuring = self.stopping = False
        self.latencies = array("d")
        self.calls = self.errors = 0

    def ready(self) -> None:
        for _ in range(self.concurrency):
            self._next()

    def _next(self) -> None:
        self.sent_at[self.call(self.path, self.message)] = time.perf_counter()

    def on_data(self, stream: int, payload: bytes) -> None:
        if payload:
            self.answered.add(stream)

    def on_end(self, stream: int) -> None:
        began = self.sent_at.pop(stream, None)
        if began is None:
            return
        ok = stream in self.answered
        self.answered.discard(stream)
        if self.measuring:
            if ok:
                self.latencies.append(time.perf_counter() - began)
                self.calls += 1
            else:
                self.errors += 1
        if not self.stopping:
            self._next()
        elif not self.sent_at:
            self._close()

    def stop(self) -> None:
        """Send no more calls; close once those in flight have ended."""
        self.stopping = True
        if not self.sent_at:
            self._close()


class StreamReader(_Connection):
    """One server-streaming call; ``on_message(message)`` for each gRPC message."""

    def __init__(
        self, authority: str, path: str, message: bytes, on_message: Callable[[bytes], None]
    ) -> None:
        super().__init__(authority)
        self.path, self.message, self.on_message = path, message, on_message
        self.pending = b""
        self.ended = asyncio.get_running_loop().create_future()
        self.stream = 0

    def ready(self) -> None:
        self.stream = self.call(self.path, self.message)

    def on_data(self, stream: int, payload: bytes) -> None:
        data = self.pending + payload if self.pending else payload
        position, end = 0, len(data)
        while end - position >= 5:
            size = int.from_bytes(data[position + 1 : position + 5], "big")
            if end - position - 5 < size:
                break
            self.on_message(data[position + 5 : position + 5 + size])
            position += 5 + size
        self.pending = data[position:]

    def on_end(self, stream: int) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        self._close()
