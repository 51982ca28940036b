"""The receivers' inbox: the shared contract over the work queue of each embedded backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from tests.contract.inbox_contract import InboxFactory, ReceiverInboxContract

from polyport.backends.memory import MemoryWorkQueue
from polyport.backends.sqlite import SqliteDatabase, SqliteWorkQueue
from polyport.core.inbox import QueuedReceiverInbox, ReceiverInbox


class TestMemoryReceiverInbox(ReceiverInboxContract):
    @pytest.fixture
    def make_inbox(self) -> InboxFactory:
        stores: dict[str, MemoryWorkQueue] = {}

        def make(name: str = "inbox") -> ReceiverInbox:
            return QueuedReceiverInbox(stores.setdefault(name, MemoryWorkQueue()))

        return make


class TestSqliteReceiverInbox(ReceiverInboxContract):
    """The embedded default: one connection per node to one file."""

    @pytest.fixture
    def make_inbox(self, tmp_path: Path) -> InboxFactory:
        def make(name: str = "inbox") -> ReceiverInbox:
            return QueuedReceiverInbox(
                SqliteWorkQueue(SqliteDatabase(tmp_path / f"{name}.sqlite3"))
            )

        return make


LEGACY = """
CREATE TABLE polyport_hook_inbox (
    receiver TEXT NOT NULL, delivery_id TEXT NOT NULL, status TEXT NOT NULL,
    event_type TEXT, signed_at INTEGER, received REAL NOT NULL, body BLOB NOT NULL,
    headers TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL,
    lease TEXT, finished REAL, error TEXT, PRIMARY KEY (receiver, delivery_id)
);
"""


async def test_a_file_from_before_the_work_queue_keeps_its_inbox(tmp_path: Path) -> None:
    """The rows of the old inbox table move into the work queue at the first open — every
    field, the order of the listing and each delivery's id as a duplicate — and the old
    table is gone."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY)
    rows = [
        (
            "stripe",
            "evt_1",
            "done",
            "paid",
            100,
            1.0,
            b"\x00one",
            {"a": "1"},
            1,
            1.0,
            None,
            2.0,
            None,
        ),
        ("stripe", "evt_2", "running", None, None, 3.0, b"two", {}, 2, 90.0, "tok", None, "x"),
        (
            "github",
            "d-1",
            "dead",
            "push",
            5,
            4.0,
            b"three",
            {"b": "2"},
            5,
            4.0,
            None,
            6.0,
            "gave up",
        ),
        ("stripe", "evt_3", "pending", "paid", 7, 8.0, b"four", {}, 0, 8.0, None, None, None),
    ]
    conn.executemany(
        "INSERT INTO polyport_hook_inbox VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(*r[:7], orjson.dumps(r[7]).decode(), *r[8:]) for r in rows],
    )
    conn.commit()
    conn.close()

    inbox = QueuedReceiverInbox(SqliteWorkQueue(SqliteDatabase(path)))
    await inbox.open()
    try:
        listed = await inbox.deliveries("stripe", status=None, before=None, limit=10)
        assert [e.id for e in listed] == ["evt_3", "evt_2", "evt_1"]
        for row in rows:
            entry = await inbox.get(row[0], row[1])
            assert entry is not None
            assert (
                entry.receiver,
                entry.id,
                entry.status,
                entry.event_type,
                entry.signed_at,
                entry.received,
                entry.body,
                entry.headers,
                entry.attempts,
                entry.due,
                entry.lease,
                entry.finished,
                entry.error,
            ) == row
        assert not await inbox.insert(
            "github", "d-1", event_type=None, signed_at=None, body=b"", headers={}, now=9.0
        )
        taken = await inbox.claim(["stripe"], 100.0, 10, 30)
        # evt_2's lease ran out at 90: due again, after evt_3, with its attempts counted on.
        assert [(e.id, e.attempts) for e in taken] == [("evt_3", 1), ("evt_2", 3)]
    finally:
        await inbox.close()
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert ("polyport_hook_inbox",) not in tables
