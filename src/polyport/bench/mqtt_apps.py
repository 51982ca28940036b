"""polyport's MQTT bench target: a node serving the bench contract, one process, started
by the lab.

    python -m polyport.bench.mqtt_apps '{"topics": "typed", "max_connections": 11000}'

binds HTTP and MQTT on free ports of 127.0.0.1, writes ``port N`` and
``mqtt M`` on stdout once the node is serving, and serves until SIGTERM.

* ``typed`` (the default, and how polyport is meant to be used): the event
  type ``bench.tick`` on the channel ``bench/{run}``, its model
  :class:`Tick`, which clients may publish (``publish_scopes``; development
  mode's anonymous caller holds every scope). Each PUBLISH is validated
  against the model, committed to the event log and delivered from it.
* ``open``: no event type for the bench topics, ``mqtt.open_topics = ["#"]``:
  payloads taken as raw bytes, as a generic broker takes them.

Either way it is :class:`~polyport.node.Node` as ``polyport serve --dev``
runs it, on a SQLite event log in a temporary directory, with history far
above what a run publishes and the rate limit far above the load.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile

from pydantic import BaseModel

from polyport.bench.realtime_clients import raise_open_files_limit
from polyport.core.config import HistoryConfig, LogConfig, RateLimitConfig
from polyport.core.contract import Service
from polyport.node import Node, bind_socket
from polyport.server import run
from polyport.settings import Settings

HOST = "127.0.0.1"
TOPICS = ("typed", "open")


class Tick(BaseModel):
    """One bench message: its run (from the topic), publisher, number, publish clock, padding."""

    run: str
    p: int
    seq: int
    ts: int  # the publisher's time.monotonic_ns() just before it wrote the PUBLISH
    pad: str = ""


def mqtt_service(topics: str) -> Service:
    """The bench contract: ``bench.tick`` on ``bench/{run}`` when typed; a method either way."""
    service = Service("benchmqtt", version=1, description="The benchmark lab's MQTT target.")
    if topics == "typed":
        service.event(
            "bench.tick",
            Tick,
            channel="bench/{run}",
            public=True,
            publish_scopes=["bench"],
            description="One benchmark message, published by MQTT clients.",
        )

    @service.method(public=True)
    async def ping() -> str:
        """Something to call (a contract has a method)."""
        return "pong"

    return service


def mqtt_settings(database: str, topics: str, max_connections: int) -> Settings:
    """Development mode on SQLite; MQTT on a free port taking ``max_connections``."""
    mqtt: dict[str, object] = {"port": 0, "max_connections": max_connections}
    if topics == "open":
        mqtt["open_topics"] = ["#"]
    return Settings(
        host=HOST,
        port=0,
        dev=True,
        event_log="sqlite",
        database=database,
        history=HistoryConfig(max_events=2_000_000),
        rate_limit=RateLimitConfig(enabled=True, rate=1e9, burst=1_000_000_000),
        log=LogConfig(level="warning"),
        grpc={"port": 0},
        mqtt=mqtt,
    )


async def serve(sock: socket.socket, topics: str, max_connections: int) -> None:
    from polyport.core.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="polyport-bench-mqtt-") as folder:
        settings = mqtt_settings(f"{folder}/events.sqlite3", topics, max_connections)
        configure_logging(settings.log.level, settings.log.format)
        node = Node(mqtt_service(topics), settings)
        ready = asyncio.Event()
        serving = asyncio.create_task(node.serve(sock, ready=ready))
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            waiting.cancel()
            serving.result()  # the start-up error
            return
        listener = next(e for e in node.listeners if e.name == "mqtt" and e.off is None)
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.write(f"mqtt {listener.address.rsplit(':', 1)[1]}\n")
        sys.stdout.flush()
        await serving


def main(argv: list[str]) -> None:
    options = json.loads(argv[0]) if argv else {}
    topics = options.get("topics", "typed")
    if topics not in TOPICS:
        sys.exit(f"topics: one of {', '.join(TOPICS)}")
    raise_open_files_limit()
    sock = bind_socket(HOST, 0)
    try:
        run(serve(sock, topics, int(options.get("max_connections", 1000))))
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
