"""The message broker contract on RabbitMQ (``queues.broker = amqp://…``), with quorum and
with classic queues: each node a connection of its own, on queues under the test's own
prefix (deleted after it); and a connection cut under a node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from tests.contract.broker_contract import (
    LONG,
    BrokerContract,
    BrokerFactory,
    message,
    receive_all,
)
from tests.contract.rabbitmq_names import URL, Names, rabbit

from polyport.backends.rabbitmq.broker import build
from polyport.core.broker import Broker, QueueOptions
from polyport.core.errors import Unavailable

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]
__all__ = ["rabbit"]  # the fixture: a prefix of the test's own, its queues deleted after


class TestRabbitBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, rabbit: Names) -> BrokerFactory:
        for queue in ("q", "other"):
            rabbit.made(queue)

        def make() -> Broker:
            return build(
                "amqp://guest:guest@127.0.0.1:5672/",
                {"prefix": rabbit.prefix},
                owner="contract",
                poll_interval=0.2,
            )

        return make


class TestRabbitBrokerClassic(BrokerContract):
    """``queue_type=classic``: durable classic queues (RabbitMQ before 3.10, or by choice)."""

    @pytest.fixture
    def make_broker(self, rabbit: Names) -> BrokerFactory:
        for queue in ("q", "other"):
            rabbit.made(queue)

        def make() -> Broker:
            return build(
                "amqp://guest:guest@127.0.0.1:5672/",
                {"prefix": rabbit.prefix, "queue_type": "classic"},
                owner="contract",
                poll_interval=0.2,
            )

        return make


class CuttingProxy:
    """Relays a port of its own to RabbitMQ; ``cut`` closes every connection through it
    and refuses new ones until ``mend`` — what a broker restart looks like to a node."""

    def __init__(self, upstream: int = 5672) -> None:
        self.upstream = upstream
        self.port = 0
        self.refusing = False
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def cut(self) -> None:
        self.refusing = True
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def mend(self) -> None:
        self.refusing = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            self.cut()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()


async def test_a_lost_connection_refuses_sends_and_gives_back_what_was_held(
    rabbit: Names,
) -> None:
    """Connection cut (a broker restart, a network cut): sends are Unavailable, never lost;
    the held message comes back counted and its old delivery cannot settle; the broker
    connects again by itself and everything works again."""
    rabbit.made("q")
    async with CuttingProxy().running() as proxy:
        broker = build(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            {"prefix": rabbit.prefix},
            owner="cut",
            poll_interval=0.2,
        )
        await broker.open()
        try:
            await broker.declare(QueueOptions("q", dedup_window=3600))
            await broker.send("q", [message(1)])
            [held] = await receive_all(broker, want=1)
            proxy.cut()
            # The loss is seen as soon as the socket closes.
            deadline = time.monotonic() + 5
            while broker.connection.alive:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the cut was not noticed"
                await asyncio.sleep(0.02)
            with pytest.raises(Unavailable):
                await broker.send("q", [message(2)])
            with pytest.raises(Unavailable):
                await broker.receive("q", limit=1, lease=LONG, wait=0.1)
            assert not await broker.ack(held)
            proxy.mend()
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert await broker.send("q", [message(3)]) == [True]
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "never connected again"
                    await asyncio.sleep(0.2)
            got = await receive_all(broker, want=2, within=10)
            by_id = {d.id: d for d in got}
            assert set(by_id) == {"m1", "m3"}
            assert by_id["m1"].attempt == 2  # its connection closed while it ran: counted
            assert by_id["m3"].attempt == 1
            for delivery in got:
                assert await broker.ack(delivery)
        finally:
            await broker.close()


@contextlib.asynccontextmanager
async def opened(rabbit: Names, queue: str = "q") -> AsyncIterator[Broker]:
    broker = build(URL, {"prefix": rabbit.prefix}, owner="dedup", poll_interval=0.2)
    rabbit.made(queue)
    await broker.open()
    try:
        await broker.declare(QueueOptions(queue, dedup_window=3600))
        yield broker
    finally:
        await broker.close()


async def test_an_id_sent_on_one_node_is_a_duplicate_on_another(rabbit: Names) -> None:
    """Every node follows the queue's id stream: what one sent, another refuses; a node
    that opens later reads the window's ids first; a purge on one is forgotten by all."""
    async with opened(rabbit) as one, opened(rabbit) as two:
        assert await one.send("q", [message(1)]) == [True]
        ids = two.state("q").ids  # type: ignore[attr-defined]
        await ids.sync()
        assert await two.send("q", [message(1)]) == [False]
        async with opened(rabbit) as late:
            assert await late.send("q", [message(1)]) == [False]
        assert await one.purge("q") == 1
        await ids.sync()
        assert await two.send("q", [message(1)]) == [True]


async def test_a_second_copy_from_a_racing_send_is_dropped_by_consumers(rabbit: Names) -> None:
    """Two nodes storing one id before either read the other's record: the copy the
    stream names second never reaches a handler."""
    async with opened(rabbit) as one, opened(rabbit) as two:
        assert await one.send("q", [message(1)]) == [True]
        # As if two had not read one's record yet when it sent the same id.
        two.state("q").ids.entries.clear()  # type: ignore[attr-defined]
        assert await two.send("q", [message(1)]) == [True]
        await one.state("q").ids.sync()  # type: ignore[attr-defined]
        got = await receive_all(one, want=2, within=2)
        assert [d.id for d in got] == ["m1"]
        assert await one.ack(got[0])
        assert (await one.stats("q")).waiting == 0
