"""Files from before the webhook store rode on the work queue: their tables, moved.

Until then a node kept webhooks in five tables of its own
(``polyport_webhook_endpoints``, ``_messages``, ``_deliveries``, ``_attempts``
and ``_meta``). :func:`move_legacy_webhooks` moves their rows, at the first
open of the record store, into what
:class:`~polyport.core.webhookqueue.QueuedWebhookStore` reads — endpoints,
histories and the cursor into ``polyport_records``, deliveries with their
messages into ``polyport_work`` — laid out as :mod:`polyport.core.webhooklayout`
says, and drops them: one transaction, so a crash leaves either the old
tables or the moved rows. Two nodes opening one old file at once: the second
finds the tables gone.

Every field a reader saw survives: a pending delivery stays due when it was,
one leased to a node stays leased to it until the lease ends (then anyone
claims it), outcomes, rounds and histories keep their numbers, and the
delivery log keeps its order (``seq`` follows ``(created, event_id)``).
Messages no delivery owes are dropped, as a purge would have.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

import orjson

from polyport.backends.sqlite.workqueue import SCHEMA as WORK_SCHEMA
from polyport.core.webhooklayout import (
    FANOUT_KEY,
    VERSION_KEY,
    Outcome,
    attempt_key,
    encode_message,
    encode_outcome,
    encode_round,
    endpoint_key,
    queue_of,
    round_key,
    stored_fields,
)
from polyport.core.webhookstore import Message, Owner, WebhookEndpoint

#: The tables of older files, dropped once moved.
TABLES = (
    "polyport_webhook_attempts",
    "polyport_webhook_deliveries",
    "polyport_webhook_messages",
    "polyport_webhook_endpoints",
    "polyport_webhook_meta",
)

_PUT = "INSERT OR REPLACE INTO polyport_records (key, value) VALUES (?, ?)"


def move_legacy_webhooks(conn: sqlite3.Connection) -> None:
    """Move the webhook tables of an older file into the records and the work queue."""
    if not _exists(conn, "polyport_webhook_endpoints"):
        return
    # Called as the record store opens, right after its own schema: no group is open.
    conn.executescript(WORK_SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _exists(conn, "polyport_webhook_endpoints"):  # not moved by another node meanwhile
            _move(conn)
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return found is not None


def _move(conn: sqlite3.Connection) -> None:
    _move_endpoints(conn)
    created = _move_deliveries(conn)
    rows = conn.execute(
        "SELECT endpoint_id, event_id, number, time, response_code, latency, error, "
        "response_body FROM polyport_webhook_attempts ORDER BY endpoint_id, event_id, number"
    ).fetchall()
    conn.executemany(
        _PUT,
        [
            (
                attempt_key(endpoint_id, created[endpoint_id, event_id], event_id, number),
                encode_outcome(Outcome(number, at, code, latency, error, body)).encode(),
            )
            for endpoint_id, event_id, number, at, code, latency, error, body in rows
            if (endpoint_id, event_id) in created  # a delivery's history, not an orphan
        ],
    )
    meta = dict(conn.execute("SELECT key, value FROM polyport_webhook_meta").fetchall())
    conn.execute(_PUT, (VERSION_KEY, b""))
    if "fanout" in meta:
        conn.execute(_PUT, (FANOUT_KEY, str(int(meta["fanout"])).encode()))


def _move_endpoints(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(polyport_webhook_endpoints)")}
    owner = "owner" if "owner" in columns else "NULL"  # added after the first schema
    rows = conn.execute(
        "SELECT id, url, description, event_types, secrets, enabled, created, updated, "
        f"disabled_reason, disabled_at, failing_since, {owner} FROM polyport_webhook_endpoints"
    ).fetchall()
    moved = []
    for row in rows:
        endpoint_id, url, description, event_types, sealed, enabled = row[:6]
        created, updated, disabled_reason, disabled_at, failing_since, owned = row[6:]
        record = WebhookEndpoint(
            id=endpoint_id,
            url=url,
            description=description,
            event_types=tuple(orjson.loads(event_types)),
            secrets=(),  # kept as stored (sealed or not): the start reseals them
            enabled=bool(enabled),
            created=created,
            updated=updated,
            disabled_reason=disabled_reason,
            disabled_at=disabled_at,
            failing_since=failing_since,
            owner=None if owned is None else _owner(owned),
        )
        moved.append((endpoint_key(endpoint_id), orjson.dumps(stored_fields(record, sealed))))
    conn.executemany(_PUT, moved)


def _owner(text: str) -> Owner:
    subject, scopes, via = orjson.loads(text)
    return Owner(subject, tuple(scopes), via)


def _move_deliveries(conn: sqlite3.Connection) -> dict[tuple[str, str], float]:
    """Move every delivery with its message; each one's creation time, by its name."""
    rows = conn.execute(
        "SELECT d.endpoint_id, d.event_id, d.type, d.created, d.status, d.attempts, "
        "d.retry_base, d.next_at, d.lease_owner, d.lease_until, d.last_at, d.response_code, "
        "d.latency, d.response_body, d.error, m.time, m.body "
        "FROM polyport_webhook_deliveries d "
        "LEFT JOIN polyport_webhook_messages m ON m.event_id = d.event_id "
        "ORDER BY d.created, d.event_id"
    ).fetchall()
    items: list[tuple[Any, ...]] = []
    rounds: list[tuple[str, bytes]] = []
    created_of: dict[tuple[str, str], float] = {}
    for row in rows:
        endpoint_id, event_id, event_type, created, status, attempts, retry_base = row[:7]
        next_at, lease_owner, lease_until, last_at, code, latency, body, error = row[7:15]
        message_time, message_body = row[15:]
        created_of[endpoint_id, event_id] = created
        message = (
            None
            if message_body is None
            else Message(event_id, event_type, message_time, bytes(message_body))
        )
        outcome = None
        if attempts or any(v is not None for v in (last_at, code, latency, body, error)):
            outcome = encode_outcome(Outcome(attempts, last_at, code, latency, error, body))
        work: dict[str, Any] = {
            "status": "pending",
            "due": created if next_at is None else next_at,
            "lease": None,
            "owner": None,
            "claimed": None,
            "finished": None,
            "error": outcome,
            "result": None,
        }
        if status == "pending" and lease_owner is not None and lease_until is not None:
            # Held by a node: still its own until the lease ends, then anyone's.
            lease = secrets.token_hex(8)
            work.update(status="running", due=lease_until, lease=lease, owner=lease_owner)
            work["claimed"] = next_at  # the view's next attempt while running
        elif status == "delivered":
            work.update(status="done", finished=last_at or created, error=None)
            work["result"] = None if outcome is None else outcome.encode()
        elif status == "failed":
            work.update(status="dead", finished=last_at or created)
        items.append(
            (
                queue_of(endpoint_id),
                event_id,
                encode_message(message, event_type),
                work["status"],
                max(0, attempts - retry_base),
                created,
                work["due"],
                work["lease"],
                work["owner"],
                work["claimed"],
                work["finished"],
                work["error"],
                work["result"],
            )
        )
        if retry_base:
            rounds.append(
                (round_key(endpoint_id, created, event_id), encode_round(retry_base, None))
            )
    conn.executemany(
        "INSERT OR IGNORE INTO polyport_work (queue, key, payload, status, attempts, created, "
        "due, lease, owner, claimed, finished, error, result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        items,
    )
    conn.executemany(_PUT, rounds)
    return created_of


__all__ = ["TABLES", "move_legacy_webhooks"]
