"""A TCP relay on loopback that can stop carrying bytes without closing anything.

What a cut network or a host that froze looks like to a client: its
connections stay open and nothing answers (no reset, no end of stream), and
new connections hang too. Only heartbeats can tell — which is what a test
puts between a bus and its engine to see that they do. One direction alone
can be held too (a request that arrives and an answer that does not), and
every connection cut at once, with what it held (a connection that broke).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FreezingProxy:
    """Relays 127.0.0.1:``port`` (its own, free) to 127.0.0.1:``upstream``; ``frozen`` holds all."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._up = asyncio.Event()  # client → server bytes flow
        self._down = asyncio.Event()  # server → client bytes flow
        self._up.set()
        self._down.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    def freeze(self, *, up: bool = True, down: bool = True) -> None:
        """Carry nothing (toward the server: ``up``, toward the client: ``down``), close
        nothing, until :meth:`thaw`."""
        if up:
            self._up.clear()
        if down:
            self._down.clear()

    def thaw(self) -> None:
        self._up.set()
        self._down.set()

    def sever(self) -> None:
        """Close every connection at once; bytes held are dropped, never delivered."""
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FreezingProxy]:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        for source, sink, flowing in (
            (reader, up_writer, self._up),
            (up_reader, writer, self._down),
        ):
            task = asyncio.create_task(self._pipe(source, sink, flowing))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await flowing.wait()
                sink.write(data)
                await sink.drain()
            await flowing.wait()
        sink.close()
