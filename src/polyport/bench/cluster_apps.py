"""A node of ``polyport bench cluster``, one process each, started by the lab.

    python -m polyport.bench.cluster_apps node ENGINE_URL

binds an ephemeral port on 127.0.0.1, writes ``port N`` on stdout and serves
until SIGTERM a :class:`~polyport.node.Node` on the shared engine at
``ENGINE_URL`` (its namespace in the URL), as ``polyport serve --engine``
runs one: development mode, the engine's default poll interval, its own
SQLite file for what is not shared, and the edges the bench uses — REST
(the control method) and Server-Sent Events (the subscribers).

The service ``clusterbench`` has the public event type ``bench.tick`` (a
:class:`~polyport.bench.cluster_ticks.Tick`) on ``bench/{run}/{lane}`` and the
public method ``pace`` (``POST /v1/pace``): the node's publisher, which
publishes ticks at a given rate from a given instant, each with its own
``publish`` call, and answers when the last one is acknowledged with what it
did (:class:`~polyport.bench.cluster_ticks.Paced`).
"""

from __future__ import annotations

import socket
import sys
import tempfile

from polyport.bench import cluster_ticks
from polyport.bench.cluster_ticks import Paced, Tick, padding
from polyport.core.config import HistoryConfig, LogConfig
from polyport.core.contract import Service
from polyport.node import Node, bind_socket
from polyport.server import run
from polyport.settings import Settings

HOST = "127.0.0.1"
#: Where a node answers 200 once it is ready.
READY_PATH = "/healthz"
#: The edges a bench node serves.
EDGES = ["rest", "sse"]
#: Events kept per channel: far more than a run publishes, so a subscriber that falls
#: behind catches up from the log, and what the bench counts is loss, not retention.
HISTORY = 1_000_000


def cluster_service() -> Service:
    """The bench service: the event type ``bench.tick`` and its publisher ``pace``."""
    service = Service("clusterbench", version=1, description="polyport bench cluster's node.")
    tick = service.event(
        "bench.tick", Tick, channel="bench/{run}/{lane}", public=True, description="A tick."
    )

    @service.method(public=True)
    async def pace(
        run: str,
        p: int,
        first: int,
        count: int,
        rate: float,
        size: int,
        start_ns: int,
        lane: str,
        measure_from_ns: int = 0,
    ) -> Paced:
        """Publish ticks ``first``… of publisher ``p`` on ``bench/{run}/{lane}``, ``rate``/s
        from ``start_ns`` (``time.monotonic_ns()``), each its own publish; those sent from
        ``measure_from_ns`` on are the measured ones."""
        pad = padding(size)
        channel = f"bench/{run}/{lane}"

        async def send(seq: int, ts: int) -> None:
            await tick.publish(Tick(run=run, p=p, seq=seq, ts=ts, pad=pad), channel=channel)

        return await cluster_ticks.pace(
            send,
            first=first,
            count=count,
            rate=rate,
            start_ns=start_ns,
            measure_from_ns=measure_from_ns,
        )

    return service


def node_settings(engine: str, database: str) -> Settings:
    """As ``polyport serve --dev --engine ENGINE`` with a history far above the run."""
    return Settings(
        host=HOST,
        port=0,
        dev=True,
        engine=engine,
        database=database,
        history=HistoryConfig(max_events=HISTORY),
        rate_limit={"enabled": False},
        log=LogConfig(level="warning"),
    )


async def serve_node(sock: socket.socket, engine: str) -> None:
    from polyport.core.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="polyport-bench-node-") as folder:
        settings = node_settings(engine, f"{folder}/node.sqlite3")
        configure_logging(settings.log.level, settings.log.format)  # as `polyport serve` does
        await Node(cluster_service(), settings, edges=EDGES).serve(sock)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "node":
        sys.exit("usage: python -m polyport.bench.cluster_apps node ENGINE_URL")
    sock = bind_socket(HOST, 0)
    try:
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        run(serve_node(sock, argv[1]))
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
