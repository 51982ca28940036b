"""polyport's own HTTP/1.1 (and WebSocket) server.

    server = HttpServer(app)
    await server.serve(sock)          # until stop() or SIGINT/SIGTERM

See :mod:`polyport.server.http1` for the connection protocol,
:mod:`polyport.server.flow` for its flow control (a send timeout, resets,
paused reading), :mod:`polyport.server.limits` for what a connection may
cost, and :func:`run` for the process set-up every server process uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from polyport.server.http1 import HttpConnection, ServerState
from polyport.server.limits import Limits

if TYPE_CHECKING:
    from polyport.http.app import HttpApp

log = logging.getLogger("polyport.server")

__all__ = ["HttpServer", "Limits", "run"]


class HttpServer:
    """Serves one :class:`~polyport.http.app.HttpApp` on a listening socket."""

    def __init__(
        self,
        app: HttpApp,
        *,
        limits: Limits | None = None,
        on_shutdown: Callable[[], None] | None = None,
        grace: float = 5.0,
    ) -> None:
        self.state = ServerState(app, limits or Limits())
        self.on_shutdown = on_shutdown
        self.grace = grace
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False

    @property
    def connections(self) -> int:
        return len(self.state.connections)

    def stop(self) -> None:
        """Ask the server to shut down gracefully; safe from any thread."""
        self._stop_requested = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    # Compatibility with code that sets ``server.should_exit = True``.
    @property
    def should_exit(self) -> bool:
        return self._stop_requested

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self.stop()

    async def serve(self, sock: socket.socket) -> None:
        """Accept connections on ``sock`` until :meth:`stop` or SIGINT/SIGTERM."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        state = self.state
        server = await loop.create_server(lambda: HttpConnection(state), sock=sock, backlog=2048)
        with self._signals(loop):
            await self._stop.wait()
        await self._shutdown(server)

    async def _shutdown(self, server: asyncio.Server) -> None:
        state = self.state
        state.closing = True
        server.close()
        if self.on_shutdown is not None:
            self.on_shutdown()
        for connection in list(state.connections):
            connection.shutdown()
        if state.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace):
                    await state.drained.wait()
        if state.connections:
            log.warning(
                "closing %d connection(s) still busy after %g s", len(state.connections), self.grace
            )
            for connection in list(state.connections):
                connection.cancel()
            await asyncio.sleep(0)
        await server.wait_closed()

    @contextlib.contextmanager
    def _signals(self, loop: asyncio.AbstractEventLoop) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        installed = []
        for sig in handled:
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine as the process's main loop, on uvloop when installed.

    Everything built at start-up (the contract, validators, routes) is moved
    out of the garbage collector's sight with ``gc.freeze()``, and young
    collections run less often: a request allocates a few short-lived objects,
    and collecting every 700 allocations cost about 5 % of throughput.
    """
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    with runner:
        runner.run(main)
