"""Delivery outcomes on one database shared by two nodes: a final state never changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.webhooks import SqliteWebhookStore
from polyport.webhooks.records import AttemptResult, Message, Secret, WebhookEndpoint

T0 = 1_000_000.0


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SqliteWebhookStore, SqliteWebhookStore]]:
    """Two nodes' stores, each with its own connection to one file."""
    path = tmp_path / "outbox.sqlite3"
    a = SqliteWebhookStore(SqliteDatabase(path), owner="node-a")
    b = SqliteWebhookStore(SqliteDatabase(path), owner="node-b")
    a.open()
    b.open()
    endpoint = WebhookEndpoint(
        id="ep_1",
        url="http://127.0.0.1:9/hook",
        description="",
        event_types=(),
        secrets=(Secret("whsec_" + "A" * 32),),
        enabled=True,
        created=T0,
        updated=T0,
    )
    a.save_endpoint(endpoint, new=True)
    a.add_single(Message("ev_1", "orders.created", T0, b"{}"), "ep_1", T0)
    yield a, b
    a.close()
    b.close()


def outcome(store: SqliteWebhookStore, status: str, number: int, at: float) -> None:
    store.record(
        AttemptResult(
            "ep_1",
            "ev_1",
            number,
            at,
            status,  # type: ignore[arg-type]
            at + 5 if status == "pending" else None,
            200 if status == "delivered" else 500,
            0.01,
            None if status == "delivered" else f"{status} by {store.owner}",
            None,
        )
    )
    store.flush()
    store.db.commit()


def test_a_late_outcome_never_overwrites_a_final_one(
    stores: tuple[SqliteWebhookStore, SqliteWebhookStore],
) -> None:
    """A's lease runs out, B takes over and delivers; A's late failure or retry is dropped."""
    a, b = stores
    assert [c.event_id for c in a.claim_due(T0, 10, lease_until=T0 + 1)] == ["ev_1"]
    assert b.claim_due(T0 + 0.5, 10, lease_until=T0 + 10) == []  # A's lease holds
    assert [c.event_id for c in b.claim_due(T0 + 2, 10, lease_until=T0 + 10)] == ["ev_1"]
    outcome(b, "delivered", 1, T0 + 3)
    for late in ("failed", "pending"):
        outcome(a, late, 1, T0 + 4)
        delivery = b.delivery("ep_1", "ev_1")
        assert delivery is not None
        assert (delivery.status, delivery.response_code, delivery.error) == ("delivered", 200, None)
    assert a.claim_due(T0 + 100, 10, lease_until=T0 + 200) == []  # nothing left to attempt


def test_a_failed_delivery_stays_failed_until_replayed(
    stores: tuple[SqliteWebhookStore, SqliteWebhookStore],
) -> None:
    """B fails it for good; A, still holding a stale claim, cannot revive it."""
    a, b = stores
    a.claim_due(T0, 10, lease_until=T0 + 1)
    b.claim_due(T0 + 2, 10, lease_until=T0 + 10)
    outcome(b, "failed", 1, T0 + 3)
    outcome(a, "delivered", 1, T0 + 4)
    delivery = a.delivery("ep_1", "ev_1")
    assert delivery is not None and delivery.status == "failed"
    # Only an explicit replay starts a new round.
    assert a.requeue("ep_1", "ev_1", T0 + 5)
    assert [c.event_id for c in b.claim_due(T0 + 6, 10, lease_until=T0 + 20)] == ["ev_1"]
