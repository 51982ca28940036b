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
