"""The webhook outbox in SQLite: endpoints, messages, deliveries, attempts, leases.

It shares the node's :class:`~polyport.backends.sqlite.db.SqliteDatabase`
with the event log, so deliveries written while an event is being published
join the event's group transaction (see :mod:`polyport.edges.webhooks.outbox`).
Statements run on the event loop's thread, like every SQLite statement here.

**Leases.** A delivery being attempted carries ``lease_owner`` and
``lease_until``. Claiming is one ``UPDATE … RETURNING`` over rows whose lease
is absent or expired; SQLite runs one writer at a time, so two nodes sharing
the file can never both claim the same ``(endpoint, event)``. A node that dies
leaves leases that simply expire.

**Secrets at rest.** An endpoint's signing secrets are stored sealed by a
:class:`~polyport.webhooks.encryption.SecretCipher` (encrypted with the key of
``webhooks.secret_keys``; as they are when no key is configured).

**Final states.** ``delivered`` and ``failed`` never change through the
delivery pipeline: an outcome is written only by the holder of the lease and
only over a ``pending`` row, so a node whose lease ran out cannot write over
the outcome of the node that took over. Replay and recovery (explicit
requests of the endpoint's owner) are the only way back to ``pending``: they
start a new round of attempts, and the earlier ones stay in the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.migrate import add_column
from polyport.backends.sqlite.webhook_rows import (
    ADDED_COLUMNS,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    SCHEMA,
    delivery_from_row,
    endpoint_from_row,
    endpoint_row,
)
from polyport.webhooks.encryption import PREFIX, SecretCipher
from polyport.webhooks.records import (
    Attempt,
    AttemptResult,
    Claim,
    Delivery,
    DeliveryStatus,
    Message,
    WebhookEndpoint,
)


class SqliteWebhookStore:
    """The webhook outbox's tables in the node's SQLite database.

    ``owner`` names this process in leases; it must differ between nodes that
    share the file (a random one per process is the default of the edge).
    """

    def __init__(self, db: SqliteDatabase, owner: str, cipher: SecretCipher | None = None) -> None:
        self.db = db
        self.owner = owner
        #: Seals endpoint secrets at rest (a cipher without keys stores them as they are).
        self.cipher = cipher if cipher is not None else SecretCipher(())
        self._results: list[AttemptResult] = []

    def open(self) -> None:
        conn = self.db.open()
        conn.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns:
                if name not in present:  # a file from before the column: NULL in old rows
                    add_column(conn, table, name, declaration)

    def close(self) -> None:
        self.flush()
        self.db.close()

    # -- meta -----------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.db.conn.execute(
            "SELECT value FROM polyport_webhook_meta WHERE key = ?", (key,)
        ).fetchone()
        return row[0] if row else None

    def endpoints_version(self) -> int:
        """Bumped by every endpoint change, so other nodes notice and reload."""
        return int(self.meta("endpoints_version") or 0)

    # -- endpoints ------------------------------------------------------------------

    def save_endpoint(self, endpoint: WebhookEndpoint, *, new: bool = False) -> None:
        """Insert or replace an endpoint, committed before returning."""
        verb = "INSERT" if new else "INSERT OR REPLACE"
        marks = ",".join("?" * 12)
        with self.db.transaction() as tx:
            tx.execute(
                f"{verb} INTO polyport_webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ({marks})",
                endpoint_row(endpoint, self.cipher),
            )
            self._bump(tx)
        self.db.commit()

    def reseal(self) -> int:
        """Encrypt every endpoint's secrets under the cipher's current key; how many changed.

        Run at start: plain rows (written before a key was configured) and rows
        sealed with an older key of the list are rewritten, in one transaction.
        Raises :class:`SecretsLocked` when a row opens with no configured key.
        """
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

    def plaintext_count(self) -> int:
        """How many endpoints keep their secrets unencrypted."""
        row = self.db.conn.execute(
            "SELECT count(*) FROM polyport_webhook_endpoints WHERE secrets NOT LIKE ?",
            (PREFIX + "%",),
        ).fetchone()
        return int(row[0])

    def _bump(self, tx: Any) -> None:
        tx.execute(
            "INSERT INTO polyport_webhook_meta VALUES ('endpoints_version', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Forget an endpoint with its deliveries and attempts."""
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

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self.db.conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM polyport_webhook_endpoints WHERE id = ?",
            (endpoint_id,),
        ).fetchone()
        return endpoint_from_row(row, self.cipher) if row else None

    def endpoints(
        self, limit: int | None = None, after: str | None = None
    ) -> list[WebhookEndpoint]:
        """Endpoints by id, ``limit`` of them after the id ``after``."""
        rows = self.db.conn.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM polyport_webhook_endpoints WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (after or "", -1 if limit is None else limit),
        ).fetchall()
        return [endpoint_from_row(r, self.cipher) for r in rows]

    def set_failing_since(self, endpoint_id: str, since: float | None) -> None:
        self.db.group_write(
            "UPDATE polyport_webhook_endpoints SET failing_since = ? WHERE id = ?",
            (since, endpoint_id),
        )

    def disable(self, endpoint_id: str, reason: str, at: float) -> int:
        """Disable an endpoint; its pending deliveries fail (``recover`` brings them back)."""
        self.flush()
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

    # -- fan-out --------------------------------------------------------------------

    def fan_out(
        self,
        messages: Iterable[Message],
        deliveries: Sequence[tuple[str, str, str, float]],
        *,
        leased_until: float | None,
        cursor: str | None,
    ) -> None:
        """Record messages and the deliveries they owe, and move the fan-out cursor.

        All in one transaction (the open group one, if any): deliveries and
        the cursor that says they exist commit together. Deliveries are
        ``(endpoint_id, event_id, type, created)``, due at once, leased to this
        node until ``leased_until`` (None: left for whoever claims them first).
        """
        owner = self.owner if leased_until is not None else None
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
                [(e, i, t, c, c, owner, leased_until) for e, i, t, c in deliveries],
            )
            if cursor is not None:
                tx.execute(
                    "INSERT OR REPLACE INTO polyport_webhook_meta VALUES ('fanout', ?)", (cursor,)
                )

    def fanout_cursor(self) -> int:
        """The ``seq`` of the last logged event whose deliveries were recorded."""
        return int(self.meta("fanout") or 0)

    def logged_events_after(
        self, seq: int, limit: int
    ) -> list[tuple[int, str, int, str, str, float, bytes]]:
        """Events of the SQLite event log after ``seq``, oldest first.

        ``(seq, channel, offset, epoch, type, time, data)``: what a node re-fans
        out at start, in case it stopped between an event's commit and its
        deliveries' (they normally share a transaction).
        """
        rows = self.db.conn.execute(
            "SELECT e.seq, e.channel, e.offset, c.epoch, e.type, e.time, e.data "
            "FROM polyport_events e JOIN polyport_channels c ON c.name = e.channel "
            "WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [(a, b, c, d, e, f, bytes(g)) for a, b, c, d, e, f, g in rows]

    def messages(self, event_ids: Iterable[str]) -> dict[str, Message]:
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

    # -- leases ---------------------------------------------------------------------

    def claim_due(self, now: float, limit: int, lease_until: float) -> list[Claim]:
        """Lease up to ``limit`` due deliveries nobody holds (or whose lease expired)."""
        self.flush()
        rows = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET lease_owner = ?, lease_until = ? "
            "WHERE (endpoint_id, event_id) IN ("
            "  SELECT endpoint_id, event_id FROM polyport_webhook_deliveries "
            "  WHERE status = 'pending' AND next_at <= ? "
            "  AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?) "
            "RETURNING endpoint_id, event_id, attempts, retry_base",
            (self.owner, lease_until, now, now, limit),
        ).fetchall()
        self.db.commit()
        return [Claim(e, i, a, b, lease_until) for e, i, a, b in rows]

    def extend_lease(self, endpoint_id: str, event_id: str, until: float) -> bool:
        """Push this node's lease further; False if the lease is no longer ours."""
        cursor = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET lease_until = ? "
            "WHERE endpoint_id = ? AND event_id = ? AND lease_owner = ? AND status = 'pending'",
            (until, endpoint_id, event_id, self.owner),
        )
        return cursor.rowcount > 0

    def extend_leases(self, until: float) -> int:
        """Push every lease this node holds to ``until`` (deliveries queued or in flight).

        Deliveries wait in a node's memory for a free slot of their endpoint; the
        lease must outlive that wait, or another node would send them too.
        """
        cursor = self.db.group_write(
            "UPDATE polyport_webhook_deliveries SET lease_until = ? "
            "WHERE lease_owner = ? AND status = 'pending' AND lease_until < ?",
            (until, self.owner, until),
        )
        return cursor.rowcount

    def release(self, keys: Iterable[tuple[str, str]]) -> None:
        """Give up leases on deliveries this node will not attempt (it is stopping)."""
        self.flush()
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE polyport_webhook_deliveries SET lease_owner = NULL, lease_until = NULL "
                "WHERE endpoint_id = ? AND event_id = ? AND lease_owner = ?",
                [(e, i, self.owner) for e, i in keys],
            )
        self.db.commit()

    def next_due(self) -> float | None:
        """When the earliest pending delivery is due, leased or not."""
        row = self.db.conn.execute(
            "SELECT min(next_at) FROM polyport_webhook_deliveries WHERE status = 'pending'"
        ).fetchone()
        return row[0] if row else None

    # -- results ----------------------------------------------------------------------

    def record(self, result: AttemptResult) -> None:
        """Queue an attempt's outcome; written with the others of this loop iteration."""
        self._results.append(result)

    def flush(self) -> None:
        """Write the queued attempt outcomes (into the group transaction)."""
        if not self._results:
            return
        results, self._results = self._results, []
        self.db.group_write_many(
            "UPDATE polyport_webhook_deliveries SET status = ?, attempts = max(attempts, ?), "
            "next_at = ?, lease_owner = NULL, lease_until = NULL, last_at = ?, "
            "response_code = ?, latency = ?, response_body = ?, error = ? "
            "WHERE endpoint_id = ? AND event_id = ? AND lease_owner = ? AND status = 'pending'",
            [
                (
                    r.status,
                    r.number,
                    r.next_at,
                    r.time,
                    r.response_code,
                    r.latency,
                    r.response_body,
                    r.error,
                    r.endpoint_id,
                    r.event_id,
                    self.owner,
                )
                for r in results
            ],
        )
        self.db.group_write_many(
            "INSERT OR IGNORE INTO polyport_webhook_attempts "
            "(endpoint_id, event_id, number, time, response_code, latency, error, response_body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.endpoint_id,
                    r.event_id,
                    r.number,
                    r.time,
                    r.response_code,
                    r.latency,
                    r.error,
                    r.response_body,
                )
                for r in results
                # A success is the delivery row's own last attempt: one row less per
                # delivery in the common case (see :meth:`attempts`).
                if r.status != "delivered"
            ],
        )

    # -- the delivery log -------------------------------------------------------------

    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first, optionally of one status."""
        self.flush()
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

    def delivery(self, endpoint_id: str, event_id: str) -> Delivery | None:
        self.flush()
        row = self.db.conn.execute(
            f"SELECT {DELIVERY_COLUMNS} FROM polyport_webhook_deliveries "
            "WHERE endpoint_id = ? AND event_id = ?",
            (endpoint_id, event_id),
        ).fetchone()
        return delivery_from_row(row) if row else None

    def attempts(self, endpoint_id: str, event_id: str) -> list[Attempt]:
        self.flush()
        rows = self.db.conn.execute(
            "SELECT number, time, response_code, latency, error, response_body "
            "FROM polyport_webhook_attempts WHERE endpoint_id = ? AND event_id = ? ORDER BY number",
            (endpoint_id, event_id),
        ).fetchall()
        found = [Attempt(*r) for r in rows]
        last = self.delivery(endpoint_id, event_id)
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

    def requeue(self, endpoint_id: str, event_id: str, now: float) -> bool:
        """Replay: make a delivery due now, as a fresh round of attempts."""
        self.flush()
        # A success lives only in the delivery row (see flush); keep it in the history.
        self.db.conn.execute(
            "INSERT OR IGNORE INTO polyport_webhook_attempts "
            "(endpoint_id, event_id, number, time, response_code, latency, error, response_body) "
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

    def recover(self, endpoint_id: str, since: float, until: float, now: float) -> int:
        """Requeue every failed delivery of an endpoint created in ``[since, until)``."""
        self.flush()
        cursor = self.db.conn.execute(
            "UPDATE polyport_webhook_deliveries SET status = 'pending', next_at = ?, "
            "retry_base = attempts, lease_owner = NULL, lease_until = NULL "
            "WHERE endpoint_id = ? AND status = 'failed' AND created >= ? AND created < ?",
            (now, endpoint_id, since, until),
        )
        self.db.commit()
        return cursor.rowcount

    def add_single(self, message: Message, endpoint_id: str, now: float) -> None:
        """A message for one endpoint only (a test event), committed at once."""
        self.fan_out(
            [message],
            [(endpoint_id, message.event_id, message.type, now)],
            leased_until=None,
            cursor=None,
        )
        self.db.commit()

    def purge(self, before: float) -> int:
        """Drop finished deliveries created before ``before``, and messages nobody owes."""
        self.flush()
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


__all__ = ["DeliveryStatus", "SqliteWebhookStore"]
