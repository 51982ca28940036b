"""The real-time bench targets as servers, one process each, started by the lab.

    python -m polyport.bench.realtime_apps polyport|websockets|sse-starlette

binds an ephemeral port on 127.0.0.1, writes ``port N`` on stdout and serves
until SIGTERM:

* ``GET /healthz`` answers 200 once the target is ready;
* subscribers connect where polyport serves them — ``ws://HOST:PORT/ws`` (send
  ``{"id": 1, "type": "subscribe", "channels": ["bench/CHANNEL"]}``, wait for
  ``subscribed``) or ``GET /v1/events/stream?channel=bench/CHANNEL``;
* the lab makes the target publish through its **control endpoint**:
  ``POST /_bench/publish?run=R&count=N&size=B&interval=S`` (no body) on the
  baselines, ``POST /v1/blast`` with the JSON object ``{"run", "count",
  "size", "interval"}`` on polyport (a public method of the bench service).
  Either publishes ``count`` ticks on channel ``bench/{run}``, ``interval``
  seconds apart (0: back to back), and answers when done with
  ``{"published": N, "first_ns": …, "last_ns": …}``.

A tick is the JSON object ``{"run", "seq", "ts", "pad"}`` padded to ``size``
bytes, where ``ts`` is ``time.monotonic_ns()`` taken just before the tick is
published: the clock is system-wide on Linux, so a client process reads its
publish→receive latency straight off the message.

The targets:

* **polyport**: a :class:`~polyport.Service` with the public event type
  ``bench.tick`` on ``bench/{run}`` and the public method ``blast``, served
  by :class:`~polyport.node.Node` exactly as ``polyport serve`` does it (SQLite
  event log in a temporary directory, rate limit on far above the load);
* **websockets**: the plain ``websockets`` server; its handler answers a
  ``subscribe`` frame by adding the connection to a set, and publishing is
  ``websockets.asyncio.server.broadcast(connections, tick)`` per tick;
* **sse-starlette**: a plain Starlette app whose ``EventSourceResponse``
  streams from a per-client :class:`asyncio.Queue` that the publish loop feeds.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from pydantic import BaseModel

from polyport.bench.realtime_clients import SSE_PATH, raise_open_files_limit
from polyport.core.config import HistoryConfig, LogConfig, RateLimitConfig
from polyport.core.contract import Service
from polyport.node import Node, bind_socket
from polyport.server import run
from polyport.settings import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request as WsRequest
    from websockets.http11 import Response as WsResponse

HOST = "127.0.0.1"
#: Where every target answers 200 once it is ready.
READY_PATH = "/healthz"
#: The baselines' control endpoint (polyport's is the method ``blast``: ``POST /v1/blast``).
CONTROL_PATH = "/_bench/publish"
#: The event type polyport publishes, and the name the baselines give their SSE events.
EVENT_TYPE = "bench.tick"


class Tick(BaseModel):
    """One published message: its run, its place in it, the publish clock and padding."""

    run: str
    seq: int
    ts: int  # time.monotonic_ns() just before publishing
    pad: str


class Blast(BaseModel):
    """What the control endpoint answers: how many ticks, and when the first and last went out."""

    published: int
    first_ns: int
    last_ns: int


def padding(run: str, count: int, size: int) -> str:
    """The ``pad`` that makes a tick of ``run`` about ``size`` bytes of JSON."""
    bare = orjson.dumps({"run": run, "seq": count, "ts": time.monotonic_ns(), "pad": ""})
    return "x" * max(0, size - len(bare))


async def publish_ticks(
    run: str, count: int, size: int, interval: float, send: Callable[[Tick], Any]
) -> Blast:
    """Call ``send`` (sync, or async) with ``count`` ticks, ``interval`` seconds apart."""
    pad = padding(run, count, size)
    first = last = time.monotonic_ns()
    for seq in range(count):
        if seq and interval > 0:
            await asyncio.sleep(interval)
        last = time.monotonic_ns()
        if seq == 0:
            first = last
        sent = send(Tick(run=run, seq=seq, ts=last, pad=pad))
        if sent is not None:
            await sent
    return Blast(published=count, first_ns=first, last_ns=last)


def _control_args(query: str) -> tuple[str, int, int, float]:
    """``run``, ``count``, ``size`` and ``interval`` from the control endpoint's query."""
    args = {key: values[-1] for key, values in parse_qs(query).items()}
    return (
        args.get("run", "bench"),
        int(args.get("count", "1")),
        int(args.get("size", "100")),
        float(args.get("interval", "0")),
    )


# -- polyport --------------------------------------------------------------------------


