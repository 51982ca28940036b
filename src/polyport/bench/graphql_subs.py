"""Subscription fan-out: GraphQL (``graphql-transport-ws``) against polyport's WebSocket edge.

    python -m polyport.bench.graphql_subs [--clients 1000] [--messages 200] [--size 100]

Issue 5 asks for GraphQL subscription fan-out "on par with the WebSocket
edge". Both are measured here the way ``polyport bench ws`` measures fan-out,
on the same target — the real-time lab's polyport process
(:mod:`polyport.bench.realtime_apps`: the public event type ``bench.tick``
and the method ``blast`` publishing it) — one fresh process per pattern:

* ``clients`` subscribers over a few client processes, each a raw
  connection on uvloop counting data frames (the real-time lab's
  :class:`~polyport.bench.realtime_clients.WsSubscriber`); the GraphQL one
  opens ``/graphql`` with the ``graphql-transport-ws`` subprotocol, sends
  ``connection_init`` and, on ``connection_ack``, subscribes to
  ``benchTick(channel:, after: "earliest")`` selecting the whole envelope
  (``id channel offset epoch type time data { run seq ts pad }``) — what the
  WebSocket edge sends too;
* one primer is published and every subscriber must receive it (``after:
  "earliest"`` on a fresh channel: a subscription that started late still
  gets it from the log), then ``messages`` ticks back to back; the figure is
  deliveries per second from the first publish to the last delivery.

Run as ``python -m polyport.bench.graphql_subs CONFIG_JSON`` (a JSON object),
it is one of the client processes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from polyport.bench import realtime_clients
from polyport.bench.clients import ClientProcess
from polyport.bench.realtime import CLIENT_PROCESSES, PRIME_TIMEOUT, RealtimeServer
from polyport.bench.realtime_clients import Tally, WsSubscriber, _frame
from polyport.core.errors import ConfigError

GRAPHQL_PATH = "/graphql"
SUBSCRIPTION = """subscription Ticks($channel: String!) {
  benchTick(channel: $channel, after: "earliest") {
    id channel offset epoch type time data { run seq ts pad }
  }
}"""


class GraphQLSubscriber(WsSubscriber):
    """A ``graphql-transport-ws`` subscriber counting ``next`` frames by their headers."""

    def __init__(self, tally: Tally, host: str, port: int, channel: str) -> None:
        super().__init__(tally, host, port, channel)
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {GRAPHQL_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
        # The parent writes ``subscribe`` once upgraded: here, connection_init.
        self.subscribe = _frame(0x1, b'{"type":"connection_init"}')
        self.operation = _frame(
            0x1,
            orjson.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": {"channel": channel}},
                }
            ),
        )

    def _answer(self, payload: bytes) -> None:
        """Before the ack: the ack subscribes, and from then on every data frame counts."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "connection_ack":
            assert self.transport is not None
            self.transport.write(self.operation)
            self.live = True
            self.ready.set_result(None)
        elif message.get("type") == "error":
            self.fail(f"the subscription was refused: {json.dumps(message)[:200]}")


# -- the client processes ------------------------------------------------------------------


def client_main(argument: str) -> None:
    """One client process: the real-time lab's client loop, with the GraphQL kind added."""
    realtime_clients._KINDS["graphql"] = GraphQLSubscriber  # only in this process
    realtime_clients.main([argument])


# -- the lab -------------------------------------------------------------------------------


