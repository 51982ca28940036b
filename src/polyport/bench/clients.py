"""A client process of the lab that reports in JSON lines, one ``event`` each.

The real-time benches' subscribers (:mod:`polyport.bench.realtime_clients`)
and the RPC bench's gRPC client (:mod:`polyport.bench.rpc_clients`) run as
processes of their own, so that the lab's own work never competes with them;
they write one JSON object a line on stdout, and the lab waits for each with
:meth:`ClientProcess.expect`; the lab writes them lines on stdin
(:meth:`ClientProcess.tell`). The client's side of that talk is
:func:`report` and :func:`lab_lines`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from polyport.core.errors import ConfigError


class ClientProcess:
    """``python -m MODULE ARGUMENT``, its stderr in a file, its JSON lines read as they come.

    A line whose event is ``error`` ends the wait with a :class:`ConfigError`
    carrying its ``reason``.
    """

    def __init__(self, module: str, argument: str, stderr: Path) -> None:
        self.stderr = stderr
        self._buffer = b""
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, argument],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )

    def expect(self, event: str, timeout: float) -> dict[str, Any] | None:
        """The next line reporting ``event`` (others are skipped); None after ``timeout``."""
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                message: dict[str, Any] = json.loads(line)
                if message.get("event") == event:
                    return message
                if message.get("event") == "error":
                    raise ConfigError(str(message.get("reason", "a bench client failed")))
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([stdout], [], [], min(remaining, 0.2))
            if readable:
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise ConfigError(
                        f"a bench client exited with status {self.process.wait()}: "
                        f"{self._stderr_tail() or 'no output'}"
                    )
                self._buffer += chunk

    def tell(self, line: str) -> None:
        """Write ``line`` to the client's stdin (a client that has exited is not told)."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()

    def stop(self) -> None:
        """Ask the client to report now, whatever it has received."""
        self.tell("stop")

    def close(self) -> None:
        if self.process.poll() is None:
            self.stop()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.stderr.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return " / ".join(line.strip() for line in lines[-3:])[-400:]
        return ""


# -- the client's side ----------------------------------------------------------------------


def report(event: str, **figures: Any) -> None:
    """Write one JSON line for the lab: ``{"event": event, **figures}``."""
    sys.stdout.write(json.dumps({"event": event, **figures}) + "\n")
    sys.stdout.flush()


class LabCommands:
    """The lines the lab writes on stdin, each handed as words to ``handle`` as it comes.

    ``stop`` (or stdin closed) is not handed over: it sets :attr:`stopped`.
    Lines are handled one at a time, in order: a handler that awaits holds the next.
    """

    def __init__(self, handle: Callable[[list[str]], Awaitable[None]]) -> None:
        self._handle = handle
        self.stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                words = (await reader.readline()).decode().split()
                if not words or words[0] == "stop":
                    break
                await self._handle(words)
        finally:
            if not self.stopped.done():
                self.stopped.set_result(None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def until(condition: Callable[[], bool], stop: asyncio.Future[Any]) -> bool:
    """Wait until ``condition()`` holds (True) or ``stop`` is done (False), looking every 5 ms."""
    while not condition():
        if stop.done():
            return False
        await asyncio.sleep(0.005)
    return True
