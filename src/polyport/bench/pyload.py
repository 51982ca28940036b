"""The built-in load generator, for machines without ``wrk``.

    python -m polyport.bench.pyload HOST PORT REQUEST_FILE CONNECTIONS SECONDS

opens CONNECTIONS keep-alive HTTP/1.1 connections, keeps one request in
flight on each (as ``wrk`` does) — the bytes of REQUEST_FILE, a whole HTTP/1.1
request (:meth:`polyport.bench.loadgen.HttpCall.raw`), or several separated by
NUL bytes, sent in turn — and after SECONDS
writes one JSON object on stdout: ``requests``, ``errors``, ``seconds``,
``p50_ms``, ``p99_ms``.

It is callback-driven (an :class:`asyncio.Protocol`, no coroutine per request)
on uvloop, so one core drives a few tens of thousands of requests a second;
a target faster than that is measured at the generator's limit, which is why
the lab prefers ``wrk``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from array import array
from typing import cast

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Load:
    """What every connection shares: the requests, the clock, the tallies."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.sent = 0
        self.measuring = False
        self.stopping = False
        self.latencies = array("d")
        self.errors = 0

    def next_request(self) -> bytes:
        """The requests in turn (the same one over and over when there is one)."""
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        return request


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.load.next_request())

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        length = _CONTENT_LENGTH.search(buffer, 0, end + 2)
        if length is None:  # no chunked bodies here: every target sends a length
            self._fail()
            return
        size = end + 4 + int(length[1])
        if len(buffer) < size:
            self.buffer = buffer
            return
        load = self.load
        if load.measuring:
            load.latencies.append(time.perf_counter() - self.sent_at)
            if buffer[9:10] != b"2":
                load.errors += 1
        self.buffer = buffer[size:]
        if load.stopping:
            assert self.transport is not None
            self.transport.close()
        else:
            self._send()

    def _fail(self) -> None:
        if self.load.measuring:
            self.load.errors += 1
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.load.stopping and self.load.measuring:
            self.load.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


def percentile(ordered: array[float] | list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of sorted values; 0 when empty."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float
) -> dict[str, float]:
    """Send ``requests`` in turn over ``connections`` connections for ``seconds``; the figures."""
    loop = asyncio.get_running_loop()
    load = _Load(requests)
    opened: list[_Connection] = []
    try:
        for _ in range(connections):
            _, protocol = await loop.create_connection(lambda: _Connection(load), host, port)
            opened.append(protocol)
        load.measuring = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        load.measuring = False
        elapsed = time.perf_counter() - started
    finally:
        load.stopping = True
        for connection in opened:
            if connection.transport is not None and not connection.transport.is_closing():
                # A connection waiting for its answer closes when it arrives;
                # do not wait long for a stuck server.
                loop.call_later(1.0, connection.transport.close)
        await asyncio.gather(*(c.closed for c in opened))
    ordered = array("d", sorted(load.latencies))
    return {
        "requests": len(ordered),
        "errors": load.errors,
        "seconds": elapsed,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
    }


def main(argv: list[str]) -> None:
    if len(argv) != 5:
        sys.exit(
            "usage: python -m polyport.bench.pyload HOST PORT REQUEST_FILE CONNECTIONS SECONDS"
        )
    host, port, request_file, connections, seconds = argv
    with open(request_file, "rb") as file:
        requests = file.read().split(b"\0")
    coro = run(host, int(port), requests, int(connections), float(seconds))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        figures = runner.run(coro)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
