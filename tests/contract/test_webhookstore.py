"""The webhook store: the shared contract over the composition on each embedded backend, and
what the composition keeps in its record store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.contract.webhookstore_contract import (
    T0,
    NodeFactory,
    WebhookStoreContract,
    endpoint,
    message,
    owed,
    result,
)

from polyport.backends.memory import MemoryEventLog, MemoryRecordStore, MemoryWorkQueue
from polyport.backends.sqlite import (
    SqliteDatabase,
    SqliteEventLog,
    SqliteRecordStore,
    SqliteWorkQueue,
)
from polyport.core.eventlog import EventLog
from polyport.core.records import RecordStore, scan_all
from polyport.core.webhookqueue import QueuedWebhookStore
from polyport.core.webhookstore import WebhookStore
from polyport.core.workqueue import WorkQueue
from polyport.webhooks.encryption import SecretCipher


class TestMemoryWebhookStore(WebhookStoreContract):
    """One process's memory: the nodes of a test share the log, the queue and the records,
    as nodes share a network engine."""

    @pytest.fixture
    def make_node(self) -> NodeFactory:
        shared: dict[str, tuple[MemoryEventLog, MemoryWorkQueue, MemoryRecordStore]] = {}

        def make(name: str = "store", *, keys: Sequence[str] = ()) -> tuple[EventLog, WebhookStore]:
            log, queue, records = shared.setdefault(
                name, (MemoryEventLog(), MemoryWorkQueue(), MemoryRecordStore())
            )
            store = QueuedWebhookStore(
                queue, records, log=log, follows_log=True, seal=SecretCipher(keys)
            )
            return log, store

        return make


class TestSqliteWebhookStore(WebhookStoreContract):
    """The embedded default: log, work queue and records on one connection, as a node has."""

    @pytest.fixture
    def make_node(self, tmp_path: Path) -> NodeFactory:
        def make(name: str = "store", *, keys: Sequence[str] = ()) -> tuple[EventLog, WebhookStore]:
            db = SqliteDatabase(tmp_path / f"{name}.sqlite3")
            log = SqliteEventLog(db)
            store = QueuedWebhookStore(
                SqliteWorkQueue(db),
                SqliteRecordStore(db),
                log=log,
                follows_log=True,
                seal=SecretCipher(keys),
            )
            return log, store

        return make


Parts = tuple[QueuedWebhookStore, WorkQueue, RecordStore]


@pytest.fixture
async def parts() -> Parts:
    """The composition over memory, with its two stores at hand."""
    queue, records = MemoryWorkQueue(), MemoryRecordStore()
    store = QueuedWebhookStore(
        queue, records, log=MemoryEventLog(), follows_log=False, seal=SecretCipher(())
    )
    await store.open()
    await store.save_endpoint(endpoint(), new=True)
    return store, queue, records


async def test_deliveries_are_the_endpoints_queue_and_histories_are_records(
    parts: Parts,
) -> None:
    """One item per event in ``webhooks/{endpoint}``; a failed attempt is a record; a
    success stays in its item until a replay copies it into the history."""
    store, queue, records = parts
    await store.fan_out([message("ev_1")], [owed("ev_1")], now=T0, cursor=None)
    item = await queue.get("webhooks/ep_1", "ev_1")
    assert item is not None and item.created == T0
    (claim,) = await store.claim_due("a", T0, 10, T0 + 30)
    await store.record([result(claim, "pending", 1, T0 + 1, next_at=T0 + 2, error="500")])
    (claim,) = await store.claim_due("a", T0 + 2, 10, T0 + 30)
    await store.record([result(claim, "delivered", 2, T0 + 3)])
    history = await scan_all(records, "webhooks/deliveries/ep_1/")
    assert [r.key.rsplit("/", 1)[1] for r in history] == ["000001"]
    assert await store.requeue("ep_1", "ev_1", T0 + 4)
    history = await scan_all(records, "webhooks/deliveries/ep_1/")
    assert [r.key.rsplit("/", 1)[1] for r in history] == ["000001", "000002", "round"]


async def test_purge_and_delete_leave_no_record_behind(parts: Parts) -> None:
    """The records of purged deliveries are swept; a deleted endpoint leaves none at all."""
    store, _, records = parts
    await store.save_endpoint(endpoint("ep_2"), new=True)
    for endpoint_id in ("ep_1", "ep_2"):
        await store.fan_out([message("ev_1")], [owed("ev_1", endpoint_id)], now=T0, cursor=None)
    for claim in await store.claim_due("a", T0, 10, T0 + 30):
        await store.record([result(claim, "failed", 1, T0 + 1, error="no")])
    assert len(await scan_all(records, "webhooks/deliveries/")) == 2
    assert await store.purge(T0 + 2) == 2
    assert await scan_all(records, "webhooks/deliveries/") == []
    await store.fan_out([message("ev_2")], [owed("ev_2", "ep_2")], now=T0, cursor=None)
    (claim,) = await store.claim_due("a", T0, 10, T0 + 30)
    await store.record([result(claim, "pending", 1, T0 + 1, next_at=T0 + 5, error="no")])
    assert await store.delete_endpoint("ep_2")
    assert await scan_all(records, "webhooks/deliveries/") == []
    assert [r.key for r in await scan_all(records, "webhooks/endpoints/")] == [
        "webhooks/endpoints/ep_1"
    ]


async def test_disabling_leaves_a_live_lease_to_its_holder(parts: Parts) -> None:
    """Waiting deliveries fail; one being attempted is its holder's to settle."""
    store, _, _ = parts
    await store.fan_out(
        [message("ev_1"), message("ev_2")], [owed("ev_1"), owed("ev_2")], now=T0, cursor=None
    )
    (held,) = await store.claim_due("a", T0, 1, T0 + 30)
    assert await store.disable("ep_1", "by hand", T0 + 1) == 1
    waiting = await store.delivery("ep_1", "ev_2")
    assert waiting is not None and waiting.status == "failed"
    assert await store.record([result(held, "delivered", 1, T0 + 2)]) == 1
    assert await store.claim_due("b", T0 + 100, 10, T0 + 130) == []
