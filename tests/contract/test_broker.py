"""The message broker contract over the node's work queue, embedded: memory and SQLite.

The broker every node has without configuration (:class:`WorkQueueBroker`):
its queues are queues of the work queue the node keeps anyway. The engines'
work queues run the same contract in ``test_broker_workqueue_*.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.broker_contract import BrokerContract, BrokerFactory

from polyport.backends.memory import MemoryWorkQueue
from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue
from polyport.core.broker import Broker
from polyport.core.queuebroker import WorkQueueBroker


class TestMemoryWorkQueueBroker(BrokerContract):
    """One process's memory: every node of the test shares one work queue."""

    @pytest.fixture
    def make_broker(self) -> BrokerFactory:
        shared = MemoryWorkQueue()

        def make() -> Broker:
            return WorkQueueBroker(shared, kind="memory", poll_interval=0.2)

        return make


class TestSqliteWorkQueueBroker(BrokerContract):
    """The embedded default: nodes of one process share the file's one connection (a
    second connection would wait on the first's group transaction, which only this same
    event loop commits); nodes in other processes share the file itself (test_kill9)."""

    @pytest.fixture
    def make_broker(self, tmp_path: Path) -> BrokerFactory:
        db = SqliteDatabase(tmp_path / "queues.sqlite3")

        def make() -> Broker:
            return WorkQueueBroker(SqliteWorkQueue(db), kind="sqlite", poll_interval=0.2)

        return make


async def test_ids_and_keys_the_work_queue_would_refuse_go_through_as_digests() -> None:
    """The broker takes any id or key without control characters; the work queue only
    printable ones: others are stored under a digest and come back as they were sent."""
    from polyport.core.broker import OutgoingMessage, QueueOptions

    broker = WorkQueueBroker(MemoryWorkQueue(), kind="memory", poll_interval=0.05)
    await broker.open()
    await broker.declare(QueueOptions("q"))
    odd = "Ⱦ\U000ca2c5j"  # an unassigned code point: not printable for Python
    tilde = "~not-a-digest"
    sent = await broker.send(
        "q",
        [
            OutgoingMessage(odd, b"{}", key=odd),
            OutgoingMessage(tilde, b"{}"),
            OutgoingMessage(odd, b"{}"),
        ],
    )
    assert sent == [True, True, False]
    got = await broker.receive("q", limit=5, lease=30, wait=1)
    assert sorted(d.id for d in got) == sorted([odd, tilde])
    held = next(d for d in got if d.id == odd)
    assert held.key == odd
    await broker.dead_letter(held, error="x")
    assert [m.id for m in await broker.dead("q")] == [odd]
    assert await broker.redrive("q", [odd]) == 1
    await broker.close()
