"""The real-time bench's subscribers: many connections per process, counting cheaply.

    python -m polyport.bench.realtime_clients '{"kind": "ws", "host": …, "port": …, …}'

opens ``connections`` subscriptions to one channel of a target — WebSocket
(``kind: "ws"``) or Server-Sent Events (``kind: "sse"``) — and counts what
arrives, so that the lab measures the server and not its clients:

* each connection is a raw :class:`asyncio.Protocol` on uvloop, with no
  coroutine per connection and no per-message parsing: a WebSocket connection
  reads frame headers and counts data frames; an SSE connection counts the
  ``data:`` lines of the stream (every event has exactly one, a JSON document
  having no newline), whatever the line separator or the transfer coding;
* a WebSocket connection opens with a minimal handshake, sends
  ``{"id": 1, "type": "subscribe", "channels": [CHANNEL]}`` (masked with a
  zero key) and is subscribed when a ``subscribed`` frame answers; frames
  before it (``welcome``) are skipped, an ``error`` frame fails it; pings are
  answered;
* an SSE connection sends ``GET /v1/events/stream?channel=CHANNEL`` and is
  subscribed when a 200 ``text/event-stream`` response's headers arrive;
* with ``latency`` on, every message's ``"ts":…`` (the publisher's
  ``time.monotonic_ns()``) is subtracted from the clock at arrival.

It talks to the lab in JSON lines on stdout: ``ready`` once every connection
is subscribed (or with the ``error`` that stopped it), ``primed`` once every
connection received one message, and ``done`` with the figures once every
connection received ``expected`` messages — or when the lab writes ``stop``
(or closes stdin).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import sys
import time
from array import array
from typing import Any, cast
from urllib.parse import urlencode

import orjson

from polyport.bench.pyload import percentile

#: Where polyport serves its subscribers, and so where every target serves them.
WS_PATH = "/ws"
SSE_PATH = "/v1/events/stream"
#: Handshakes in flight per process: enough to open thousands of connections in
#: seconds, few enough never to overflow the server's accept backlog.
CONCURRENT_HANDSHAKES = 64

_TS = re.compile(rb'"ts":(\d+)[,}]')
_SSE_MARK = b"\ndata:"


class HandshakeError(Exception):
    """The target refused or failed a subscription: the reason, in one line."""


class Tally:
    """What every connection of the process shares: the goal, the counts, the clock."""

    def __init__(self, expected: int, latency: bool, connections: int) -> None:
        loop = asyncio.get_running_loop()
        self.expected = expected
        self.connections = connections
        self.bytes = 0
        self.primed = 0
        self.finished = 0  # connections that got everything, or were lost
        self.lost = 0
        self.all_primed: asyncio.Future[None] = loop.create_future()
        self.all_done: asyncio.Future[None] = loop.create_future()
        self.latencies: array[int] | None = array("q") if latency else None
        self._carry = b""

    def counted(self, before: int, after: int) -> None:
        if before < 1 <= after:
            self.primed += 1
            if self.primed == self.connections and not self.all_primed.done():
                self.all_primed.set_result(None)
        if before < self.expected <= after:
            self._finish()

    def lose(self, count: int) -> None:
        self.lost += 1
        if count < self.expected:
            self._finish()

    def _finish(self) -> None:
        self.finished += 1
        if self.finished >= self.connections and not self.all_done.done():
            self.all_done.set_result(None)

    def scan(self, data: bytes, now: int) -> None:
        """Latency samples from the ``"ts":N`` of every message in ``data``."""
        assert self.latencies is not None
        text = self._carry + data if self._carry else data
        end = 0
        for match in _TS.finditer(text):
            self.latencies.append(now - int(match[1]))
            end = match.end()
        # A message cut in two keeps its start for the next read; a bounded tail suffices.
        self._carry = text[end:][-64:]


class _Subscriber(asyncio.Protocol):
    """One connection: subscribes, then counts messages; ``ready`` says how subscribing went."""

    def __init__(self, tally: Tally, request: bytes) -> None:
        self.tally = tally
        self.request = request
        self.count = 0
        self.done_ns = 0
        self.live = False
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(HandshakeError("the connection closed while subscribing"))
        elif self.live:
            self.tally.lose(self.count)
        self.live = False

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(reason))
        if self.transport is not None:
            self.transport.close()

    def add(self, messages: int) -> None:
        before = self.count
        self.count = after = before + messages
        tally = self.tally
        if before < tally.expected <= after:
            self.done_ns = time.monotonic_ns()
        tally.counted(before, after)

    def headers(self, data: bytes, status: bytes, check: bytes) -> bytes | None:
        """The bytes after the response headers once they arrived; fail on the wrong answer.

        ``status`` is the expected status code, ``check`` a lowercase bytes the headers hold.
        """
        buffer = self.buffer + data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return None
        self.buffer = b""
        head = buffer[:end]
        status_line = head.partition(b"\r\n")[0]
        if status_line[9:12] != status or check not in head.lower():
            request = self.request.partition(b" HTTP/1.1")[0].decode()
            answer = status_line.decode("latin-1")[:100]
            if status_line[9:12] == status:
                answer += f" without {check.decode()!r}"
            self.fail(f"{request} answered {answer!r}")
            return None
        return buffer[end + 4 :]


class WsSubscriber(_Subscriber):
    """A WebSocket subscriber counting data frames by their headers."""

    def __init__(self, tally: Tally, host: str, port: int, channel: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        super().__init__(tally, request.encode())
        self.subscribe = _frame(
            0x1, orjson.dumps({"id": 1, "type": "subscribe", "channels": [channel]})
        )
        self.upgraded = False

    def data_received(self, data: bytes) -> None:
        tally = self.tally
        tally.bytes += len(data)
        if not self.upgraded:
            rest = self.headers(data, b"101", b"upgrade: websocket")
            if rest is None:
                return
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(self.subscribe)
            data = rest
        if tally.latencies is not None:
            tally.scan(data, time.monotonic_ns())
        buffer = self.buffer + data if self.buffer else data
        position, end, messages = 0, len(buffer), 0
        while end - position >= 2:
            length = buffer[position + 1] & 0x7F  # frames from a server are not masked
            start = position + 2
            if length == 126:
                if end - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                start += 2
            elif length == 127:
                if end - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start += 8
            stop = start + length
            if stop > end:
                break
            opcode = buffer[position] & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                if self.live:
                    messages += 1
                else:
                    self._answer(buffer[start:stop])
            elif opcode >= 0x8:
                self._control(opcode, buffer[start:stop])
            position = stop
        self.buffer = buffer[position:] if position < end else b""
        if messages:
            self.add(messages)

    def _answer(self, payload: bytes) -> None:
        """A frame before ``subscribed``: skipped, or the answer to the subscribe frame."""
        try:
            frame = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(frame, dict):
            return
        if frame.get("type") == "subscribed":
            self.live = True
            self.ready.set_result(None)
        elif frame.get("type") == "error":
            error = frame.get("error")
            self.fail(f"the subscribe frame was answered with {json.dumps(error)[:200]}")

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:
            self.transport.write(_frame(0xA, payload))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            reason = payload[2:].decode(errors="replace")
            self.fail(
                f"the server closed the WebSocket (code {code}{': ' + reason if reason else ''})"
            )


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame, masked with a zero key (so the payload stays as it is)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class SseSubscriber(_Subscriber):
    """An SSE subscriber counting the ``data:`` lines of the stream."""

    def __init__(self, tally: Tally, host: str, port: int, channel: str) -> None:
        request = (
            f"GET {SSE_PATH}?{urlencode({'channel': channel})} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        super().__init__(tally, request.encode())
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        tally = self.tally
        tally.bytes += len(data)
        if not self.live:
            rest = self.headers(data, b"200", b"text/event-stream")
            if rest is None:
                return
            self.live = True
            self.ready.set_result(None)
            self.tail = b"\n"  # a stream sent without chunks starts right after the headers
            data = rest
        if tally.latencies is not None:
            tally.scan(data, time.monotonic_ns())
        # A mark cut in two lies across the last read's tail and this one's head.
        messages = data.count(_SSE_MARK) + (self.tail + data[:5]).count(_SSE_MARK)
        self.tail = data[-5:] if len(data) >= 5 else (self.tail + data)[-5:]
        if messages:
            self.add(messages)


_KINDS: dict[str, type[WsSubscriber] | type[SseSubscriber]] = {
    "ws": WsSubscriber,
    "sse": SseSubscriber,
}


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one: thousands of sockets are held."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _say(event: str, **figures: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **figures}) + "\n")
    sys.stdout.flush()


async def _open(config: dict[str, Any], tally: Tally) -> tuple[list[_Subscriber], str | None]:
    """Open and subscribe every connection; stop at the first failure."""
    loop = asyncio.get_running_loop()
    kind = _KINDS[config["kind"]]
    host, port, channel = config["host"], int(config["port"]), config["channel"]
    timeout = float(config.get("timeout", 10.0))
    gate = asyncio.Semaphore(CONCURRENT_HANDSHAKES)
    opened: list[_Subscriber] = []
    errors: list[str] = []

    async def open_one() -> None:
        async with gate:
            if errors:
                return
            try:
                async with asyncio.timeout(timeout):
                    _, subscriber = await loop.create_connection(
                        lambda: kind(tally, host, port, channel), host, port
                    )
                    opened.append(subscriber)
                    await subscriber.ready
            except HandshakeError as exc:
                errors.append(str(exc))
            except TimeoutError:
                errors.append(f"no subscription within {timeout:g} s")
            except OSError as exc:
                errors.append(f"cannot connect: {exc.strerror or exc}")

    await asyncio.gather(*(open_one() for _ in range(tally.connections)))
    return opened, errors[0] if errors else None


async def _stop_requested() -> None:
    """Returns when the lab writes a line (``stop``) or closes stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()


