"""Running HTTP: the uvicorn settings every node (and every bench target) uses.

One place, so `polyport serve`, the tests and the benchmark lab's bare-library
baselines all run on exactly the same server configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn


def uvicorn_config(app: Any) -> uvicorn.Config:
    """One worker, httptools, no access log, no ``server`` header, no proxy headers.

    ``proxy_headers`` is off: trusting ``X-Forwarded-For`` is a deployment
    decision, and uvicorn implements it as one more ASGI layer per request.
    """
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        http="httptools",
        loop="none",
        timeout_graceful_shutdown=5,
    )


class Server(uvicorn.Server):
    """uvicorn's server, with a shutdown hook and without re-raising signals."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None = None):
        super().__init__(config)
        self._on_shutdown = on_shutdown

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises a caught SIGTERM/SIGINT once serving ends, which
        # would kill the process before the node has stopped (running jobs
        # finishing, stores closed). Catch them and never re-raise.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


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
