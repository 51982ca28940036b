"""The subscribers of one phase of a real-time bench, as client processes of the lab.

:class:`Subscribers` starts one or more :mod:`polyport.bench.realtime_clients`
processes, shares the connections out among them, and reads the JSON lines
they report: ``ready``, ``primed`` and ``done``. A subscription the target
refuses is :class:`Unavailable`, with the reason the client saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from polyport.core.errors import ConfigError


class Unavailable(Exception):
    """The target cannot be subscribed to (yet): the reason, in one line."""


class _ClientProcess:
    """One :mod:`polyport.bench.realtime_clients` process and its JSON lines."""

    def __init__(self, config: dict[str, Any], stderr: Path) -> None:
        self.stderr = stderr
        self._buffer = b""
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "polyport.bench.realtime_clients", json.dumps(config)],
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

    def stop(self) -> None:
        """Ask the client to report now, whatever it has received."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(b"stop\n")
            self.process.stdin.flush()

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


class Subscribers:
    """The subscribers of one phase, spread over ``processes`` client processes."""

    def __init__(
        self,
        kind: str,
        address: tuple[str, int],
        channel: str,
        connections: int,
        expected: int,
        folder: Path,
        *,
        processes: int = 1,
        latency: bool = False,
    ) -> None:
        processes = max(1, min(processes, connections))
        shares = [
            connections // processes + (i < connections % processes) for i in range(processes)
        ]
        self.connections = connections
        self._clients: list[_ClientProcess] = []
        try:
            for i, share in enumerate(shares):
                config = {
                    "kind": kind,
                    "host": address[0],
                    "port": address[1],
                    "channel": channel,
                    "connections": share,
                    "expected": expected,
                    "latency": latency,
                }
                self._clients.append(_ClientProcess(config, folder / f"client-{i}.stderr"))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Subscribers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ready(self, timeout: float) -> int:
        """Wait until every connection is subscribed; :class:`Unavailable` says why not."""
        deadline = time.monotonic() + timeout
        opened = 0
        for client in self._clients:
            message = client.expect("ready", max(0.0, deadline - time.monotonic()))
            if message is None:
                raise Unavailable(f"the subscribers were not connected within {timeout:g} s")
            if message["error"] is not None:
                raise Unavailable(str(message["error"]))
            opened += int(message["connections"])
        return opened

    def primed(self, timeout: float) -> None:
        """Wait until every connection received the primer; :class:`Unavailable` if not."""
        deadline = time.monotonic() + timeout
        for client in self._clients:
            if client.expect("primed", max(0.0, deadline - time.monotonic())) is None:
                raise Unavailable(
                    f"subscribed, but a published message did not reach every subscriber "
                    f"within {timeout:g} s"
                )

    def done(self, timeout: float) -> list[dict[str, Any]]:
        """Every process's figures once it received everything, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        results = []
        for client in self._clients:
            message = client.expect("done", max(0.0, deadline - time.monotonic()))
            if message is None:
                client.stop()
                message = client.expect("done", 10.0)
            if message is None:
                raise ConfigError("a bench client did not report its figures")
            results.append(message)
        return results

    def stop(self) -> list[dict[str, Any]]:
        for client in self._clients:
            client.stop()
        return self.done(10.0)

    def close(self) -> None:
        for client in self._clients:
            client.close()