def fanout(kind: str, clients: int, messages: int, size: int, folder: Path) -> dict[str, Any]:
    """Deliveries per second of ``messages`` ticks to ``clients`` subscribers of ``kind``."""
    run = f"fanout-{kind}"
    processes = max(1, min(CLIENT_PROCESSES, clients))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with RealtimeServer("polyport") as server:
        started: list[ClientProcess] = []
        try:
            for i, share in enumerate(shares):
                config = {
                    "kind": kind,
                    "host": server.host,
                    "port": server.port,
                    "channel": f"bench/{run}",
                    "connections": share,
                    "expected": 1 + messages,
                    "latency": False,
                }
                started.append(
                    ClientProcess(
                        "polyport.bench.graphql_subs",
                        json.dumps(config),
                        folder / f"{kind}-{i}.stderr",
                    )
                )
            deadline = time.monotonic() + 30.0 + clients / 100
            for client in started:
                ready = client.expect("ready", max(0.0, deadline - time.monotonic()))
                if ready is None or ready["error"] is not None:
                    reason = "not connected in time" if ready is None else ready["error"]
                    raise ConfigError(f"{kind}: {reason}")
            server.publish(run, 1, size)
            deadline = time.monotonic() + PRIME_TIMEOUT + clients / 1000
            for client in started:
                if client.expect("primed", max(0.0, deadline - time.monotonic())) is None:
                    raise ConfigError(f"{kind}: the primer did not reach every subscriber")
            server.settle()
            cpu_before, began = server.cpu_seconds(), time.monotonic()
            blast = server.publish(run, messages, size)
            results = []
            deadline = time.monotonic() + 60.0 + clients * messages / 5_000
            for client in started:
                result = client.expect("done", max(0.0, deadline - time.monotonic()))
                if result is None:
                    client.stop()
                    result = client.expect("done", 10.0)
                if result is None:
                    raise ConfigError(f"{kind}: a client did not report its figures")
                results.append(result)
            cpu_after, ended = server.cpu_seconds(), time.monotonic()
        finally:
            for client in started:
                client.close()
    received = sum(r["received"] for r in results) - clients  # one primer each
    complete = sum(r["complete"] for r in results)
    last = max(r["last_ns"] for r in results)
    seconds = (last - blast.first_ns) / 1e9 if complete == clients else None
    figures: dict[str, Any] = {
        "kind": kind,
        "clients": clients,
        "messages": messages,
        "size": size,
        "deliveries": received,
        "complete_clients": complete,
        # Connections the server closed before they got everything (1013: too slow).
        "lost_connections": sum(r["lost"] for r in results),
        "seconds": seconds,
        "deliveries_per_second": clients * messages / seconds if seconds else None,
        "bytes_per_delivery": sum(r["bytes"] for r in results) / max(1, received + clients),
        "server_cpu_share": None,
        "server_cpu_us_per_delivery": None,
    }
    if cpu_before is not None and cpu_after is not None:
        # On a busy machine the wall clock measures the neighbours too; the
        # server's own CPU time per delivery does not.
        figures["server_cpu_share"] = (cpu_after - cpu_before) / (ended - began)
        figures["server_cpu_us_per_delivery"] = (cpu_after - cpu_before) * 1e6 / max(1, received)
    return figures


def main(argv: list[str]) -> None:
    if len(argv) == 1 and argv[0].startswith("{"):  # started by the lab as a client
        client_main(argv[0])
        return
    parser = argparse.ArgumentParser(
        prog="python -m polyport.bench.graphql_subs",
        description="GraphQL subscription fan-out against the WebSocket edge's, same target.",
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 10_000 or not 1 <= args.messages <= 100_000:
        parser.error("--clients must be 1..10000 and --messages 1..100000")
    rows = []
    with tempfile.TemporaryDirectory(prefix="polyport-bench-graphql-subs-") as folder:
        for kind in ("ws", "graphql"):
            try:
                rows.append(fanout(kind, args.clients, args.messages, args.size, Path(folder)))
            except ConfigError as exc:
                rows.append({"kind": kind, "error": str(exc)})
    print(f"fan-out: {args.clients:,} subscribers x {args.messages:,} messages of {args.size} B")
    for row in rows:
        if "error" in row or row["deliveries_per_second"] is None:
            reason = row.get("error") or (
                f"{row['deliveries']:,} deliveries, {row['complete_clients']:,} complete clients,"
                f" {row['lost_connections']:,} connections closed by the server"
            )
            print(f"  {row['kind']:8} not measured: {reason}")
            continue
        cpu, per = row["server_cpu_share"], row["server_cpu_us_per_delivery"]
        print(
            f"  {row['kind']:8} {row['deliveries_per_second']:>12,.0f} deliveries/s"
            f"  {row['bytes_per_delivery']:>6,.0f} B/delivery"
            + (f"  server CPU {cpu:.0%}, {per:.1f} µs/delivery" if cpu is not None else "")
        )
    measured = [r for r in rows if r.get("deliveries_per_second")]
    ws, gql = (r.get("deliveries_per_second") for r in rows)
    if ws and gql:
        print(f"  graphql / ws = {gql / ws:.2f} (deliveries/s)")
    ws_cpu, gql_cpu = (r.get("server_cpu_us_per_delivery") for r in rows)
    if ws_cpu and gql_cpu and len(measured) == 2:
        print(f"  ws / graphql = {ws_cpu / gql_cpu:.2f} (server CPU per delivery)")
    if args.json is not None:
        args.json.write_text(json.dumps({"argv": argv, "rows": rows}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
