"""The bare baseline of ``polyport bench cluster``: each engine's own client, one process a "node".

    python -m polyport.bench.cluster_bare '{"engine": "redis", "url": …, "name": …, …}'

does what a polyport node does in the bench, with nothing but the engine's
client library: it publishes its share of the ticks, at the same pace and
each with its own call (:func:`~polyport.bench.cluster_ticks.pace`), and
consumes every tick of every process, ledgered as the SSE subscribers
ledger theirs (:class:`~polyport.bench.cluster_ticks.Receipts`):

============  ===============================================  ============================
engine        publish (one call per tick)                      consume
============  ===============================================  ============================
PostgreSQL    psycopg: ``INSERT`` the tick and ``pg_notify``     ``LISTEN``, the tick as the
              it in one autocommit statement (a pool of 8,       notification's payload
              ``synchronous_commit=on`` as polyport's)
Redis         redis-py: ``XADD`` to the lane's stream           ``XREAD BLOCK`` on every
                                                               lane's stream, from the start
NATS          nats-py: JetStream ``publish``, awaiting its ack  an ordered push consumer of
                                                               ``{name}.>``, from the start
============  ===============================================  ============================

It talks to the lab as the subscribers do (:mod:`polyport.bench.clients`):
``ready`` once subscribed; on ``prime`` it publishes its primer, and says
``primed`` once it has every process's primer; on ``go START_NS`` it paces
its ticks and says ``paced`` with what it did, then ``done`` with its ledger
once it has every tick it is owed (``excuse P FIRST LAST``: those publish
calls failed), or when the lab writes ``stop``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from polyport.bench.clients import LabCommands, report, until
from polyport.bench.cluster_engines import nats_subject, pg_table, redis_key
from polyport.bench.cluster_ticks import Receipts, pace, padding, tick_bytes

#: Connections the bare PostgreSQL publisher spreads its inserts over.
PG_POOL = 8
#: Publish calls in flight share this many Redis connections.
REDIS_POOL = 64

Receive = Callable[[bytes, int], None]


class BareClient(Protocol):
    """One engine's client library doing the bench's work by hand."""

    async def open(self, receive: Receive) -> None:
        """Connect, and call ``receive(data, arrival_ns)`` with every tick from now on."""
        ...

    async def publish(self, data: bytes) -> None:
        """Publish one tick; return once the engine acknowledged it."""
        ...

    async def close(self) -> None: ...


class PostgresBare:
    """psycopg: INSERT + pg_notify in one statement; LISTEN."""

    def __init__(self, url: str, name: str, lane: str, lanes: list[str]) -> None:
        self.url = url
        self.channel = f"{name}_ticks"
        self.insert = (
            f"WITH i AS (INSERT INTO {pg_table(name)} (data) VALUES (%s) RETURNING data) "
            f"SELECT pg_notify('{self.channel}', data) FROM i"
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, receive: Receive) -> None:
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        kwargs = {"autocommit": True, "options": "-c synchronous_commit=on"}
        self.pool = AsyncConnectionPool(
            self.url, min_size=PG_POOL, max_size=PG_POOL, kwargs=kwargs, open=False
        )
        await self.pool.open(wait=True)
        self.listener = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self.listener.execute(f"LISTEN {self.channel}")

        async def listen() -> None:
            async for notice in self.listener.notifies():
                receive(notice.payload.encode(), time.monotonic_ns())

        self._tasks.append(asyncio.create_task(listen()))

    async def publish(self, data: bytes) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(self.insert, (data.decode(),))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pool.close()
        await self.listener.close()


class RedisBare:
    """redis-py: XADD; XREAD BLOCK over every lane's stream."""

    def __init__(self, url: str, name: str, lane: str, lanes: list[str]) -> None:
        self.url = url
        self.key = redis_key(name, lane)
        self.keys = sorted({redis_key(name, other) for other in lanes})
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, receive: Receive) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis

        self.writer = Redis(
            connection_pool=BlockingConnectionPool.from_url(self.url, max_connections=REDIS_POOL)
        )
        self.reader = Redis.from_url(self.url)
        await self.reader.ping()
        cursors: dict[Any, Any] = dict.fromkeys(self.keys, "0-0")  # fresh streams: from the start

        async def read() -> None:
            while True:
                answer: Any = await self.reader.xread(cursors, count=1000, block=1000)
                arrival = time.monotonic_ns()
                for key, entries in answer or ():
                    for entry, fields in entries:
                        receive(fields[b"d"], arrival)
                        cursors[key.decode()] = entry

        self._tasks.append(asyncio.create_task(read()))

    async def publish(self, data: bytes) -> None:
        await self.writer.xadd(self.key, {"d": data})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.writer.aclose()
        await self.reader.aclose()


