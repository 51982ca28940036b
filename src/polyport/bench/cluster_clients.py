"""The subscribers of ``polyport bench cluster``: one SSE stream per node, every tick ledgered.

    python -m polyport.bench.cluster_clients '{"nodes": [[HOST, PORT], …], "channel": …, …}'

opens ``GET /v1/events/stream?channel=CHANNEL`` on every node — the stream a
browser's ``EventSource`` opens — and records each tick that arrives in that
stream's :class:`~polyport.bench.cluster_ticks.Receipts`, so lost and
duplicated ticks are counted per subscriber, and each measured tick's
publish→arrival latency is kept, cross-node apart from local (the
subscriber's own node is its ``home``).

Each stream is a raw :class:`asyncio.Protocol` on uvloop that decodes the
chunked body and scans whole lines for the tick's fields, without parsing
the JSON. It talks to the lab in JSON lines on stdout, as the real-time
bench's clients do: ``ready`` once every stream answered ``200
text/event-stream`` (or with the ``error`` that stopped it), ``primed`` once
every stream has every publisher's primer, and ``done`` with every stream's
ledger once every stream has every tick — or when the lab writes ``stop``.
``measure FROM_NS`` from the lab says when the warm-up ends (ticks sent
before are not timed), and ``excuse P FIRST LAST`` that those ticks'
publish calls failed or were never made: no stream waits for them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from typing import Any, cast
from urllib.parse import urlencode

from polyport.bench.clients import LabCommands, report, until
from polyport.bench.cluster_ticks import Receipts
from polyport.bench.realtime_clients import SSE_PATH

#: How long a stream may take to answer.
CONNECT_TIMEOUT = 10.0


class ChunkedBody:
    """An HTTP/1.1 chunked body, decoded as its bytes arrive."""

    def __init__(self) -> None:
        self._raw = b""
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = 0  # bytes of the CRLF after a chunk still to skip
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes, in order."""
        raw = self._raw + data if self._raw else data
        out: list[bytes] = []
        while raw and not self.ended:
            if self._left:
                piece = raw[: self._left]
                out.append(piece)
                self._left -= len(piece)
                raw = raw[len(piece) :]
                if self._left:
                    break
                self._crlf = 2
            if self._crlf:
                skipped = min(self._crlf, len(raw))
                raw, self._crlf = raw[skipped:], self._crlf - skipped
                if self._crlf:
                    break
            end = raw.find(b"\r\n")
            if end < 0:
                break
            size = int(raw[:end].partition(b";")[0], 16)
            raw = raw[end + 2 :]
            if size == 0:
                self.ended = True
            self._left = size
        self._raw = raw
        return b"".join(out)


class SseStream(asyncio.Protocol):
    """One subscriber: its request, its response's headers, then every line of ticks."""

    def __init__(self, request: bytes, receipts: Receipts) -> None:
        self.request = request
        self.receipts = receipts
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = b""
        self._body: ChunkedBody | None = None
        self._live = False
        self._tail = b""  # a line not yet complete
        self.lost: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the stream closed before it answered"))
        elif self.lost is None:
            self.lost = f"the stream closed ({exc or 'by the server'})"

    def data_received(self, data: bytes) -> None:
        arrival = time.monotonic_ns()
        if not self._live:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                return
            status, headers = head[:end].partition(b"\r\n")[::2]
            if status[9:12] != b"200" or b"text/event-stream" not in headers.lower():
                self.ready.set_exception(ConnectionError(f"answered {status.decode()[:100]!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._live = True
            if b"transfer-encoding: chunked" in headers.lower():
                self._body = ChunkedBody()
            self.ready.set_result(None)
            data = head[end + 4 :]
        if self._body is not None:
            data = self._body.feed(data)
        text = self._tail + data if self._tail else data
        cut = text.rfind(b"\n") + 1
        self._tail = text[cut:]
        if cut:
            self.receipts.scan(text[:cut], arrival)


async def run(config: dict[str, Any]) -> None:
    """Open a stream per node, then report ``ready``, ``primed`` and ``done``."""
    loop = asyncio.get_running_loop()
    channel, publishers = config["channel"], int(config["publishers"])
    last = int(config["last"])
    streams: list[SseStream] = []
    try:
        for home, (host, port) in enumerate(config["nodes"]):
            request = (
                f"GET {SSE_PATH}?{urlencode({'channel': channel})} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
            receipts = Receipts(publishers, last, home)
            _, stream = await loop.create_connection(
                functools.partial(SseStream, request, receipts), host, port
            )
            streams.append(stream)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.gather(*(s.ready for s in streams))
    except (OSError, TimeoutError) as exc:
        report("ready", error=f"a subscription failed: {exc or type(exc).__name__}")
        return
    report("ready", error=None)

    async def told(words: list[str]) -> None:
        if words[0] == "excuse":  # excuse P FIRST LAST: those publish calls failed
            p, first, last = map(int, words[1:4])
            for stream in streams:
                stream.receipts.excuse(p, first, last)
        elif words[0] == "measure":  # measure FROM_NS: the ticks sent from then on
            for stream in streams:
                stream.receipts.measured_from = int(words[1])

    commands = LabCommands(told)
    await commands.start()
    try:
        if await until(lambda: all(s.receipts.primed for s in streams), commands.stopped):
            report("primed")
        await until(lambda: all(s.receipts.complete for s in streams), commands.stopped)
        ledgers = [s.receipts.figures() | {"lost_stream": s.lost} for s in streams]
        report("done", subscribers=ledgers)
    finally:
        commands.close()
        for stream in streams:
            if stream.transport is not None:
                stream.transport.abort()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m polyport.bench.cluster_clients CONFIG_JSON")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(run(json.loads(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
