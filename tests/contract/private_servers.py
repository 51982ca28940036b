"""Engine servers of a test's own, on a free loopback port, to stop and start again.

A test that takes its engine away must not take away the one other tests
share: it starts its own server process, stops it by its PID and starts it
again on the same port. Only processes started here are ever signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polyport.backends.enginebus import EngineBus


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateServer:
    """One server process on a fixed loopback port: start, stop by PID, start again."""

    def __init__(self, command: Callable[[int], list[str]], log: Path) -> None:
        if shutil.which(command(0)[0]) is None:
            pytest.fail(f"{command(0)[0]} is not installed")
        self.port = closed_port()
        self._command = command
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, seconds: float = 10.0) -> None:
        """Start the server and wait until it accepts connections on its port."""
        assert self._process is None
        with self._log.open("ab") as out:
            process = self._process = await asyncio.create_subprocess_exec(
                *self._command(self.port), stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        async with asyncio.timeout(seconds):
            while not await _accepts(self.port):
                if process.returncode is not None:
                    pytest.fail(f"the server exited: {self._log.read_text()[-2000:]}")
                await asyncio.sleep(0.02)

    async def stop(self, seconds: float = 10.0) -> None:
        """Kill the server by its PID (as a crash would) and wait until it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(seconds):
            await process.wait()

    async def close(self) -> None:
        """Teardown: stop the process if it still runs (a failed test may leave it)."""
        await self.stop()


class ServerOutage:
    """Buses on a server of the test's own, which goes away and comes back on its port
    (the ``outage`` of :class:`~tests.contract.engine_bus_checks.EngineBusChecks`)."""

    def __init__(self, server: PrivateServer, bus: Callable[[int], EngineBus]) -> None:
        self.server = server
        self._bus = bus

    def make_bus(self) -> EngineBus:
        return self._bus(self.server.port)

    async def begin(self) -> None:
        await self.server.stop()

    async def end(self) -> None:
        await self.server.start()


@contextlib.asynccontextmanager
async def server_outage(
    command: Callable[[int], list[str]], log: Path, bus: Callable[[int], EngineBus]
) -> AsyncIterator[ServerOutage]:
    """A running server of the test's own, and buses on it (made from its port)."""
    server = PrivateServer(command, log)
    await server.start()
    try:
        yield ServerOutage(server, bus)
    finally:
        await server.close()


async def _accepts(port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
