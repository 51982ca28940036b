"""Records in SQLite: the :class:`~polyport.core.records.RecordStore` port.

One row per key. The version is the row's ``AUTOINCREMENT`` id and every
write makes a new row — a compare-and-set deletes the row at the expected
version and inserts its successor, in one transaction — so versions only
grow and SQLite never hands one out twice, even for a key deleted and
written again. Scans walk the unique index on ``key`` (SQLite compares text
by its UTF-8 bytes: code point order).

Files written before the record store kept the webhook store in tables of
their own: the first open moves them here and into the work queue (see
:mod:`.webhook_legacy`).

Every write commits before it returns (with whatever the database's group
transaction held). Statements run on the event loop's thread, like every
SQLite statement here; the methods are coroutines because the port's other
backends talk over a network.
"""

from __future__ import annotations

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.webhook_legacy import move_legacy_webhooks
from polyport.core.records import ABSENT, Record, check_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_records (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    value BLOB NOT NULL
);
"""

#: Sorts after every character a key may hold (U+10FFFF is not printable).
_LAST = "\U0010ffff"


class SqliteRecordStore:
    """Records in the node's SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def open(self) -> None:
        conn = self.db.open()
        self.db.create(SCHEMA)
        move_legacy_webhooks(conn)

    async def close(self) -> None:
        self.db.close()

    async def get(self, key: str) -> Record | None:
        row = self.db.conn.execute(
            "SELECT key, value, version FROM polyport_records WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else Record(row[0], bytes(row[1]), row[2])

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        check_key(key)
        insert = "INSERT INTO polyport_records (key, value) VALUES (?, ?) RETURNING version"
        with self.db.transaction() as tx:
            if expect is None:
                tx.execute("DELETE FROM polyport_records WHERE key = ?", (key,))
            elif expect != ABSENT:
                gone = tx.execute(
                    "DELETE FROM polyport_records WHERE key = ? AND version = ?", (key, expect)
                )
                if gone.rowcount != 1:
                    return None
            elif tx.execute("SELECT 1 FROM polyport_records WHERE key = ?", (key,)).fetchone():
                return None
            version: int = tx.execute(insert, (key, value)).fetchone()[0]
        self.db.commit()
        return version

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        if expect is None:
            cursor = self.db.durable_write("DELETE FROM polyport_records WHERE key = ?", (key,))
        else:
            cursor = self.db.durable_write(
                "DELETE FROM polyport_records WHERE key = ? AND version = ?", (key, expect)
            )
        return cursor.rowcount == 1

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        rows = self.db.conn.execute(
            "SELECT key, value, version FROM polyport_records "
            "WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?",
            (prefix, prefix + _LAST, after if after is not None else "", max(0, limit)),
        ).fetchall()
        return [Record(key, bytes(value), version) for key, value, version in rows]


__all__ = ["SqliteRecordStore"]
