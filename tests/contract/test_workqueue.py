"""The leased work queue: the shared contract over the embedded backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.workqueue_contract import QueueFactory, WorkQueueContract

from polyport.backends.memory import MemoryWorkQueue
from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue
from polyport.core.workqueue import WorkQueue


class TestMemoryWorkQueue(WorkQueueContract):
    """One process's memory: nodes of one process share an instance."""

    @pytest.fixture
    def make_queue(self) -> QueueFactory:
        stores: dict[str, MemoryWorkQueue] = {}

        def make(name: str = "store") -> WorkQueue:
            return stores.setdefault(name, MemoryWorkQueue())

        return make


class TestSqliteWorkQueue(WorkQueueContract):
    """The embedded default: one connection per node to one file."""

    @pytest.fixture
    def make_queue(self, tmp_path: Path) -> QueueFactory:
        def make(name: str = "store") -> WorkQueue:
            return SqliteWorkQueue(SqliteDatabase(tmp_path / f"{name}.sqlite3"))

        return make
