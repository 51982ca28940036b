"""The receivers' inbox in SQLite: the :class:`~polyport.core.inbox.ReceiverInbox` port.

One row per ``(receiver, delivery id)``: the primary key is the idempotency
check, so a duplicate is recognised across restarts and across nodes sharing
the file. ``due`` is when a pending row may next run, or when a running
row's lease ends: rows a dead node left ``running`` are claimed again once
it has passed. Every claim writes a fresh ``lease`` token and every later
update is conditional on it (and on the row still running), which is what
makes the port's lease and final-state guarantees hold here.

Only the insert and the redrive commit on their own (the sender's ``200``
and the admin's ``202`` wait for them). Claims and outcomes join the
database's group transaction, committed when the event loop next yields.
Statements run on the event loop's thread, like every SQLite statement here;
the methods are coroutines because the port's other backends talk over a
network.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import orjson

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.core.inbox import INBOX_STATUSES, InboxEntry, InboxStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_hook_inbox (
    receiver TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    status TEXT NOT NULL,
    event_type TEXT,
    signed_at INTEGER,
    received REAL NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease TEXT,
    finished REAL,
    error TEXT,
    PRIMARY KEY (receiver, delivery_id)
);
CREATE INDEX IF NOT EXISTS polyport_hook_inbox_due ON polyport_hook_inbox (status, due);
"""

# The rowid is the entry's seq: it grows with every insert, so it orders the listing.
_COLUMNS = (
    "rowid, receiver, delivery_id, status, event_type, signed_at, received, body, headers, "
    "attempts, due, lease, finished, error"
)


