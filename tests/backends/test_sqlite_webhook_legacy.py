"""A SQLite file from before the webhook store rode on the work queue: every field survives."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
from dataclasses import astuple
from pathlib import Path

import orjson

from polyport.backends.memory import MemoryEventLog
from polyport.backends.sqlite import SqliteDatabase, SqliteRecordStore, SqliteWorkQueue
from polyport.core.webhookqueue import QueuedWebhookStore
from polyport.core.webhookstore import (
    Attempt,
    AttemptResult,
    Message,
    Owner,
    Secret,
    WebhookEndpoint,
)
from polyport.webhooks.encryption import SecretCipher

#: The tables as ``backends/sqlite/webhook_rows.py`` made them, before the work queue.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS polyport_webhook_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS polyport_webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    event_types TEXT NOT NULL,
    secrets TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    disabled_reason TEXT,
    disabled_at REAL,
    failing_since REAL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS polyport_webhook_messages (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS polyport_webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_base INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    lease_owner TEXT,
    lease_until REAL,
    last_at REAL,
    response_code INTEGER,
    latency REAL,
    response_body TEXT,
    error TEXT,
    PRIMARY KEY (endpoint_id, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS polyport_webhook_due
    ON polyport_webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS polyport_webhook_log
    ON polyport_webhook_deliveries (endpoint_id, created);
CREATE INDEX IF NOT EXISTS polyport_webhook_by_event
    ON polyport_webhook_deliveries (event_id);
CREATE TABLE IF NOT EXISTS polyport_webhook_attempts (
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    time REAL NOT NULL,
    response_code INTEGER,
    latency REAL,
    error TEXT,
    response_body TEXT,
    PRIMARY KEY (endpoint_id, event_id, number)
) WITHOUT ROWID;
"""

T0 = 1_700_000_000.0
#: Leases taken here last the whole test.
FAR = T0 + 100_000
KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
OLD_TABLES = {
    "polyport_webhook_meta",
    "polyport_webhook_endpoints",
    "polyport_webhook_messages",
    "polyport_webhook_deliveries",
    "polyport_webhook_attempts",
}

SEALED = WebhookEndpoint(
    id="ep_a",
    url="https://example.com/a",
    description="orders to the ledger",
    event_types=("orders.+", "*.paid"),
    secrets=(Secret("whsec_" + "A" * 32), Secret("whsec_" + "B" * 32, T0 + 600)),
    enabled=True,
    created=T0 - 100,
    updated=T0 - 50,
    failing_since=T0 - 10,
    owner=Owner("alice", ("orders:read", "payments:read"), "key"),
)
PLAIN = WebhookEndpoint(
    id="ep_b",
    url="https://example.com/b",
    description="",
    event_types=(),
    secrets=(Secret("whsec_" + "C" * 32),),
    enabled=False,
    created=T0 - 90,
    updated=T0 - 5,
    disabled_reason="by hand",
    disabled_at=T0 - 5,
    owner=None,
)

#: ``(endpoint, event, type, created, status, attempts, retry_base, next_at, lease_owner,
#: lease_until, last_at, response_code, latency, response_body, error)``
DELIVERIES = [
    # delivered at the second attempt (the first, a 500, is in the history)
    ("ep_a", "e:1", "orders.created", T0 + 1, "delivered", 2, 0, None, None, None,
     T0 + 9, 200, 0.012, "ok", None),
    # failed for good after three attempts
    ("ep_a", "e:2", "orders.paid", T0 + 2, "failed", 3, 0, None, None, None,
     T0 + 20, 500, 0.5, "boom", "the endpoint answered 500"),
    # waiting for its second attempt
    ("ep_a", "e:3", "orders.created", T0 + 3, "pending", 1, 0, T0 + 300, None, None,
     T0 + 4, None, None, None, "no answer within 15 s"),
    # being attempted by a node when the file was copied (same creation time as e:3)
    ("ep_a", "e:4", "orders.created", T0 + 3, "pending", 0, 0, T0 + 10, "node-1", T0 + 60,
     None, None, None, None, None),
    # delivered, then replayed: a second round, due later
    ("ep_a", "e:5", "orders.paid", T0 + 5, "pending", 1, 1, T0 + 50, None, None,
     T0 + 6, 204, 0.003, "", None),
    # a test message, waiting
    ("ep_a", "test_1", "webhooks.test", T0 + 6, "pending", 0, 0, T0 + 6, None, None,
     None, None, None, None, None),
    # its message was lost: it can only fail
    ("ep_a", "e:lost", "orders.created", T0 + 7, "pending", 0, 0, T0 + 7, None, None,
     None, None, None, None, None),
    # failed when its endpoint was disabled, never attempted
    ("ep_b", "e:1", "orders.created", T0 + 1, "failed", 0, 0, None, None, None,
     None, None, None, None, "endpoint disabled: by hand"),
]  # fmt: skip
#: ``(endpoint, event, number, time, response_code, latency, error, response_body)``
ATTEMPTS = [
    ("ep_a", "e:1", 1, T0 + 2, 500, 0.1, "the endpoint answered 500", "no"),
    ("ep_a", "e:2", 1, T0 + 3, None, None, "cannot connect: refused", None),
    ("ep_a", "e:2", 2, T0 + 8, 502, 0.2, "the endpoint answered 502", "bad gateway"),
    ("ep_a", "e:2", 3, T0 + 20, 500, 0.5, "the endpoint answered 500", "boom"),
    ("ep_a", "e:3", 1, T0 + 4, None, None, "no answer within 15 s", None),
    ("ep_a", "e:5", 1, T0 + 6, 204, 0.003, None, ""),
]


