"""The leased work queue: the shared contract over the embedded backends."""

from __future__ import annotations

import pytest
from tests.contract.workqueue_contract import QueueFactory, WorkQueueContract

from polyport.backends.memory import MemoryWorkQueue
from polyport.core.workqueue import WorkQueue


class TestMemoryWorkQueue(WorkQueueContract):
    """One process's memory: nodes of one process share an instance."""

    @pytest.fixture
    def make_queue(self) -> QueueFactory:
        stores: dict[str, MemoryWorkQueue] = {}

        def make(name: str = "store") -> WorkQueue:
            return stores.setdefault(name, MemoryWorkQueue())

        return make
