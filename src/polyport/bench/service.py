"""The polyport target of ``bench rest`` and ``bench rpc``: one service on one node, every edge.

The service (``bench``, version 1) is the handlers of :mod:`polyport.bench.users`
and what the RPC bench's gRPC streams need, so one node process, run as
``polyport serve`` runs it, answers both benches (the push benches serve their
own, :mod:`polyport.bench.realtime_apps`):

* the resource ``users``: ``get`` (:func:`~polyport.bench.users.get_user`) and
  ``list`` (:func:`~polyport.bench.users.list_users`) — ``GET /v1/users/42``,
  ``bench.get_user`` over JSON-RPC and XML-RPC, ``GetUser`` over gRPC and SOAP…;
* the public event type ``bench.tick`` on channel ``bench/{run}``, and the
  method ``blast(run, count, size, batch)`` that publishes ``count`` ticks back
  to back, one by one or ``batch`` at a time;
* the server stream ``stream_users(count)``: ``count`` users, one message each.

:func:`serve_polyport` serves it with :class:`~polyport.node.Node` on a bound
socket, exactly as ``polyport serve`` does (uvloop comes from
:func:`polyport.server.run`), and announces the gRPC port once it is ready.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from pydantic import BaseModel

from polyport.bench.users import USERS, User, get_user, list_users
from polyport.core.config import LogConfig, RateLimitConfig
from polyport.core.contract import Service
from polyport.node import Node
from polyport.settings import Settings

HOST = "127.0.0.1"
#: Events kept per channel: a whole burst stays in the log, so a stream that falls behind
#: catches up from it instead of losing events, and a replay reads all of it.
HISTORY = 1_000_000


class Tick(BaseModel):
    """A bench event: its run, its number, when it was published, and padding."""

    run: str
    seq: int
    ts: int  # time.monotonic_ns() just before publishing: system-wide on Linux
    pad: str = ""


def polyport_service() -> Service:
    """The bench service: users (get, list), ticks and ``blast``, and ``stream_users``."""
    service = Service("bench", version=1, description="The benchmark lab's service.")
    users = service.resource("users", User, events=False)
    users.get(get_user)
    users.list(list_users)
    tick = service.event("bench.tick", Tick, channel="bench/{run}", public=True)

    @service.method(public=True)
    async def blast(run: str, count: int, size: int = 0, batch: int = 0) -> int:
        """Publish ``count`` ticks on ``bench/{run}`` back to back; answer once published.

        ``batch`` 0 publishes them one by one (``tick.publish``); N > 0 in batches
        of N (``tick.publish_many``), as a producer with many events at hand would.
        """
        pad = "x" * size
        if batch <= 0:
            for seq in range(count):
                await tick.publish(Tick(run=run, seq=seq, ts=time.monotonic_ns(), pad=pad))
            return count
        for first in range(0, count, batch):
            await tick.publish_many(
                [
                    Tick(run=run, seq=seq, ts=time.monotonic_ns(), pad=pad)
                    for seq in range(first, min(first + batch, count))
                ]
            )
        return count

    @service.stream(public=True)
    async def stream_users(count: int) -> AsyncIterator[User]:
        """``count`` users, round the hundred, one message each."""
        for i in range(count):
            yield USERS[i % len(USERS) + 1]

    return service


def polyport_settings() -> Settings:
    """Development mode (no credentials) with every per-call stage still switched on."""
    return Settings(
        host=HOST,
        port=0,
        dev=True,
        event_log="memory",
        database=":memory:",
        # Enabled, so each call pays for its bucket, but never the bottleneck.
        rate_limit=RateLimitConfig(enabled=True, rate=1e9, burst=1_000_000_000),
        log=LogConfig(level="warning"),
        history={"max_events": HISTORY},
        grpc={"port": 0},  # any free port, announced: never clash with a node on 50051
    )


def serve_polyport(sock: socket.socket) -> Coroutine[Any, Any, None]:
    """The node serving the bench service on ``sock``, built now, served when awaited.

    Once the node is ready it writes ``grpc N`` on stdout: the gRPC port the
    system chose (``grpc 0`` when the node serves no gRPC).
    """
    from polyport.core.logs import configure_logging

    settings = polyport_settings()
    configure_logging(settings.log.level, settings.log.format)  # as `polyport serve` does
    return _serve(Node(polyport_service(), settings), sock)


async def _serve(node: Node, sock: socket.socket) -> None:
    ready = asyncio.Event()
    serving = asyncio.create_task(node.serve(sock, ready=ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        grpc = next((edge for edge in node.edges if edge.name == "grpc"), None)
        on = grpc is not None and getattr(grpc, "off", None) is None
        sys.stdout.write(f"grpc {getattr(grpc, 'port', 0) if on else 0}\n")
        sys.stdout.flush()
    else:
        waiting.cancel()
    await serving