async def run(config: dict[str, Any]) -> None:
    """Subscribe, report ``ready``, ``primed`` and ``done`` on stdout; close everything."""
    tally = Tally(int(config["expected"]), bool(config.get("latency")), int(config["connections"]))
    opened, error = await _open(config, tally)
    try:
        _say("ready", connections=len(opened), error=error)
        if error is not None:
            return
        stop = asyncio.ensure_future(_stop_requested())
        primed_cpu = None
        if tally.expected > 0:
            await asyncio.wait([tally.all_primed, stop], return_when=asyncio.FIRST_COMPLETED)
            if tally.all_primed.done():
                primed_cpu = _cpu_seconds()
                _say("primed")
            await asyncio.wait([tally.all_done, stop], return_when=asyncio.FIRST_COMPLETED)
        else:
            await stop
        stop.cancel()
        figures = _figures(tally, opened)
        # What counting the measured messages cost: the lab checks the clients kept up.
        figures["cpu_after_primed"] = None if primed_cpu is None else _cpu_seconds() - primed_cpu
        _say("done", **figures)
    finally:
        for subscriber in opened:
            if subscriber.transport is not None:
                subscriber.transport.abort()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _figures(tally: Tally, opened: list[_Subscriber]) -> dict[str, Any]:
    counts = [s.count for s in opened]
    done = [s.done_ns for s in opened if s.done_ns]
    figures: dict[str, Any] = {
        "connections": len(opened),
        "received": sum(counts),
        "complete": sum(1 for c in counts if c >= tally.expected),
        "fewest": min(counts, default=0),
        "most": max(counts, default=0),
        "lost": tally.lost,
        "last_ns": max(done, default=0),
        "bytes": tally.bytes,
        "cpu_seconds": _cpu_seconds(),
    }
    if tally.latencies is not None:
        # The first message is the lab's primer, sent before the measured ones.
        ordered = sorted(ns / 1000 for ns in tally.latencies[1:])
        figures["latency"] = {
            "samples": len(ordered),
            "p50_us": percentile(ordered, 0.50),
            "p99_us": percentile(ordered, 0.99),
            "mean_us": sum(ordered) / len(ordered) if ordered else 0.0,
            "max_us": ordered[-1] if ordered else 0.0,
        }
    return figures


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m polyport.bench.realtime_clients CONFIG_JSON")
    config = json.loads(argv[0])
    if config.get("kind") not in _KINDS:
        sys.exit(f"kind must be one of {', '.join(_KINDS)}")
    raise_open_files_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(run(config))


if __name__ == "__main__":
    main(sys.argv[1:])
