"""The contract every webhook store passes, written once and subclassed per backend.

A backend's test module subclasses :class:`WebhookStoreContract` and gives
the ``make_node`` fixture: a factory of ``(event log, webhook store)`` pairs
built as a node builds them on that backend (the
:class:`~polyport.core.webhookqueue.QueuedWebhookStore` over its work queue
and record store), over storage of the test's own
(a file, a schema, a key prefix), where the same ``name`` reaches the same
storage — so a second pair is a second node sharing the store, and a pair
opened later is what a node restarted after a crash would find. ``keys``
are the ``webhooks.secret_keys`` the store seals endpoint secrets with.

Clocks are explicit (``T0``): the store keeps none of its own. Writes not
durable when they return are durable once the caller yields to its loop
(:func:`settle`), before another node looks.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from polyport.core.errors import Conflict
from polyport.core.eventlog import EventLog
from polyport.core.events import Pattern
from polyport.core.webhookstore import (
    AttemptResult,
    Claim,
    DeliveryStatus,
    Message,
    Owed,
    Owner,
    Secret,
    WebhookEndpoint,
    WebhookStore,
)
from polyport.webhooks.encryption import SecretsLocked

T0 = 1_000_000.0
KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
NEW_KEY = base64.urlsafe_b64encode(b"n" * 32).decode()
OTHER_KEY = base64.urlsafe_b64encode(b"o" * 32).decode()


class NodeFactory(Protocol):
    def __call__(
        self, name: str = "store", *, keys: Sequence[str] = ()
    ) -> tuple[EventLog, WebhookStore]: ...


class ViewOpener(Protocol):
    def __call__(
        self, name: str = "store", keys: Sequence[str] = ()
    ) -> AbstractAsyncContextManager[tuple[EventLog, WebhookStore]]: ...


async def settle() -> None:
    """Let writes that become durable once the caller yields do so."""
    await asyncio.sleep(0)


def endpoint(endpoint_id: str = "ep_1", **changes: object) -> WebhookEndpoint:
    record = WebhookEndpoint(
        id=endpoint_id,
        url=f"https://example.com/{endpoint_id}",
        description="",
        event_types=(),
        secrets=(Secret("whsec_" + "A" * 32),),
        enabled=True,
        created=T0,
        updated=T0,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def message(event_id: str, time: float = T0) -> Message:
    return Message(event_id, "orders.created", time, b'{"id":"%s"}' % event_id.encode())


def owed(event_id: str, endpoint_id: str = "ep_1", created: float = T0) -> Owed:
    return Owed(endpoint_id, event_id, "orders.created", created)


def result(
    claim: Claim,
    status: DeliveryStatus,
    number: int,
    at: float,
    *,
    next_at: float | None = None,
    error: str | None = None,
) -> AttemptResult:
    code = 200 if status == "delivered" else 500
    return AttemptResult(claim, number, at, status, next_at, code, 0.01, error, f"answer {number}")


def forged(claim: Claim) -> Claim:
    """The claim with a lease token that is not the current one."""
    return dataclasses.replace(claim, lease="not-the-lease")


class WebhookStoreContract:
    """Endpoints and secrets, the outbox after its events, leases, final states, the log."""

    @pytest.fixture
    def make_node(self) -> NodeFactory:
        raise NotImplementedError("a backend's subclass gives make_node")

    @pytest.fixture
    def view(self, make_node: NodeFactory) -> ViewOpener:
        """Another node on the same store, opened for the length of a ``with``."""

        @asynccontextmanager
        async def opened(
            name: str = "store", keys: Sequence[str] = ()
        ) -> AsyncIterator[tuple[EventLog, WebhookStore]]:
            log, store = make_node(name, keys=keys)
            await log.open()
            await store.open()
            try:
                yield log, store
            finally:
                await store.close()
                await log.close()

        return opened

    @pytest.fixture
    async def node(self, view: ViewOpener) -> AsyncIterator[tuple[EventLog, WebhookStore]]:
        async with view() as pair:
            yield pair

    @pytest.fixture
    async def store(self, node: tuple[EventLog, WebhookStore]) -> WebhookStore:
        """This node's store, with the endpoint ``ep_1`` saved."""
        await node[1].save_endpoint(endpoint(), new=True)
        return node[1]

    # -- endpoints ------------------------------------------------------------------

    async def test_an_endpoint_reads_back_as_saved(self, store: WebhookStore) -> None:
        """Every field comes back, secrets and owner included; unknown ids are None."""
        record = endpoint(
            "ep_2",
            event_types=("orders.+", "*.paid"),
            secrets=(Secret("whsec_" + "B" * 32), Secret("whsec_" + "C" * 32, T0 + 60)),
            owner=Owner("alice", ("orders:read",), "key"),
            description="orders to the ledger",
            failing_since=T0 + 1,
        )
        await store.save_endpoint(record, new=True)
        assert await store.endpoint("ep_2") == record
        assert await store.endpoint("ep_missing") is None

    async def test_endpoints_come_in_pages_by_id(self, store: WebhookStore) -> None:
        """Ordered by id, ``limit`` at a time, after the last id of the previous page."""
        for endpoint_id in ("ep_4", "ep_2", "ep_3"):
            await store.save_endpoint(endpoint(endpoint_id), new=True)
        assert [e.id for e in await store.endpoints()] == ["ep_1", "ep_2", "ep_3", "ep_4"]
        assert [e.id for e in await store.endpoints(limit=2)] == ["ep_1", "ep_2"]
        assert [e.id for e in await store.endpoints(limit=2, after="ep_2")] == ["ep_3", "ep_4"]

    async def test_a_new_endpoint_with_a_taken_id_is_a_conflict(self, store: WebhookStore) -> None:
        """``new`` never replaces; without it the endpoint is replaced."""
        with pytest.raises(Conflict):
            await store.save_endpoint(endpoint(url="https://example.com/other"), new=True)
        found = await store.endpoint("ep_1")
        assert found is not None and found.url == "https://example.com/ep_1"
        await store.save_endpoint(endpoint(url="https://example.com/other"))
        found = await store.endpoint("ep_1")
        assert found is not None and found.url == "https://example.com/other"

    async def test_every_endpoint_change_moves_the_version_other_nodes_see(
        self, store: WebhookStore, view: ViewOpener
    ) -> None:
        """Saving, disabling and deleting each move it; another node reads the same number."""
        seen = [await store.endpoints_version()]
        await store.save_endpoint(endpoint("ep_2"), new=True)
        seen.append(await store.endpoints_version())
        await store.disable("ep_2", "by hand", T0)
        seen.append(await store.endpoints_version())
        assert await store.delete_endpoint("ep_2") is True
        seen.append(await store.endpoints_version())
        assert seen == sorted(set(seen)), seen
        assert await store.delete_endpoint("ep_2") is False
        await settle()
        async with view() as (_, other):
            assert await other.endpoints_version() == await store.endpoints_version()
            assert [e.id for e in await other.endpoints()] == ["ep_1"]

    async def test_deleting_an_endpoint_forgets_its_deliveries(self, store: WebhookStore) -> None:
        """Its deliveries and their history go with it; nothing is left to claim."""
        await store.add_single(message("ev_1"), "ep_1", T0)
        await store.delete_endpoint("ep_1")
        assert await store.delivery("ep_1", "ev_1") is None
        assert await store.deliveries("ep_1") == []
        assert await store.claim_due("a", T0 + 1, 10, T0 + 30) == []

    async def test_disabling_fails_the_pending_deliveries_only(self, store: WebhookStore) -> None:
        """Pending ones fail with the reason; a delivered one stays delivered."""
        await store.fan_out(
            [message("ev_1"), message("ev_2")], [owed("ev_1"), owed("ev_2")], now=T0, cursor=None
        )
        (claim,) = await store.claim_due("a", T0, 1, T0 + 30)
        assert claim.event_id == "ev_1"
        assert await store.record([result(claim, "delivered", 1, T0 + 1)]) == 1
        assert await store.disable("ep_1", "410 Gone", T0 + 2) == 1
        first, second = await store.delivery("ep_1", "ev_1"), await store.delivery("ep_1", "ev_2")
        assert first is not None and first.status == "delivered"
        assert second is not None and second.status == "failed"
        assert second.error == "endpoint disabled: 410 Gone"
        record = await store.endpoint("ep_1")
        assert record is not None and not record.enabled
        assert (record.disabled_reason, record.disabled_at) == ("410 Gone", T0 + 2)
        assert await store.claim_due("a", T0 + 100, 10, T0 + 130) == []

    async def test_failing_since_is_kept_and_cleared(self, store: WebhookStore) -> None:
        """When the endpoint's current run of failures began, or None once it succeeds."""
        await store.set_failing_since("ep_1", T0 + 1)
        found = await store.endpoint("ep_1")
        assert found is not None and found.failing_since == T0 + 1
        await store.set_failing_since("ep_1", None)
        found = await store.endpoint("ep_1")
        assert found is not None and found.failing_since is None

    async def test_secrets_are_sealed_at_rest_once_a_key_is_configured(
        self, view: ViewOpener
    ) -> None:
        """Plain without a key; sealed at the first start with one, and again under a new
        first key; a store with no key that opens them refuses to read them."""
        async with view("sealed") as (_, store):
            await store.save_endpoint(endpoint(), new=True)
            assert (await store.plaintext_count(), await store.reseal()) == (1, 0)
        async with view("sealed", keys=[KEY]) as (_, store):
            assert (await store.reseal(), await store.plaintext_count()) == (1, 0)
            assert await store.endpoint("ep_1") == endpoint()
        async with view("sealed", keys=[NEW_KEY, KEY]) as (_, store):
            assert (await store.reseal(), await store.reseal()) == (1, 0)
        async with view("sealed", keys=[NEW_KEY]) as (_, store):
            assert await store.endpoints() == [endpoint()]
        for keys in ([OTHER_KEY], []):
            async with view("sealed", keys=keys) as (_, store):
                with pytest.raises(SecretsLocked):
                    await store.endpoints()

    # -- the outbox -----------------------------------------------------------------

    async def test_a_fan_out_records_messages_and_deliveries_due_at_once(
        self, store: WebhookStore
    ) -> None:
        """Every owed delivery is pending and claimable; messages are kept by event id."""
        await store.save_endpoint(endpoint("ep_2"), new=True)
        owing = [owed("ev_1"), owed("ev_1", "ep_2"), owed("ev_2"), owed("ev_2", "ep_2")]
        await store.fan_out([message("ev_1"), message("ev_2")], owing, now=T0, cursor=None)
        claims = await store.claim_due("a", T0, 10, T0 + 30)
        assert {(c.endpoint_id, c.event_id, c.attempts, c.retry_base) for c in claims} == {
            (o.endpoint_id, o.event_id, 0, 0) for o in owing
        }
        assert {(c.event_id, c.message) for c in claims} == {
            ("ev_1", message("ev_1")),
            ("ev_2", message("ev_2")),
        }

    async def test_fanning_out_again_keeps_what_exists(self, store: WebhookStore) -> None:
        """A second fan-out of the same event (a catch-up) changes neither message nor outcome."""
        await store.fan_out([message("ev_1")], [owed("ev_1")], now=T0, cursor=None)
        (claim,) = await store.claim_due("a", T0, 10, T0 + 30)
        await store.record([result(claim, "delivered", 1, T0 + 1)])
        again = Message("ev_1", "orders.created", T0, b'{"changed":true}')
        claims = await store.fan_out(
            [again], [owed("ev_1")], now=T0 + 2, cursor=None, owner="b", lease_until=T0 + 99
        )
        assert claims == []
        delivery = await store.delivery("ep_1", "ev_1")
        assert delivery is not None and (delivery.status, delivery.attempts) == ("delivered", 1)
        assert await store.claim_due("b", T0 + 100, 10, T0 + 130) == []
        # Sent again on request: with the message first recorded.
        assert await store.requeue("ep_1", "ev_1", T0 + 101)
        (replayed,) = await store.claim_due("b", T0 + 101, 10, T0 + 130)
        assert replayed.message == message("ev_1")

    async def test_a_leased_fan_out_is_its_owners_until_the_lease_ends(
        self, store: WebhookStore
    ) -> None:
        """Deliveries claimed for the publishing node are taken over only after, and then
        its claim settles nothing."""
        claims = await store.fan_out(
            [message("ev_1")], [owed("ev_1")], now=T0, cursor=None, owner="a", lease_until=T0 + 10
        )
        assert [(c.event_id, c.attempts, c.lease_until, c.message) for c in claims] == [
            ("ev_1", 0, T0 + 10, message("ev_1"))
        ]
        assert await store.claim_due("b", T0 + 5, 10, T0 + 35) == []
        (claim,) = await store.claim_due("b", T0 + 11, 10, T0 + 41)
        assert (claim.event_id, claim.lease_until) == ("ev_1", T0 + 41)
        assert await store.record([result(claims[0], "delivered", 1, T0 + 12)]) == 0

    async def test_the_fanout_cursor_only_moves_forward_and_outlives_the_node(
        self, node: tuple[EventLog, WebhookStore], view: ViewOpener
    ) -> None:
        """The store follows the node's log; its cursor never goes back; a restart reads it."""
        _, store = node
        assert store.follows_log
        assert await store.fanout_cursor() == 0
        for cursor in (5, 3, None):
            await store.fan_out([], [], now=T0, cursor=cursor)
            assert await store.fanout_cursor() == 5
        await settle()
        async with view() as (_, other):
            assert await other.fanout_cursor() == 5

    async def test_deliveries_are_never_durable_before_their_events(
        self, node: tuple[EventLog, WebhookStore], view: ViewOpener
    ) -> None:
        """Fanned out the moment the events are appended (not yet durable), a node started
        after a crash at any point finds no delivery, and no cursor, ahead of its event."""
        log, store = node
        await store.save_endpoint(endpoint(), new=True)

        async def after_a_crash() -> tuple[dict[str, int], set[str], int]:
            """Events (by id, with their seq), deliveries and cursor a restarted node finds."""
            async with view() as (restarted_log, restarted):
                read = await restarted_log.read([Pattern.parse("#")], 0, 100, check=False)
                deliveries = await restarted.deliveries("ep_1", limit=100)
                return (
                    {e.id: e.seq for e in read.events},
                    {d.event_id for d in deliveries},
                    await restarted.fanout_cursor(),
                )

        for _ in range(3):
            events = await log.append_many(
                [("orders", "orders.created", b"{}"), ("orders", "orders.paid", b"{}")], T0
            )
            await store.fan_out(
                [message(e.id) for e in events],
                [owed(e.id) for e in events],
                now=T0,
                cursor=events[-1].seq,
                owner="a",
                lease_until=T0 + 30,
            )
            durable, delivered, cursor = await after_a_crash()
            assert delivered <= set(durable), "deliveries ahead of their events"
            assert cursor <= max(durable.values(), default=0), "a cursor ahead of the log"
            await log.durable()
            await settle()
            durable, delivered, cursor = await after_a_crash()
            assert {e.id for e in events} <= delivered <= set(durable)
            assert cursor == events[-1].seq

    async def test_a_single_message_is_durable_when_added(
        self, store: WebhookStore, view: ViewOpener
    ) -> None:
        """A test event, due now and leased to no one, is there for another node at once."""
        await store.add_single(message("test_1"), "ep_1", T0)
        async with view() as (_, other):
            (claim,) = await other.claim_due("b", T0, 10, T0 + 30)
            assert claim.event_id == "test_1"

    async def test_purge_drops_finished_deliveries_with_their_history(
        self, store: WebhookStore
    ) -> None:
        """Finished before the limit: gone, with their history and message; finished later,
        or pending: kept, with theirs."""
        await store.fan_out([message("ev_old")], [owed("ev_old")], now=T0, cursor=None)
        (old,) = await store.claim_due("a", T0, 10, T0 + 30)
        assert await store.record([result(old, "failed", 1, T0 + 10, error="gave up")]) == 1
        await store.fan_out(
            [message("ev_new", T0 + 100)], [owed("ev_new", created=T0 + 100)], now=T0, cursor=None
        )
        (new,) = await store.claim_due("a", T0 + 100, 10, T0 + 130)
        assert await store.record([result(new, "failed", 1, T0 + 101, error="gave up")]) == 1
        await store.fan_out([message("ev_waiting")], [owed("ev_waiting")], now=T0, cursor=None)
        assert await store.purge(before=T0 + 50) == 1
        assert await store.delivery("ep_1", "ev_old") is None
        assert await store.attempts("ep_1", "ev_old") == []
        kept = await store.delivery("ep_1", "ev_new")
        assert kept is not None and kept.status == "failed"
        assert [a.error for a in await store.attempts("ep_1", "ev_new")] == ["gave up"]
        waiting = await store.delivery("ep_1", "ev_waiting")
        assert waiting is not None and waiting.status == "pending"
        (claim,) = await store.claim_due("a", T0 + 200, 10, T0 + 230)
        assert (claim.event_id, claim.message) == ("ev_waiting", message("ev_waiting"))

    # -- leases ---------------------------------------------------------------------

    async def test_of_two_nodes_claiming_one_delivery_one_wins(
        self, store: WebhookStore, view: ViewOpener
    ) -> None:
        """Claims from two nodes at the same moment never hold the same delivery."""
        await store.fan_out(
            [message(f"ev_{n}") for n in range(20)],
            [owed(f"ev_{n}") for n in range(20)],
            now=T0,
            cursor=None,
        )
        await settle()
        async with view() as (_, other):
            mine = await store.claim_due("a", T0, 7, T0 + 30)
            await settle()
            theirs = await other.claim_due("b", T0, 100, T0 + 30)
            await settle()
            again = await store.claim_due("a", T0, 100, T0 + 30)
        keys = [(c.endpoint_id, c.event_id) for c in [*mine, *theirs, *again]]
        assert len(keys) == len(set(keys)) == 20

    async def test_an_expired_lease_is_taken_over_and_the_late_outcome_is_dropped(
        self, store: WebhookStore, view: ViewOpener
    ) -> None:
        """Two nodes: A's lease runs out, B takes over and delivers; A's late failure or
        retry changes neither the outcome nor the history."""
        a = store
        await a.add_single(message("ev_1"), "ep_1", T0)
        async with view() as (_, b):
            mine = await a.claim_due("a", T0, 10, T0 + 1)
            assert [c.event_id for c in mine] == ["ev_1"]
            assert await b.claim_due("b", T0 + 0.5, 10, T0 + 10) == []  # A's lease holds
            theirs = await b.claim_due("b", T0 + 2, 10, T0 + 10)
            assert [c.event_id for c in theirs] == ["ev_1"]
            assert await b.record([result(theirs[0], "delivered", 1, T0 + 3)]) == 1
            await settle()
            late = [
                result(mine[0], "failed", 1, T0 + 4, error="late"),
                result(mine[0], "pending", 1, T0 + 4, next_at=T0 + 9, error="late"),
            ]
            for outcome in late:
                assert await a.record([outcome]) == 0
                await settle()
                delivery = await b.delivery("ep_1", "ev_1")
                assert delivery is not None
                assert (delivery.status, delivery.response_code, delivery.error) == (
                    "delivered",
                    200,
                    None,
                )
            history = await b.attempts("ep_1", "ev_1")
            assert [(h.number, h.response_code) for h in history] == [(1, 200)]
            assert await a.claim_due("a", T0 + 100, 10, T0 + 200) == []  # nothing left

    async def test_a_failed_delivery_stays_failed_until_replayed(
        self, store: WebhookStore, view: ViewOpener
    ) -> None:
        """Two nodes: B fails it for good; A, still holding a stale claim, cannot revive it."""
        a = store
        await a.add_single(message("ev_1"), "ep_1", T0)
        async with view() as (_, b):
            (stale,) = await a.claim_due("a", T0, 10, T0 + 1)
            (claim,) = await b.claim_due("b", T0 + 2, 10, T0 + 10)
            await b.record([result(claim, "failed", 1, T0 + 3, error="gave up")])
            await settle()
            assert await a.record([result(stale, "delivered", 1, T0 + 4)]) == 0
            await settle()
            delivery = await a.delivery("ep_1", "ev_1")
            assert delivery is not None and delivery.status == "failed"
            assert await a.claim_due("a", T0 + 100, 10, T0 + 200) == []
            # Only an explicit replay starts a new round.
            assert await a.requeue("ep_1", "ev_1", T0 + 5)
            assert [c.event_id for c in await b.claim_due("b", T0 + 6, 10, T0 + 20)] == ["ev_1"]

    async def test_extended_leases_keep_deliveries_from_other_nodes(
        self, store: WebhookStore
    ) -> None:
        """A claim extends its own lease; a token that is not the current one extends none."""
        await store.add_single(message("ev_1"), "ep_1", T0)
        (claim,) = await store.claim_due("a", T0, 10, T0 + 10)
        assert await store.extend_leases([forged(claim)], T0 + 100) == 0
        assert await store.extend_leases([claim], T0 + 100) == 1
        assert await store.claim_due("b", T0 + 50, 10, T0 + 80) == []
        assert len(await store.claim_due("b", T0 + 101, 10, T0 + 130)) == 1

    async def test_a_released_delivery_is_due_to_anyone_at_once(self, store: WebhookStore) -> None:
        """What a stopping node gives back is claimed at once, not after its lease."""
        await store.add_single(message("ev_1"), "ep_1", T0)
        (claim,) = await store.claim_due("a", T0, 10, T0 + 60)
        assert await store.release([forged(claim)], T0 + 1) == 0  # not that token's to give back
        assert await store.claim_due("b", T0 + 1, 10, T0 + 60) == []
        assert await store.release([claim], T0 + 1) == 1
        (again,) = await store.claim_due("b", T0 + 1, 10, T0 + 60)
        assert again.attempts == 0

    async def test_a_retry_waits_for_its_time_and_every_attempt_is_kept(
        self, store: WebhookStore
    ) -> None:
        """A pending outcome ends the lease and is due at ``next_at``; the history counts on."""
        await store.add_single(message("ev_1"), "ep_1", T0)
        (first,) = await store.claim_due("a", T0, 10, T0 + 30)
        retry = result(first, "pending", 1, T0 + 1, next_at=T0 + 5, error="answered 500")
        assert await store.record([retry]) == 1
        assert await store.claim_due("b", T0 + 4, 10, T0 + 30) == []
        (claim,) = await store.claim_due("b", T0 + 5, 10, T0 + 30)
        assert claim.attempts == 1
        assert await store.record([result(claim, "delivered", 2, T0 + 6)]) == 1
        delivery = await store.delivery("ep_1", "ev_1")
        assert delivery is not None
        assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 2, 200)
        history = await store.attempts("ep_1", "ev_1")
        assert [(a.number, a.response_code, a.error) for a in history] == [
            (1, 500, "answered 500"),
            (2, 200, None),
        ]

    async def test_claims_come_earliest_first_up_to_the_limit(self, store: WebhookStore) -> None:
        """The longest-waiting deliveries are the ones claimed."""
        events = [f"ev_{n}" for n in range(5)]
        await store.fan_out(
            [message(e) for e in events],
            [owed(e, created=T0 + 4 - n) for n, e in enumerate(events)],
            now=T0,
            cursor=None,
        )
        claims = await store.claim_due("a", T0 + 10, 3, T0 + 30)
        assert {c.event_id for c in claims} == {"ev_4", "ev_3", "ev_2"}

    # -- the delivery log -------------------------------------------------------------

    async def test_the_log_pages_newest_first_and_filters_by_status(
        self, store: WebhookStore
    ) -> None:
        """``before`` is the ``seq`` of the last delivery of a page."""
        events = [f"ev_{n}" for n in range(5)]
        await store.fan_out(
            [message(e) for e in events],
            [owed(e, created=T0 + n) for n, e in enumerate(events)],
            now=T0,
            cursor=None,
        )
        page = await store.deliveries("ep_1", limit=2)
        assert [d.event_id for d in page] == ["ev_4", "ev_3"]
        page = await store.deliveries("ep_1", limit=2, before=page[-1].seq)
        assert [d.event_id for d in page] == ["ev_2", "ev_1"]
        assert await store.deliveries("ep_1", status="failed") == []
        assert len(await store.deliveries("ep_1", status="pending")) == 5

    async def test_a_replay_starts_a_new_round_and_keeps_the_history(
        self, store: WebhookStore
    ) -> None:
        """Delivered, then replayed: due now, counted afresh, the first success still listed.
        A delivery being attempted, or an unknown one, is not replayed."""
        await store.add_single(message("ev_1"), "ep_1", T0)
        (first,) = await store.claim_due("a", T0, 10, T0 + 30)
        assert await store.requeue("ep_1", "ev_1", T0 + 1) is False  # being attempted
        await store.record([result(first, "delivered", 1, T0 + 1)])
        assert await store.requeue("ep_1", "ev_1", T0 + 2) is True
        again = await store.delivery("ep_1", "ev_1")
        assert again is not None
        assert (again.status, again.next_at, again.retry_base) == ("pending", T0 + 2, 1)
        (claim,) = await store.claim_due("a", T0 + 2, 10, T0 + 30)
        assert (claim.attempts, claim.retry_base) == (1, 1)
        await store.record([result(claim, "failed", 2, T0 + 3, error="gone")])
        history = await store.attempts("ep_1", "ev_1")
        assert [(a.number, a.response_code) for a in history] == [(1, 200), (2, 500)]
        assert await store.requeue("ep_1", "ev_missing", T0) is False

    async def test_recover_requeues_the_failed_deliveries_of_a_window(
        self, store: WebhookStore
    ) -> None:
        """Failed ones created in ``[since, until)`` are pending again; others stay."""
        events = [f"ev_{n}" for n in range(3)]
        await store.fan_out(
            [message(e) for e in events],
            [owed(e, created=T0 + 10 * n) for n, e in enumerate(events)],
            now=T0,
            cursor=None,
        )
        claims = await store.claim_due("a", T0 + 20, 10, T0 + 50)
        failed = [result(c, "failed", 1, T0 + 21, error="no") for c in claims]
        assert await store.record(failed) == 3
        assert await store.recover("ep_1", T0 + 5, T0 + 20, T0 + 30) == 1
        statuses = {d.event_id: d.status for d in await store.deliveries("ep_1")}
        assert statuses == {"ev_0": "failed", "ev_1": "pending", "ev_2": "failed"}
