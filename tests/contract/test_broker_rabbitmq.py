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
    SHORT,
    BrokerContract,
    BrokerFactory,
    message,
    nothing_for,
    receive_all,
)
from tests.contract.rabbitmq_names import URL, Names, rabbit

from polyport.backends.rabbitmq.broker import build
from polyport.core.broker import Broker, OutgoingMessage, QueueOptions
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


async def test_a_keyed_message_of_a_node_that_died_comes_first_and_counted(
    rabbit: Names,
) -> None:
    """A node's connection dies while it runs a1: another node receives a1 again (counted)
    before a2, once RabbitMQ gave a1 back; a keyed release does not count."""
    rabbit.made("q")
    async with CuttingProxy().running() as proxy, opened(rabbit) as other:
        doomed = build(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            {"prefix": rabbit.prefix},
            owner="doomed",
            poll_interval=0.2,
        )
        await doomed.open()
        try:
            await doomed.declare(QueueOptions("q", dedup_window=3600))
            await doomed.send("q", [message("a1", key="a"), message("a2", key="a")])
            [a1] = await receive_all(doomed, want=1)
            assert a1.id == "ma1"
            await nothing_for(other, 0.3)  # a2 waits for a1
            proxy.cut()
            [again] = await receive_all(other, want=1, within=15)
            assert again.id == "ma1" and again.attempt == 2
            assert await other.release(again)
            [released] = await receive_all(other, want=1, within=5)
            assert released.id == "ma1" and released.attempt == 2
            assert await other.ack(released)
            [a2] = await receive_all(other, want=1, within=5)
            assert a2.id == "ma2" and a2.attempt == 1
            assert await other.ack(a2)
        finally:
            await doomed.close()


async def test_a_keyed_retry_keeps_its_place_and_error_on_another_node(rabbit: Names) -> None:
    """The retry waits at the partition's head with its error: the node that retried it
    stops, another node runs it after its delay, before the key's next message."""
    async with opened(rabbit) as other:
        async with opened(rabbit) as first:
            await first.send("q", [message("a1", key="a"), message("a2", key="a")])
            [a1] = await receive_all(first, want=1)
            started = time.monotonic()
            assert await first.retry(a1, delay=1.0, error="ValueError: later")
        [again] = await receive_all(other, want=1, within=10)
        assert time.monotonic() - started >= 0.9
        assert again.id == "ma1" and again.attempt == 2 and again.error == "ValueError: later"
        assert await other.ack(again)
        [a2] = await receive_all(other, want=1)
        assert a2.id == "ma2"
        assert await other.ack(a2)


async def test_a_keyed_lease_runs_out_to_another_node(rabbit: Names) -> None:
    """A keyed message held past its lease goes back to its head: the next node gets it
    (counted), the late settlement is refused, the key's order kept."""
    async with opened(rabbit) as one, opened(rabbit) as two:
        await one.send("q", [message("a1", key="a"), message("a2", key="a")])
        [held] = await receive_all(one, want=1, lease=SHORT)
        [again] = await receive_all(two, want=1, within=10)
        assert again.id == "ma1" and again.attempt == 2
        assert not await one.ack(held)
        assert await two.ack(again)
        [a2] = await receive_all(two, want=1)
        assert a2.id == "ma2"


async def test_a_delayed_keyed_message_holds_its_key(rabbit: Names) -> None:
    """a1 sent with a delay, a2 without: a2 waits for a1."""
    async with opened(rabbit) as broker:
        started = time.monotonic()
        await broker.send("q", [message("a1", key="a", delay=1.0), message("a2", key="a")])
        [first] = await receive_all(broker, want=1, within=10)
        assert first.id == "ma1" and time.monotonic() - started >= 0.9
        assert await broker.ack(first)
        [second] = await receive_all(broker, want=1)
        assert second.id == "ma2"


async def test_any_id_and_key_go_through_even_past_amqps_255_bytes(rabbit: Names) -> None:
    """Ids and keys are any 1-200 characters without control ones: an id longer than
    message_id holds travels whole in a header (message_id its digest), and comes back,
    is deduplicated, dead-lettered and redriven by itself."""
    long = "é/" * 100  # 300 bytes of UTF-8
    odd = "Ⱦ\U000ca2c5j"
    async with opened(rabbit) as broker:
        sent = await broker.send(
            "q",
            [
                OutgoingMessage(long, b"{}", key=odd),
                OutgoingMessage(odd, b"{}"),
                OutgoingMessage(long, b"{}"),
            ],
        )
        assert sent == [True, True, False]
        got = await receive_all(broker, want=2)
        assert sorted(d.id for d in got) == sorted([long, odd])
        held = next(d for d in got if d.id == long)
        assert held.key == odd
        assert await broker.dead_letter(held, error="x")
        assert [m.id for m in await broker.dead("q")] == [long]
        assert await broker.redrive("q", [long]) == 1
        [back] = await receive_all(broker, want=1)
        assert back.id == long and back.key == odd