def _entry(values: tuple[Any, ...]) -> InboxEntry:
    (seq, receiver, delivery_id, status, event_type, signed_at, received, body, headers) = values[
        :9
    ]
    attempts, due, lease, finished, error = values[9:]
    return InboxEntry(
        seq=seq,
        receiver=receiver,
        id=delivery_id,
        status=status,
        event_type=event_type,
        signed_at=signed_at,
        received=received,
        body=bytes(body),
        headers=orjson.loads(headers),
        attempts=attempts,
        due=due,
        lease=lease,
        finished=finished,
        error=error,
    )


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class SqliteReceiverInbox:
    """Received webhooks, deduplicated and queued, in the node's SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def open(self) -> None:
        self.db.open().executescript(_SCHEMA)

    async def close(self) -> None:
        self.db.close()

    # -- receiving ---------------------------------------------------------------------

    async def insert(
        self,
        receiver: str,
        delivery_id: str,
        *,
        event_type: str | None,
        signed_at: int | None,
        body: bytes,
        headers: dict[str, str],
        now: float,
    ) -> bool:
        cursor = self.db.durable_write(
            "INSERT OR IGNORE INTO polyport_hook_inbox (receiver, delivery_id, status, "
            "event_type, signed_at, received, body, headers, due) "
            "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
            (
                receiver,
                delivery_id,
                event_type,
                signed_at,
                now,
                body,
                orjson.dumps(headers).decode(),
                now,
            ),
        )
        return cursor.rowcount == 1

    async def purge(self, before: float) -> int:
        cursor = self.db.durable_write(
            "DELETE FROM polyport_hook_inbox WHERE status IN ('done', 'dead') AND finished < ?",
            (before,),
        )
        return cursor.rowcount

    # -- processing --------------------------------------------------------------------

    async def claim(
        self, receivers: Sequence[str], now: float, limit: int, lease_seconds: float
    ) -> list[InboxEntry]:
        if not receivers or limit <= 0:
            return []
        candidates = self.db.conn.execute(
            "SELECT receiver, delivery_id FROM polyport_hook_inbox "
            "WHERE status IN ('pending', 'running') AND due <= ? "
            f"AND receiver IN ({_marks(receivers)}) ORDER BY due LIMIT ?",
            (now, *receivers, limit),
        ).fetchall()
        claimed = []
        for receiver, delivery_id in candidates:
            lease = secrets.token_hex(8)
            # Conditional on the row still being due: another node may have won it.
            cursor = self.db.group_write(
                "UPDATE polyport_hook_inbox SET status='running', attempts=attempts+1, "
                "due=?, lease=? WHERE receiver=? AND delivery_id=? "
                "AND status IN ('pending', 'running') AND due <= ?",
                (now + lease_seconds, lease, receiver, delivery_id, now),
            )
            if cursor.rowcount == 1:
                entry = self._get(receiver, delivery_id)
                if entry is not None:
                    claimed.append(entry)
        return claimed

    async def complete(self, entry: InboxEntry, now: float) -> bool:
        return self._settle(entry, "status='done', finished=?, error=NULL, lease=NULL", (now,))

    async def retry(self, entry: InboxEntry, due: float, error: str) -> bool:
        return self._settle(entry, "status='pending', due=?, error=?, lease=NULL", (due, error))

    async def bury(self, entry: InboxEntry, now: float, error: str) -> bool:
        return self._settle(entry, "status='dead', finished=?, error=?, lease=NULL", (now, error))

    async def release(self, entry: InboxEntry, now: float) -> bool:
        return self._settle(
            entry, "status='pending', due=?, attempts=attempts-1, lease=NULL", (now,)
        )

    def _settle(self, entry: InboxEntry, assignments: str, args: tuple[object, ...]) -> bool:
        # Only the holder of the current claim settles, and only a running row: a
        # final state (done, dead) never changes here — redrive is the one way back.
        cursor = self.db.group_write(
            f"UPDATE polyport_hook_inbox SET {assignments} "
            "WHERE receiver=? AND delivery_id=? AND lease=? AND status='running'",
            (*args, entry.receiver, entry.id, entry.lease),
        )
        return cursor.rowcount == 1

    async def next_due(self, receivers: Sequence[str]) -> float | None:
        if not receivers:
            return None
        found = self.db.conn.execute(
            "SELECT min(due) FROM polyport_hook_inbox WHERE status IN ('pending', 'running') "
            f"AND receiver IN ({_marks(receivers)})",
            tuple(receivers),
        ).fetchone()
        return found[0] if found and found[0] is not None else None

    # -- inspecting ----------------------------------------------------------------------

    async def get(self, receiver: str, delivery_id: str) -> InboxEntry | None:
        return self._get(receiver, delivery_id)

    def _get(self, receiver: str, delivery_id: str) -> InboxEntry | None:
        found = self.db.conn.execute(
            f"SELECT {_COLUMNS} FROM polyport_hook_inbox WHERE receiver=? AND delivery_id=?",
            (receiver, delivery_id),
        ).fetchone()
        return _entry(found) if found else None

    async def deliveries(
        self, receiver: str, *, status: InboxStatus | None, before: int | None, limit: int
    ) -> list[InboxEntry]:
        sql = f"SELECT {_COLUMNS} FROM polyport_hook_inbox WHERE receiver=?"
        args: list[object] = [receiver]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        if before is not None:
            sql += " AND rowid < ?"
            args.append(before)
        rows = self.db.conn.execute(sql + " ORDER BY rowid DESC LIMIT ?", (*args, limit))
        return [_entry(r) for r in rows.fetchall()]

    async def counts(self, receiver: str) -> dict[InboxStatus, int]:
        found = dict(
            self.db.conn.execute(
                "SELECT status, count(*) FROM polyport_hook_inbox WHERE receiver=? GROUP BY status",
                (receiver,),
            ).fetchall()
        )
        return {status: found.get(status, 0) for status in INBOX_STATUSES}

    async def redrive(self, receiver: str, delivery_id: str, now: float) -> bool:
        cursor = self.db.durable_write(
            "UPDATE polyport_hook_inbox SET status='pending', due=?, "
            "attempts=CASE status WHEN 'dead' THEN 0 ELSE attempts END, finished=NULL "
            "WHERE receiver=? AND delivery_id=? AND status IN ('dead', 'pending')",
            (now, receiver, delivery_id),
        )
        return cursor.rowcount == 1


__all__ = ["SqliteReceiverInbox"]