class NatsBare:
    """nats-py: JetStream publish (acknowledged); an ordered push consumer of every lane."""

    def __init__(self, url: str, name: str, lane: str, lanes: list[str]) -> None:
        self.url = url
        self.name = name
        self.subject = nats_subject(name, lane)

    async def open(self, receive: Receive) -> None:
        import nats
        from nats.aio.msg import Msg
        from nats.js.api import DeliverPolicy

        self.client = await nats.connect(self.url)
        self.js = self.client.jetstream()

        async def delivered(message: Msg) -> None:
            receive(message.data, time.monotonic_ns())

        await self.js.subscribe(
            f"{self.name}.>", cb=delivered, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )

    async def publish(self, data: bytes) -> None:
        await self.js.publish(self.subject, data)

    async def close(self) -> None:
        await self.client.close()


CLIENTS: dict[str, type[PostgresBare] | type[RedisBare] | type[NatsBare]] = {
    "postgresql": PostgresBare,
    "redis": RedisBare,
    "nats": NatsBare,
}


async def run(config: dict[str, Any]) -> None:
    """Subscribe, then prime, pace and report as the lab says (see the module)."""
    index, run_id = int(config["index"]), str(config["run"])
    receipts = Receipts(int(config["publishers"]), int(config["last"]), index)
    client: BareClient = CLIENTS[config["engine"]](
        config["url"], config["name"], config["lane"], config["lanes"]
    )
    pad = padding(int(config["size"]))

    async def send(seq: int, ts: int) -> None:
        await client.publish(tick_bytes(run_id, index, seq, ts, pad))

    went: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def told(words: list[str]) -> None:
        if words[0] == "prime":
            await send(0, time.monotonic_ns())
            # Not primed within 2 s: the lab will say prime again.
            deadline = asyncio.ensure_future(asyncio.sleep(2.0))
            if await until(lambda: receipts.primed, deadline):
                report("primed")
            deadline.cancel()
        elif words[0] == "go":  # go START_NS
            rate, start = float(config["rate"]), int(words[1])
            receipts.measured_from = start + int(float(config["warmup"]) * 1e9)
            paced = await pace(
                send,
                first=1,
                count=receipts.last,
                rate=rate,
                start_ns=start,
                measure_from_ns=receipts.measured_from,
            )
            report("paced", **paced.model_dump())
            went.set_result(None)
        elif words[0] == "excuse":  # excuse P FIRST LAST: those publish calls failed
            receipts.excuse(*map(int, words[1:4]))

    await client.open(lambda data, arrival: receipts.scan(data, arrival))
    commands = LabCommands(told)
    try:
        report("ready", error=None)
        await commands.start()
        await asyncio.wait([went, commands.stopped], return_when=asyncio.FIRST_COMPLETED)
        await until(lambda: receipts.complete, commands.stopped)
        report("done", subscribers=[receipts.figures()])
    finally:
        commands.close()
        await client.close()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m polyport.bench.cluster_bare CONFIG_JSON")
    config = json.loads(argv[0])
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(run(config))
        except Exception as exc:
            report("error", reason=f"the bare {config.get('engine')} client failed: {exc}"[:500])
            raise


if __name__ == "__main__":
    main(sys.argv[1:])