def polyport_service() -> Service:
    """The bench service: the event type ``bench.tick`` and the method ``blast`` publishing it."""
    service = Service("bench", version=1, description="The benchmark lab's real-time target.")
    tick = service.event(
        EVENT_TYPE,
        Tick,
        channel="bench/{run}",
        public=True,
        description="One benchmark message.",
    )

    @service.method(public=True)
    async def blast(run: str, count: int, size: int = 100, interval: float = 0.0) -> Blast:
        """Publish ``count`` ticks on ``bench/{run}``, ``interval`` seconds apart."""
        return await publish_ticks(run, count, size, interval, tick.publish)

    return service


def polyport_settings(database: str) -> Settings:
    """As the REST bench's polyport target, on the default SQLite event log.

    History holds far more than one run publishes, so a subscriber that falls
    behind catches up from the log instead of losing events.
    """
    return Settings(
        host=HOST,
        port=0,
        dev=True,
        event_log="sqlite",
        database=database,
        history=HistoryConfig(max_events=1_000_000),
        rate_limit=RateLimitConfig(enabled=True, rate=1e9, burst=1_000_000_000),
        log=LogConfig(level="warning"),
        grpc={"port": 0},  # any free port: never clash with a node on 50051
    )


async def serve_polyport(sock: socket.socket) -> None:
    from polyport.core.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="polyport-bench-") as folder:
        settings = polyport_settings(f"{folder}/events.sqlite3")
        configure_logging(settings.log.level, settings.log.format)  # as `polyport serve` does
        await Node(polyport_service(), settings).serve(sock)


# -- websockets ------------------------------------------------------------------------


async def serve_websockets(sock: socket.socket) -> None:
    """The plain ``websockets`` server: a set of subscribed connections and ``broadcast()``."""
    from websockets.asyncio.server import broadcast, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    subscribed: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        try:
            async for message in connection:
                frame = orjson.loads(message)
                if isinstance(frame, dict) and frame.get("type") == "subscribe":
                    subscribed.add(connection)
                    answer = {"id": frame.get("id"), "type": "subscribed"}
                    await connection.send(orjson.dumps(answer).decode())
        finally:
            subscribed.discard(connection)

    def send(tick: Tick) -> None:
        broadcast(subscribed, orjson.dumps(tick.model_dump()), text=True)

    async def control(connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        path, _, query = request.path.partition("?")
        if path == READY_PATH:
            return connection.respond(200, "ok\n")
        if path != CONTROL_PATH:
            return None  # a WebSocket handshake
        blast = await publish_ticks(*_control_args(query), send)
        headers = Headers([("Content-Type", "application/json")])
        return Response(200, "OK", headers, blast.model_dump_json().encode())

    # open_timeout=None: a control request is answered only after its ticks are
    # published, which can take longer than the default 10 s opening handshake.
    async with serve(handler, sock=sock, process_request=control, open_timeout=None) as server:
        await server.serve_forever()


# -- sse-starlette ---------------------------------------------------------------------


def sse_starlette_app() -> Starlette:
    """Plain Starlette and sse-starlette: one ``asyncio.Queue`` per client, fed by publish."""
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    queues: set[asyncio.Queue[dict[str, str]]] = set()

    async def stream(request: Request) -> EventSourceResponse:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        queues.add(queue)  # before the response starts: once headers are out, it receives

        async def events() -> Any:
            try:
                while True:
                    yield await queue.get()
            finally:
                queues.discard(queue)

        return EventSourceResponse(events())

    def send(tick: Tick) -> None:
        event = {"id": str(tick.seq), "event": EVENT_TYPE, "data": tick.model_dump_json()}
        for queue in queues:
            queue.put_nowait(event)

    async def publish(request: Request) -> JSONResponse:
        blast = await publish_ticks(*_control_args(request.url.query), send)
        return JSONResponse(blast.model_dump())

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route(SSE_PATH, stream),
            Route(CONTROL_PATH, publish, methods=["POST"]),
            Route(READY_PATH, health),
        ]
    )


async def serve_sse_starlette(sock: socket.socket) -> None:
    from polyport.bench.apps import serve_asgi

    await serve_asgi(sse_starlette_app(), sock)


#: How each target serves on a bound socket.
SERVERS: dict[str, Callable[[socket.socket], Coroutine[Any, Any, None]]] = {
    "polyport": serve_polyport,
    "websockets": serve_websockets,
    "sse-starlette": serve_sse_starlette,
}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in SERVERS:
        sys.exit(f"usage: python -m polyport.bench.realtime_apps {{{'|'.join(SERVERS)}}}")
    raise_open_files_limit()
    sock = bind_socket(HOST, 0)
    try:
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        run(SERVERS[argv[0]](sock))
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
