"""The subscribers of one phase of a real-time bench, as client processes of the lab.

:class:`Subscribers` starts one or more :mod:`polyport.bench.realtime_clients`
processes (each a :class:`~polyport.bench.clients.ClientProcess`), shares the
connections out among them, and reads the JSON lines they report: ``ready``,
``primed`` and ``done``. A subscription the target refuses is
:class:`Unavailable`, with the reason the client saw.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from polyport.bench.clients import ClientProcess
from polyport.core.errors import ConfigError


class Unavailable(Exception):
    """The target cannot be subscribed to (yet): the reason, in one line."""


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
        self._clients: list[ClientProcess] = []
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
                self._clients.append(
                    ClientProcess(
                        "polyport.bench.realtime_clients",
                        json.dumps(config),
                        folder / f"client-{i}.stderr",
                    )
                )
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
