"""The inbox of received webhooks, in the node's SQLite database.

One row per ``(receiver, delivery id)``: the primary key is the idempotency
check, so a duplicate is recognised across restarts and across nodes sharing
the file. A row is written and committed **before** the sender is answered,
then processed from here:

    pending ──claim──▶ running ──ok──▶ done
       ▲                  │
       └──retry (backoff)─┤
                          └──last attempt failed──▶ dead ──redrive──▶ pending

``due`` is when a pending row may next run, or when a running row's lease
ends: a node that died mid-handler leaves its rows ``running``, and they are
claimed again once the lease has passed. Every claim writes a fresh ``lease``
token and every later update is conditional on it (and on the row still
running), so a node whose lease ran out cannot overwrite the work of the node
that took over, and ``done`` and ``dead`` are final: only an explicit redrive
makes a dead delivery pending again.

Only the insert is committed on its own (the sender's 200 waits for it).
Claims and outcomes join the database's group transaction, committed when the
event loop next yields: one lost to a crash leaves the row pending or running,
so the handler runs again — the at-least-once promise, not a loss.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from polyport.edges.hooks.handler import StoredDelivery

Status = Literal["pending", "running", "done", "dead"]
STATUSES: tuple[Status, ...] = ("pending", "running", "done", "dead")

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

_COLUMNS = (
    "rowid, receiver, delivery_id, status, event_type, signed_at, received, body, headers, "
    "attempts, due, lease, finished, error"
)


class Database(Protocol):
    """What the inbox needs of the node's SQLite database (``SqliteDatabase``)."""

    @property
    def conn(self) -> sqlite3.Connection: ...
    def open(self) -> sqlite3.Connection: ...
    def close(self) -> None: ...
    def durable_write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor: ...
    def group_write(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor: ...


@dataclass(slots=True)
class InboxRow:
    """One received delivery and where its processing stands."""

    rowid: int
    receiver: str
    id: str
    status: Status
    event_type: str | None
    signed_at: int | None
    received: float
    body: bytes
    headers: dict[str, str]
    attempts: int
    due: float
    lease: str | None
    finished: float | None
    error: str | None

    def delivery(self) -> StoredDelivery:
        return StoredDelivery(
            receiver=self.receiver,
            id=self.id,
            event_type=self.event_type,
            signed_at=self.signed_at,
            received=self.received,
            body=self.body,
            headers=self.headers,
            attempts=self.attempts,
        )

    def summary(self) -> dict[str, Any]:
        """The row as the deliveries listing shows it (no body)."""
        return {
            "id": self.id,
            "receiver": self.receiver,
            "status": self.status,
            "event_type": self.event_type,
            "signed_at": self.signed_at,
            "received": self.received,
            "attempts": self.attempts,
            "next_attempt": self.due if self.status == "pending" else None,
            "finished": self.finished,
            "error": self.error,
        }


def _row(values: tuple[Any, ...]) -> InboxRow:
    (rowid, receiver, delivery_id, status, event_type, signed_at, received, body, headers) = values[
        :9
    ]
    attempts, due, lease, finished, error = values[9:]
    return InboxRow(
        rowid=rowid,
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


class HookInbox:
    """Received webhooks, deduplicated and queued, in a SQLite database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def open(self) -> None:
        self.db.open().executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- receiving ---------------------------------------------------------------------

    def insert(
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
        """Store a new delivery, committed before returning; False if the id is known."""
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

    # -- processing --------------------------------------------------------------------

    def claim(
        self, receivers: Sequence[str], now: float, limit: int, lease_seconds: float
    ) -> list[InboxRow]:
        """Take up to ``limit`` due rows of ``receivers`` for ``lease_seconds``."""
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
                row = self.get(receiver, delivery_id)
                if row is not None:
                    claimed.append(row)
        return claimed

    def complete(self, row: InboxRow, now: float) -> bool:
        """The handler succeeded."""
        return self._settle(row, "status='done', finished=?, error=NULL, lease=NULL", (now,))

    def retry(self, row: InboxRow, due: float, error: str) -> bool:
        """The handler failed; run it again at ``due``."""
        return self._settle(row, "status='pending', due=?, error=?, lease=NULL", (due, error))

    def bury(self, row: InboxRow, now: float, error: str) -> bool:
        """The handler failed for the last time: keep the delivery as a dead letter."""
        return self._settle(row, "status='dead', finished=?, error=?, lease=NULL", (now, error))

    def release(self, row: InboxRow, now: float) -> bool:
        """Give a claimed row back unrun (the node is stopping): the attempt does not count."""
        return self._settle(row, "status='pending', due=?, attempts=attempts-1, lease=NULL", (now,))

    def _settle(self, row: InboxRow, assignments: str, args: tuple[object, ...]) -> bool:
        # Only the holder of the current claim settles, and only a running row: a
        # final state (done, dead) never changes here — redrive is the one way back.
        cursor = self.db.group_write(
            f"UPDATE polyport_hook_inbox SET {assignments} "
            "WHERE receiver=? AND delivery_id=? AND lease=? AND status='running'",
            (*args, row.receiver, row.id, row.lease),
        )
        return cursor.rowcount == 1

    def next_due(self, receivers: Sequence[str]) -> float | None:
        """When the earliest pending row (or running lease) of ``receivers`` falls due."""
        if not receivers:
            return None
        found = self.db.conn.execute(
            "SELECT min(due) FROM polyport_hook_inbox WHERE status IN ('pending', 'running') "
            f"AND receiver IN ({_marks(receivers)})",
            tuple(receivers),
        ).fetchone()
        return found[0] if found and found[0] is not None else None

    def purge(self, before: float) -> int:
        """Forget processed and dead deliveries finished before ``before``."""
        cursor = self.db.durable_write(
            "DELETE FROM polyport_hook_inbox WHERE status IN ('done', 'dead') AND finished < ?",
            (before,),
        )
        return cursor.rowcount

    # -- inspecting ----------------------------------------------------------------------

    def get(self, receiver: str, delivery_id: str) -> InboxRow | None:
        found = self.db.conn.execute(
            f"SELECT {_COLUMNS} FROM polyport_hook_inbox WHERE receiver=? AND delivery_id=?",
            (receiver, delivery_id),
        ).fetchone()
        return _row(found) if found else None

    def list(
        self, receiver: str, *, status: Status | None, before: int | None, limit: int
    ) -> list[InboxRow]:
        """A receiver's deliveries, newest first; ``before`` is a cursor (a rowid)."""
        sql = f"SELECT {_COLUMNS} FROM polyport_hook_inbox WHERE receiver=?"
        args: list[object] = [receiver]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        if before is not None:
            sql += " AND rowid < ?"
            args.append(before)
        rows = self.db.conn.execute(sql + " ORDER BY rowid DESC LIMIT ?", (*args, limit))
        return [_row(r) for r in rows.fetchall()]

    def counts(self, receiver: str) -> dict[str, int]:
        """Deliveries per status."""
        found = dict(
            self.db.conn.execute(
                "SELECT status, count(*) FROM polyport_hook_inbox WHERE receiver=? GROUP BY status",
                (receiver,),
            ).fetchall()
        )
        return {status: found.get(status, 0) for status in STATUSES}

    def redrive(self, receiver: str, delivery_id: str, now: float) -> bool:
        """Run a dead (or waiting) delivery again now, with a fresh count of attempts."""
        cursor = self.db.durable_write(
            "UPDATE polyport_hook_inbox SET status='pending', due=?, "
            "attempts=CASE status WHEN 'dead' THEN 0 ELSE attempts END, finished=NULL "
            "WHERE receiver=? AND delivery_id=? AND status IN ('dead', 'pending')",
            (now, receiver, delivery_id),
        )
        return cursor.rowcount == 1
