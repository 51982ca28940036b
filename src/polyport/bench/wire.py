"""Bytes on the wire per call: counted on a raw HTTP/1.1 socket, or by a counting TCP proxy.

* HTTP/1.1 (:func:`http_exchange`): the lab sends the very bytes the load
  generators send (:meth:`~polyport.bench.loadgen.HttpCall.raw`) over one
  keep-alive connection and counts what comes back — status line, headers and
  body — so a call's bytes are exact, headers included.
* gRPC (:class:`CountingProxy`): the client's channel goes through a TCP proxy
  on loopback that counts the bytes each way: HTTP/2 frame headers, HPACK
  header blocks (smaller once its dynamic table is warm), the 5-byte gRPC
  message prefix, trailers, ``WINDOW_UPDATE`` and ``PING`` frames — all of it.
  A probe makes one call to warm the connection, then counts many.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass

from polyport.bench.loadgen import HttpCall
from polyport.core.errors import ConfigError

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WireBytes:
    """One call's bytes: on the wire each way, and the payload alone (body or message)."""

    request: float  # client → server, headers and framing included
    response: float  # server → client, headers and framing included
    request_payload: int  # the request body (HTTP) or message (gRPC)
    response_payload: int  # the response body or message

    @property
    def total(self) -> float:
        return self.request + self.response


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    size: int  # bytes received for it: status line, headers, body (and chunk framing)


def http_exchange(
    host: str, port: int, call: HttpCall, calls: int = 20, timeout: float = 10.0
) -> tuple[WireBytes, HttpAnswer]:
    """Send ``call`` ``1 + calls`` times on one connection; its bytes per call, the last answer."""
    raw = call.raw(host, port)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            answer = _exchange(sock, raw)
            received = 0
            for _ in range(calls):
                answer = _exchange(sock, raw)
                received += answer.size
    except OSError as exc:
        raise ConfigError(f"{call.method} {call.path} on port {port} failed: {exc}") from None
    wire = WireBytes(
        request=float(len(raw)),
        response=received / calls,
        request_payload=len(call.body),
        response_payload=len(answer.body),
    )
    return wire, answer


def _exchange(sock: socket.socket, raw: bytes) -> HttpAnswer:
    sock.sendall(raw)
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        buffer += _receive(sock)
    head, rest = buffer[: end + 2], buffer[end + 4 :]
    status = int(head[9:12])
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        size = int(length[1])
        while len(rest) < size:
            rest += _receive(sock)
        return HttpAnswer(status, rest[:size], end + 4 + size)
    if _CHUNKED.search(head) is None:
        raise ConfigError("an answer had neither a content-length nor chunked encoding")
    body, framing = b"", end + 4
    while True:
        while (line_end := rest.find(b"\r\n")) < 0:
            rest += _receive(sock)
        chunk = int(rest[:line_end].split(b";")[0], 16)
        while len(rest) < line_end + 2 + chunk + 2:
            rest += _receive(sock)
        body += rest[line_end + 2 : line_end + 2 + chunk]
        framing += line_end + 2 + chunk + 2
        rest = rest[line_end + 2 + chunk + 2 :]
        if chunk == 0:  # no trailers in these answers
            return HttpAnswer(status, body, framing)


def _receive(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise ConfigError("the server closed the connection in the middle of an answer")
    return data


class CountingProxy:
    """A loopback TCP proxy to ``host:port`` counting the bytes it forwards each way."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sent = 0  # client → server
        self.received = 0  # server → client
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on an ephemeral port of ``host``; the port clients should dial."""
        self._server = await asyncio.start_server(self._connect, self.host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        for task in (
            asyncio.create_task(self._pump(reader, upstream_writer, up=True)),
            asyncio.create_task(self._pump(upstream_reader, writer, up=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if up:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
