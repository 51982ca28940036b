"""The webhook store in SQLite: the :class:`~polyport.core.webhookstore.WebhookStore` port.

It shares the node's :class:`~polyport.backends.sqlite.db.SqliteDatabase`
with the event log. Built with that log (as the node does when the log is
SQLite too), :meth:`SqliteWebhookStore.fan_out` first writes the events the
log still holds back into the open group transaction, then the deliveries:
so deliveries commit with the events they derive from, or after them, never
before — the port's first guarantee, kept here rather than by the edge. The
same log makes the store :attr:`~SqliteWebhookStore.follows_log`: the fan-out
cursor it keeps is a ``seq`` of that log, which survives a restart with it.
Statements run on the event loop's thread, like every SQLite statement here;
the methods are coroutines because the port's other backends talk over a
network.

**Leases.** A delivery being attempted carries ``lease_owner`` and
``lease_until``. Claiming is one ``UPDATE … RETURNING`` over rows whose lease
is absent or expired; SQLite runs one writer at a time, so two nodes sharing
the file can never both claim the same ``(endpoint, event)``. A node that dies
leaves leases that simply expire.

**Final states.** An outcome (and its line in the attempts' history) is
written only for the holder of the lease and only over a ``pending`` row, so
a node whose lease ran out cannot write over the outcome of the node that
took over. Replay and recovery are the only way back to ``pending``.

**Secrets at rest.** An endpoint's signing secrets are stored sealed by a
:class:`~polyport.webhooks.encryption.SecretCipher` (encrypted with the key of
``webhooks.secret_keys``; as they are when no key is configured).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.eventlog import SqliteEventLog
from polyport.backends.sqlite.migrate import add_columns
from polyport.backends.sqlite.webhook_rows import (
    ADDED_COLUMNS,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    SCHEMA,
    attempt_row,
    delivery_from_row,
    endpoint_from_row,
    endpoint_row,
    outcome_row,
)
from polyport.core.errors import Conflict
from polyport.core.webhookstore import (
    Attempt,
    AttemptResult,
    Claim,
    Delivery,
    DeliveryKey,
    DeliveryStatus,
    Message,
    Owed,
    WebhookEndpoint,
)
from polyport.webhooks.encryption import PREFIX, SecretCipher

_ATTEMPT_COLUMNS = (
    "endpoint_id, event_id, number, time, response_code, latency, error, response_body"
)


class SqliteWebhookStore:
    """Endpoints, messages, deliveries, attempts and leases in the node's SQLite database.

    ``log`` is the node's SQLite event log over the same database, or None
    when events are kept elsewhere (in memory).
    """

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        log: SqliteEventLog | None = None,
        cipher: SecretCipher | None = None,
    ) -> None:
        if log is not None and log.db is not db:
            # Two connections would commit apart: "never before the events" needs one.
            raise ValueError("the webhook store and its event log must share one database")
        self.db = db
        self._log = log
        #: Seals endpoint secrets at rest (a cipher without keys stores them as they are).
        self.cipher = cipher if cipher is not None else SecretCipher(())

    @property
    def follows_log(self) -> bool:
        return self._log is not None

    async def open(self) -> None:
        conn = self.db.open()
        conn.executescript(SCHEMA)
        add_columns(conn, ADDED_COLUMNS)

    async def close(self) -> None:
        self.db.close()

    # -- endpoints ------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.conn.execute(
            "SELECT value FROM polyport_webhook_meta WHERE key = ?", (key,)
        ).fetchone()
        return row[0] if row else None

    async def endpoints_version(self) -> int:
        return int(self._meta("endpoints_version") or 0)

    async def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self.db.conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM polyport_webhook_endpoints WHERE id = ?",
            (endpoint_id,),
        ).fetchone()
        return endpoint_from_row(row, self.cipher) if row else None

    async def endpoints(
        self, limit: int | None = None, after: str | None = None
    ) -> list[WebhookEndpoint]:
        rows = self.db.conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM polyport_webhook_endpoints WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (after or "", -1 if limit is None else limit),
        ).fetchall()
        return [endpoint_from_row(r, self.cipher) for r in rows]

    async def save_endpoint(self, endpoint: WebhookEndpoint, *, new: bool = False) -> None:
        verb = "INSERT" if new else "INSERT OR REPLACE"
        marks = ",".join("?" * 12)
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    f"{verb} INTO polyport_webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ({marks})",
                    endpoint_row(endpoint, self.cipher),
                )
                self._bump(tx)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"webhook endpoint {endpoint.id} exists already") from exc
        self.db.commit()

    def _bump(self, tx: sqlite3.Connection) -> None:
        tx.execute(
            "INSERT INTO polyport_webhook_meta VALUES ('endpoints_version', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        with self.db.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM polyport_webhook_endpoints WHERE id = ?", (endpoint_id,)
            )
            found = cursor.rowcount > 0
            tx.execute(
                "DELETE FROM polyport_webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,)
            )
            tx.execute(
                "DELETE FROM polyport_webhook_attempts WHERE endpoint_id = ?", (endpoint_id,)
            )
            self._bump(tx)
        self.db.commit()
        return found

    async def set_failing_since(self, endpoint_id: str, since: float | None) -> None:
        self.db.group_write(
            "UPDATE polyport_webhook_endpoints SET failing_since = ? WHERE id = ?",
            (since, endpoint_id),
        )

    async def disable(self, endpoint_id: str, reason: str, at: float) -> int:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE polyport_webhook_endpoints SET enabled = 0, disabled_reason = ?, "
                "disabled_at = ?, updated = ? WHERE id = ?",
                (reason, at, at, endpoint_id),
            )
            cursor = tx.execute(
                "UPDATE polyport_webhook_deliveries SET status = 'failed', next_at = NULL, "
                "lease_owner = NULL, lease_until = NULL, error = coalesce(error, ?) "
                "WHERE endpoint_id = ? AND status = 'pending'",
                (f"endpoint disabled: {reason}", endpoint_id),
            )
            self._bump(tx)
        self.db.commit()
        return cursor.rowcount

    async def reseal(self) -> int:
        if not self.cipher.enabled:
            return 0
        rows = self.db.conn.execute("SELECT id, secrets FROM polyport_webhook_endpoints").fetchall()
        stale = [(i, v) for i, v in rows if not self.cipher.is_current(v)]
        if not stale:
            return 0
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE polyport_webhook_endpoints SET secrets = ? WHERE id = ? AND secrets = ?",
                [
                    (self.cipher.seal(self.cipher.open(v, f"webhook endpoint {i}")), i, v)
                    for i, v in stale
                ],
            )
        self.db.commit()
        return len(stale)

    async def plaintext_count(self) -> int:
        row = self.db.conn.execute(
            "SELECT count(*) FROM polyport_webhook_endpoints WHERE secrets NOT LIKE ?",
            (PREFIX + "%",),
        ).fetchone()
        return int(row[0])

    # -- the outbox -----------------------------------------------------------------

    async def fan_out(
        self,
        messages: Iterable[Message],
        owed: Sequence[Owed],
        *,
        owner: str | None,
        lease_until: float | None,
        cursor: int | None,
    ) -> None:
        if self._log is not None:
            # The events first, into the open group transaction: our rows can then
            # commit with them or after them, never before.
            self._log.flush()
        holder = owner if lease_until is not None else None
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT OR IGNORE INTO polyport_webhook_messages (event_id, type, time, body) "
                "VALUES (?, ?, ?, ?)",
                [(m.event_id, m.type, m.time, m.body) for m in messages],
            )
            tx.executemany(
                "INSERT OR IGNORE INTO polyport_webhook_deliveries "
                "(endpoint_id, event_id, type, created, status, next_at, lease_owner, lease_until) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                [(e, i, t, c, c, holder, lease_until) for e, i, t, c in owed],
            )
            if cursor is not None:
                tx.execute(
                    "INSERT INTO polyport_webhook_meta VALUES ('fanout', ?) ON CONFLICT(key) "
                    "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value "
                    "AS INTEGER))",
                    (str(cursor),),
                )

    async def fanout_cursor(self) -> int:
        return int(self._meta("fanout") or 0)

    async def add_single(self, message: Message, endpoint_id: str, now: float) -> None:
        owed = [Owed(endpoint_id, message.event_id, message.type, now)]
        await self.fan_out([message], owed, owner=None, lease_until=None, cursor=None)
        self.db.commit()

    async def messages(self, event_ids: Iterable[str]) -> dict[str, Message]:
        wanted = list(dict.fromkeys(event_ids))
        out: dict[str, Message] = {}
        conn = self.db.conn
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for event_id, type_, time, body in conn.execute(
                "SELECT event_id, type, time, body FROM polyport_webhook_messages "
                f"WHERE event_id IN ({marks})",
                chunk,
            ):
                out[event_id] = Message(event_id, type_, time, bytes(body))
        return out

    async def purge(self, before: float) -> int:
        with self.db.transaction() as tx:
            cursor = tx.execute(
                "DELETE FROM polyport_webhook_deliveries WHERE status != 'pending' AND created < ?",
                (before,),
            )
            dropped = cursor.rowcount
            tx.execute(
                "DELETE FROM polyport_webhook_attempts WHERE NOT EXISTS ("
                " SELECT 1 FROM polyport_webhook_deliveries d WHERE d.endpoint_id = "
                " polyport_webhook_attempts.endpoint_id AND d.event_id = "
                " polyport_webhook_attempts.event_id)"
            )
            tx.execute(
                "DELETE FROM polyport_webhook_messages WHERE time < ? AND NOT EXISTS ("
                " SELECT 1 FROM polyport_webhook_deliveries d "
                " WHERE d.event_id = polyport_webhook_messages.event_id)",
                (before,),
            )
        self.db.commit()
        return dropped

    # -- leases ---------------------------------------------------------------------

    async def claim_due(self, owner: str, now: float, limit: int, until: float) -> list[Claim]:
        rows = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET lease_owner = ?, lease_until = ? "
            "WHERE (endpoint_id, event_id) IN ("
            "  SELECT endpoint_id, event_id FROM polyport_webhook_deliveries "
            "  WHERE status = 'pending' AND next_at <= ? "
            "  AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?) "
            "RETURNING endpoint_id, event_id, attempts, retry_base",
            (owner, until, now, now, limit),
        ).fetchall()
        self.db.commit()
        return [Claim(e, i, a, b, until) for e, i, a, b in rows]

    async def extend_leases(self, owner: str, until: float) -> int:
        cursor = self.db.group_write(
            "UPDATE polyport_webhook_deliveries SET lease_until = ? "
            "WHERE lease_owner = ? AND status = 'pending' AND lease_until < ?",
            (until, owner, until),
        )
        return cursor.rowcount

    async def release(self, owner: str, keys: Iterable[DeliveryKey]) -> None:
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE polyport_webhook_deliveries SET lease_owner = NULL, lease_until = NULL "
                "WHERE endpoint_id = ? AND event_id = ? AND lease_owner = ?",
                [(e, i, owner) for e, i in keys],
            )
        self.db.commit()

    async def record(self, owner: str, results: Sequence[AttemptResult]) -> int:
        if not results:
            return 0
        # Into the group transaction, one statement per kind for the whole batch. The
        # history first, while the lease still says whose outcome counts; a success
        # lives only in the delivery row (see :meth:`attempts`), one row less per
        # delivery in the common case.
        self.db.group_write_many(
            f"INSERT OR IGNORE INTO polyport_webhook_attempts ({_ATTEMPT_COLUMNS}) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM "
            "polyport_webhook_deliveries WHERE endpoint_id = ? AND event_id = ? "
            "AND lease_owner = ? AND status = 'pending')",
            [
                (*attempt_row(r), r.endpoint_id, r.event_id, owner)
                for r in results
                if r.status != "delivered"
            ],
        )
        changes = self.db.conn.total_changes
        self.db.group_write_many(
            "UPDATE polyport_webhook_deliveries SET status = ?, attempts = max(attempts, ?), "
            "next_at = ?, lease_owner = NULL, lease_until = NULL, last_at = ?, "
            "response_code = ?, latency = ?, response_body = ?, error = ? "
            "WHERE endpoint_id = ? AND event_id = ? AND lease_owner = ? AND status = 'pending'",
            [outcome_row(r, owner) for r in results],
        )
        return self.db.conn.total_changes - changes

    # -- the delivery log -------------------------------------------------------------

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Delivery]:
        where = ["endpoint_id = ?"]
        args: list[object] = [endpoint_id]
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before is not None:
            where.append("(created, event_id) < (?, ?)")
            args.extend(before)
        rows = self.db.conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM polyport_webhook_deliveries "
            f"WHERE {' AND '.join(where)} ORDER BY created DESC, event_id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [delivery_from_row(r) for r in rows]

    async def delivery(self, endpoint_id: str, event_id: str) -> Delivery | None:
        return self._delivery(endpoint_id, event_id)

    def _delivery(self, endpoint_id: str, event_id: str) -> Delivery | None:
        row = self.db.conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM polyport_webhook_deliveries "
            "WHERE endpoint_id = ? AND event_id = ?",
            (endpoint_id, event_id),
        ).fetchone()
        return delivery_from_row(row) if row else None

    async def attempts(self, endpoint_id: str, event_id: str) -> list[Attempt]:
        rows = self.db.conn.execute(
            "SELECT number, time, response_code, latency, error, response_body "
            "FROM polyport_webhook_attempts WHERE endpoint_id = ? AND event_id = ? ORDER BY number",
            (endpoint_id, event_id),
        ).fetchall()
        found = [Attempt(*r) for r in rows]
        last = self._delivery(endpoint_id, event_id)
        if (
            last is not None
            and last.status == "delivered"
            and last.last_at is not None
            and all(a.number != last.attempts for a in found)
        ):
            found.append(
                Attempt(
                    last.attempts,
                    last.last_at,
                    last.response_code,
                    last.latency,
                    last.error,
                    last.response_body,
                )
            )
        return found

    async def requeue(self, endpoint_id: str, event_id: str, now: float) -> bool:
        # A success lives only in the delivery row (see record); keep it in the history.
        self.db.conn.execute(
            f"INSERT OR IGNORE INTO polyport_webhook_attempts ({_ATTEMPT_COLUMNS}) "
            "SELECT endpoint_id, event_id, attempts, last_at, response_code, latency, error, "
            "response_body FROM polyport_webhook_deliveries WHERE endpoint_id = ? "
            "AND event_id = ? AND status = 'delivered' AND last_at IS NOT NULL",
            (endpoint_id, event_id),
        )
        cursor = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET status = 'pending', next_at = ?, "
            "retry_base = attempts, lease_owner = NULL, lease_until = NULL "
            "WHERE endpoint_id = ? AND event_id = ? "
            "AND (status != 'pending' OR lease_owner IS NULL)",
            (now, endpoint_id, event_id),
        )
        self.db.commit()
        return cursor.rowcount > 0

    async def recover(self, endpoint_id: str, since: float, until: float, now: float) -> int:
        cursor = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET status = 'pending', next_at = ?, "
            "retry_base = attempts, lease_owner = NULL, lease_until = NULL "
            "WHERE endpoint_id = ? AND status = 'failed' AND created >= ? AND created < ?",
            (now, endpoint_id, since, until),
        )
        self.db.commit()
        return cursor.rowcount


__all__ = ["SqliteWebhookStore"]