def message(event_id: str, event_type: str, at: float) -> Message:
    return Message(event_id, event_type, at, b'{"id":"%s","data":{}}' % event_id.encode())


MESSAGES = {d[1]: message(d[1], d[2], d[3] - 0.5) for d in DELIVERIES if d[1] not in ("e:lost",)}


def old_file(path: Path, *, with_owner_column: bool = True) -> None:
    """A database as a node of before wrote it."""
    schema = OLD_SCHEMA if with_owner_column else OLD_SCHEMA.replace(",\n    owner TEXT\n", "\n")
    cipher = SecretCipher([KEY])
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(schema)
        for record, sealed in ((SEALED, True), (PLAIN, False)):
            secrets = orjson.dumps([[s.value, s.expires] for s in record.secrets]).decode()
            owner = record.owner
            row = [
                record.id,
                record.url,
                record.description,
                orjson.dumps(list(record.event_types)).decode(),
                cipher.seal(secrets) if sealed else secrets,
                int(record.enabled),
                record.created,
                record.updated,
                record.disabled_reason,
                record.disabled_at,
                record.failing_since,
            ]
            if with_owner_column:
                row.append(
                    None
                    if owner is None
                    else orjson.dumps([owner.subject, list(owner.scopes), owner.via]).decode()
                )
            conn.execute(
                f"INSERT INTO polyport_webhook_endpoints VALUES ({','.join('?' * len(row))})",
                row,
            )
        conn.executemany(
            "INSERT INTO polyport_webhook_messages VALUES (?, ?, ?, ?)",
            [(m.event_id, m.type, m.time, m.body) for m in MESSAGES.values()]
            + [("e:orphan", "orders.created", T0, b"{}")],  # owed to nobody: not moved
        )
        conn.executemany(
            f"INSERT INTO polyport_webhook_deliveries VALUES ({','.join('?' * 15)})", DELIVERIES
        )
        conn.executemany("INSERT INTO polyport_webhook_attempts VALUES (?,?,?,?,?,?,?,?)", ATTEMPTS)
        conn.executemany(
            "INSERT INTO polyport_webhook_meta VALUES (?, ?)",
            [("endpoints_version", "7"), ("fanout", "42")],
        )


def store_over(path: Path) -> QueuedWebhookStore:
    db = SqliteDatabase(path)
    return QueuedWebhookStore(
        SqliteWorkQueue(db),
        SqliteRecordStore(db),
        log=MemoryEventLog(),
        follows_log=True,
        seal=SecretCipher([KEY]),
    )


def tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


