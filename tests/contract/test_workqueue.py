"""The leased work queue: the shared contract over the embedded backends."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from tests.contract.workqueue_contract import QueueFactory, WorkQueueContract

from polyport.backends.memory import MemoryWorkQueue
from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue
from polyport.core.workqueue import WorkItem, WorkQueue


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

    async def check_groups(self, wq: WorkQueue, claimable: list[WorkItem]) -> None:
        """Exactly the live rows the rule lets a claim take wait for nothing."""
        assert isinstance(wq, SqliteWorkQueue)
        ready = {
            key
            for (key,) in wq.db.conn.execute(
                "SELECT key FROM polyport_work WHERE queue = 'q' "
                "AND status IN ('pending', 'running') AND waits = 0"
            )
        }
        assert ready == {item.key for item in claimable}

    @pytest.fixture
    def make_queue(self, tmp_path: Path) -> QueueFactory:
        def make(name: str = "store") -> WorkQueue:
            return SqliteWorkQueue(SqliteDatabase(tmp_path / f"{name}.sqlite3"))

        return make


#: The work table as files written before ordering groups hold it.
TABLE_BEFORE_GROUPS = """
CREATE TABLE polyport_work (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    due REAL NOT NULL,
    lease TEXT,
    owner TEXT,
    claimed REAL,
    finished REAL,
    error TEXT,
    result BLOB
);
CREATE UNIQUE INDEX polyport_work_key ON polyport_work (queue, key);
CREATE INDEX polyport_work_due ON polyport_work (queue, due)
    WHERE status IN ('pending', 'running');
CREATE INDEX polyport_work_finished ON polyport_work (queue, finished)
    WHERE status IN ('done', 'dead');
INSERT INTO polyport_work (queue, key, payload, status, attempts, created, due, lease, owner,
    claimed, finished)
VALUES ('q', 'waiting', x'01', 'pending', 1, 1, 5, NULL, NULL, 2, NULL),
       ('q', 'running', x'02', 'running', 1, 1, 100, 'token', 'node', 40, NULL),
       ('q', 'done', x'03', 'done', 1, 1, 1, NULL, NULL, 1, 2);
"""


async def test_a_file_from_before_groups_is_upgraded_in_place(tmp_path: Path) -> None:
    """Its table gains the group columns and indexes (two nodes opening it at once), its
    items read back without a group and keep working, and groups work beside them."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(TABLE_BEFORE_GROUPS)
    first, second = (SqliteWorkQueue(SqliteDatabase(path)) for _ in range(2))
    await first.open()
    await second.open()
    try:
        indexes = {
            name
            for (name,) in first.db.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
            )
        }
        assert {"polyport_work_ready", "polyport_work_group"} <= indexes
        assert "polyport_work_due" not in indexes
        items = {item.key: item for item in await first.items("q")}
        assert {key: item.group for key, item in items.items()} == dict.fromkeys(
            ("waiting", "running", "done")
        )
        assert items["running"].lease == "token"
        assert await first.enqueue("q", "g1", b"", now=10, group="g") is True
        assert await first.enqueue("q", "g2", b"", now=10, group="g") is True
        got = await first.claim(["q"], now=10, limit=10, lease=60)
        assert [item.key for item in got] == ["waiting", "g1"]
        assert await first.ack(items["running"], now=11) is True  # the old lease settles
        await asyncio.sleep(0)  # committed, for the other node to see
        assert await second.next_due(["q"]) == 70.0  # waiting's and g1's leases
        for item in got:
            assert await first.ack(item, now=12) is True
        await asyncio.sleep(0)
        assert [item.key for item in await second.claim(["q"], now=12, limit=10, lease=60)] == [
            "g2"
        ]
    finally:
        await first.close()
        await second.close()