async def test_every_field_of_an_older_file_survives_the_move(tmp_path: Path) -> None:
    """Endpoints (sealed or not), deliveries in every state, their histories, rounds,
    leases and messages, the cursor, the log's order: as they were; the old tables gone."""
    path = tmp_path / "old.sqlite3"
    old_file(path)
    store = store_over(path)
    await store.open()
    try:
        assert await store.endpoints() == [SEALED, PLAIN]
        assert await store.plaintext_count() == 1
        assert await store.fanout_cursor() == 42
        assert await store.endpoints_version() > 0

        for row in DELIVERIES:
            endpoint_id, event_id, event_type, created, status, attempts, retry_base = row[:7]
            next_at, _, _, last_at, code, latency, body, error = row[7:]
            found = await store.delivery(endpoint_id, event_id)
            assert found is not None, row
            view = astuple(found)
            view = view[:8] + view[9:]  # all but the seq
            if status == "failed" or status == "delivered":
                next_at = None
            expected = (endpoint_id, event_id, event_type, created, status, attempts)
            expected += (retry_base, next_at, last_at, code, latency, body, error)
            assert view == expected, row

        for endpoint_id, event_id in {(a[0], a[1]) for a in ATTEMPTS}:
            history = [
                Attempt(*a[2:6], a[6], a[7]) for a in ATTEMPTS if a[:2] == (endpoint_id, event_id)
            ]
            if event_id == "e:1":  # the success lived in the delivery row: it is the last
                history.append(Attempt(2, T0 + 9, 200, 0.012, None, "ok"))
            assert await store.attempts(endpoint_id, event_id) == history, event_id

        # The log keeps its order: newest first by (created, event id).
        listed = [d.event_id for d in await store.deliveries("ep_a", limit=100)]
        ordered = sorted((d for d in DELIVERIES if d[0] == "ep_a"), key=lambda d: (d[3], d[1]))
        assert listed == [d[1] for d in reversed(ordered)]
        page = await store.deliveries("ep_a", limit=3)
        rest = await store.deliveries("ep_a", limit=100, before=page[-1].seq)
        assert [d.event_id for d in page + rest] == listed

        # What was due is due, with its message; the lease of node-1 holds until T0 + 60.
        due = {c.event_id: c for c in await store.claim_due("new", T0 + 30, 100, FAR)}
        assert set(due) == {"test_1", "e:lost"}
        assert due["test_1"].message == MESSAGES["test_1"]
        assert due["e:lost"].message is None
        settled = [
            AttemptResult(due["test_1"], 1, T0 + 31, "delivered", None, 200, 0.01, None, "ok"),
            AttemptResult(due["e:lost"], 1, T0 + 31, "failed", None, None, None, "lost", None),
        ]
        assert await store.record(settled) == 2
        later = {c.event_id: c for c in await store.claim_due("new", T0 + 61, 100, FAR)}
        assert set(later) == {"e:4", "e:5"}
        assert (later["e:4"].attempts, later["e:4"].message) == (0, MESSAGES["e:4"])
        assert (later["e:5"].attempts, later["e:5"].retry_base) == (1, 1)
        waiting = await store.claim_due("new", T0 + 300, 100, FAR)
        assert [(c.event_id, c.attempts, c.message) for c in waiting] == [
            ("e:3", 1, MESSAGES["e:3"])
        ]
        assert await store.claim_due("new", T0 + 10_000, 100, T0 + 10_030) == []
        # A delivered one replays with its message and keeps counting.
        assert await store.requeue("ep_a", "e:1", T0 + 400)
        (replayed,) = await store.claim_due("new", T0 + 400, 100, FAR)
        assert (replayed.attempts, replayed.retry_base) == (2, 2)
        assert replayed.message == MESSAGES["e:1"]
    finally:
        await store.close()
    assert not tables(path) & OLD_TABLES
    with contextlib.closing(sqlite3.connect(path)) as conn:
        moved = conn.execute("SELECT count(*) FROM polyport_work").fetchone()[0]
    assert moved == len(DELIVERIES)  # and not the message owed to nobody


async def test_a_file_from_before_owners_moves_too(tmp_path: Path) -> None:
    """The first schema had no owner column: its endpoints move with no owner."""
    path = tmp_path / "older.sqlite3"
    old_file(path, with_owner_column=False)
    store = store_over(path)
    await store.open()
    try:
        found = await store.endpoint("ep_a")
        assert found is not None and found.owner is None and found.url == SEALED.url
    finally:
        await store.close()
    assert not tables(path) & OLD_TABLES


async def test_a_second_open_finds_nothing_to_move(tmp_path: Path) -> None:
    """Moved once: a restart reads what was moved, and moves nothing again."""
    path = tmp_path / "old.sqlite3"
    old_file(path)
    for _ in range(2):
        store = store_over(path)
        await store.open()
        try:
            assert [e.id for e in await store.endpoints()] == ["ep_a", "ep_b"]
            assert len(await store.deliveries("ep_a", limit=100)) == 7
        finally:
            await store.close()
