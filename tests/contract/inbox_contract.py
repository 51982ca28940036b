"""The contract every receivers'-inbox backend passes, written once and subclassed per backend.

A backend's test module subclasses :class:`ReceiverInboxContract` and gives
the ``make_inbox`` fixture: a factory of inboxes over storage of the test's
own, where the same ``name`` reaches the same storage — so a second inbox is
a second node sharing it, or the node restarted.

Clocks are explicit (``T0``). Claims and outcomes not durable when they
return are durable once the caller yields to its loop (:func:`settle`),
before another node looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from polyport.core.inbox import InboxEntry, ReceiverInbox

T0 = 1_000_000.0


class InboxFactory(Protocol):
    def __call__(self, name: str = "inbox") -> ReceiverInbox: ...


class InboxOpener(Protocol):
    def __call__(self, name: str = "inbox") -> AbstractAsyncContextManager[ReceiverInbox]: ...


async def settle() -> None:
    """Let writes that become durable once the caller yields do so."""
    await asyncio.sleep(0)


async def put(inbox: ReceiverInbox, delivery_id: str, receiver: str = "r", now: float = T0) -> bool:
    return await inbox.insert(
        receiver,
        delivery_id,
        event_type="payment.succeeded",
        signed_at=int(now),
        body=b'{"amount":1200}',
        headers={"webhook-id": delivery_id},
        now=now,
    )


async def claim(inbox: ReceiverInbox, now: float, limit: int = 10) -> list[InboxEntry]:
    return await inbox.claim(["r"], now, limit, lease_seconds=60)


class ReceiverInboxContract:
    """Idempotency within the window, leases and takeovers, retries, dead letters, redrive."""

    @pytest.fixture
    def make_inbox(self) -> InboxFactory:
        raise NotImplementedError("a backend's subclass gives make_inbox")

    @pytest.fixture
    def node(self, make_inbox: InboxFactory) -> InboxOpener:
        """A node's inbox over the shared storage, opened for the length of a ``with``."""

        @asynccontextmanager
        async def opened(name: str = "inbox") -> AsyncIterator[ReceiverInbox]:
            found = make_inbox(name)
            await found.open()
            try:
                yield found
            finally:
                await found.close()

        return opened

    @pytest.fixture
    async def inbox(self, node: InboxOpener) -> AsyncIterator[ReceiverInbox]:
        async with node() as found:
            yield found

    # -- idempotency ----------------------------------------------------------------

    async def test_a_known_id_is_a_duplicate_on_every_node(
        self, inbox: ReceiverInbox, node: InboxOpener
    ) -> None:
        """Insert is refused for a known (receiver, id), from another node and after a
        restart too; each receiver has its own ids."""
        assert await put(inbox, "a") is True
        assert await put(inbox, "a") is False
        assert await put(inbox, "a", receiver="other") is True
        async with node() as other:
            assert await put(other, "a") is False
            assert await put(other, "b") is True
        async with node() as restarted:
            assert await put(restarted, "b") is False

    async def test_an_insert_is_stored_as_received_and_durable_at_once(
        self, inbox: ReceiverInbox, node: InboxOpener
    ) -> None:
        """Another node reads it back, every field, before any yield to the loop."""
        await put(inbox, "a")
        async with node() as other:
            found = await other.get("r", "a")
        assert found is not None
        assert (found.receiver, found.id, found.status, found.attempts) == ("r", "a", "pending", 0)
        assert (found.event_type, found.signed_at, found.received, found.due) == (
            "payment.succeeded",
            int(T0),
            T0,
            T0,
        )
        assert (found.body, found.headers) == (b'{"amount":1200}', {"webhook-id": "a"})
        assert (found.lease, found.finished, found.error) == (None, None, None)
        assert await inbox.get("r", "missing") is None

    async def test_the_idempotency_window_ends_with_the_purge(self, inbox: ReceiverInbox) -> None:
        """Finished deliveries are forgotten only after the retention; pending work never."""
        await put(inbox, "old")
        await put(inbox, "waiting", now=T0 + 100)  # not due yet when "old" is claimed
        (entry,) = await claim(inbox, T0, 1)
        await inbox.complete(entry, T0 + 1)
        assert await inbox.purge(["r"], before=T0 + 1) == 0  # finished exactly then: kept
        assert await put(inbox, "old") is False  # still inside the window
        assert await inbox.purge(["r"], before=T0 + 2) == 1
        assert await inbox.get("r", "old") is None
        assert await inbox.get("r", "waiting") is not None
        assert await inbox.purge(["r"], before=T0 + 10_000) == 0
        assert await put(inbox, "old", now=T0 + 3) is True  # a new delivery now

    # -- leases ---------------------------------------------------------------------

    async def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_settle(
        self, inbox: ReceiverInbox
    ) -> None:
        """A node that died (or stalled) mid-handler loses the delivery when its lease ends."""
        await put(inbox, "a")
        (first,) = await claim(inbox, T0)
        assert (first.status, first.attempts, first.due) == ("running", 1, T0 + 60)
        assert await claim(inbox, T0 + 59) == []  # still leased
        (second,) = await claim(inbox, T0 + 61)
        assert second.attempts == 2 and second.lease != first.lease
        assert await inbox.complete(first, T0 + 62) is False  # the stale holder is refused
        assert await inbox.complete(second, T0 + 62) is True
        done = await inbox.get("r", "a")
        assert done is not None and (done.status, done.attempts) == ("done", 2)

    async def test_of_two_nodes_claiming_together_each_delivery_goes_to_one(
        self, inbox: ReceiverInbox, node: InboxOpener
    ) -> None:
        """Claims racing from two nodes at one moment never share a delivery."""
        for n in range(20):
            await put(inbox, f"m{n}")
        async with node() as other:
            mine = await claim(inbox, T0, 7)
            await settle()
            theirs = await claim(other, T0, 100)
            await settle()
            again = await claim(inbox, T0, 100)
        ids = [e.id for e in [*mine, *theirs, *again]]
        assert len(ids) == len(set(ids)) == 20

    async def test_claims_take_the_named_receivers_due_deliveries_up_to_the_limit(
        self, inbox: ReceiverInbox
    ) -> None:
        """Only the named receivers' due deliveries, at most ``limit``, earliest first."""
        for n in range(5):
            await put(inbox, f"m{n}", now=T0 + n)
        await put(inbox, "x", receiver="elsewhere")
        claimed = await claim(inbox, T0 + 10, 3)
        assert [e.id for e in claimed] == ["m0", "m1", "m2"]
        assert await inbox.claim(["nobody"], T0 + 10, 3, lease_seconds=60) == []
        assert await inbox.claim([], T0 + 10, 3, lease_seconds=60) == []
        assert await inbox.claim(["r"], T0 + 10, 0, lease_seconds=60) == []

    async def test_a_released_delivery_comes_back_without_using_an_attempt(
        self, inbox: ReceiverInbox
    ) -> None:
        """What a stopping node does with handlers it had to cancel."""
        await put(inbox, "a")
        (entry,) = await claim(inbox, T0)
        assert await inbox.release(entry, T0 + 1) is True
        back = await inbox.get("r", "a")
        assert back is not None and (back.status, back.attempts, back.due) == ("pending", 0, T0 + 1)
        assert await inbox.release(entry, T0 + 2) is False  # the claim is spent

    # -- retries, dead letters, redrive -------------------------------------------------

    async def test_a_retry_waits_until_due_and_the_last_failure_is_a_dead_letter(
        self, inbox: ReceiverInbox
    ) -> None:
        """A failed attempt is due again later; burying keeps the error; counts say so."""
        await put(inbox, "a")
        (entry,) = await claim(inbox, T0)
        assert await inbox.retry(entry, T0 + 5, "boom") is True
        waiting = await inbox.get("r", "a")
        assert waiting is not None and (waiting.status, waiting.error) == ("pending", "boom")
        assert await claim(inbox, T0 + 4) == []
        assert await inbox.next_due(["r"]) == T0 + 5
        (entry,) = await claim(inbox, T0 + 5)
        assert entry.attempts == 2
        assert await inbox.bury(entry, T0 + 6, "boom again") is True
        dead = await inbox.get("r", "a")
        assert dead is not None
        assert (dead.status, dead.error, dead.finished) == ("dead", "boom again", T0 + 6)
        assert await inbox.counts("r") == {"pending": 0, "running": 0, "done": 0, "dead": 1}
        assert await inbox.next_due(["r"]) is None

    async def test_next_due_counts_running_leases(self, inbox: ReceiverInbox) -> None:
        """A running delivery falls due when its lease ends; other receivers do not count."""
        assert await inbox.next_due(["r"]) is None
        await put(inbox, "a")
        await put(inbox, "b", receiver="elsewhere", now=T0 - 50)
        await claim(inbox, T0)
        assert await inbox.next_due(["r"]) == T0 + 60
        assert await inbox.next_due(["r", "elsewhere"]) == T0 - 50
        assert await inbox.next_due([]) is None

    async def test_final_states_never_change_but_by_redrive(
        self, inbox: ReceiverInbox, node: InboxOpener
    ) -> None:
        """done and dead stay as they are, whatever a node with a stale claim writes;
        only a redrive makes a dead letter pending again, with a fresh count."""
        await put(inbox, "a")
        await put(inbox, "b")
        claimed = {e.id: e for e in await claim(inbox, T0)}
        assert set(claimed) == {"a", "b"}
        assert await inbox.complete(claimed["a"], T0 + 1)
        assert await inbox.bury(claimed["b"], T0 + 1, "gave up")
        await settle()
        async with node() as other:
            for entry in claimed.values():  # the same claims, written again from another node
                assert not await other.retry(entry, T0 + 2, "late failure")
                assert not await other.release(entry, T0 + 2)
                assert not await other.complete(entry, T0 + 2)
                assert not await other.bury(entry, T0 + 2, "late")
            done, dead = await other.get("r", "a"), await other.get("r", "b")
            assert done is not None and (done.status, done.error) == ("done", None)
            assert dead is not None and (dead.status, dead.error) == ("dead", "gave up")
            assert await claim(other, T0 + 1000) == []
            assert await other.redrive("r", "a", T0 + 3) is False  # done is done
            assert await other.redrive("r", "b", T0 + 3) is True
        again = await inbox.get("r", "b")
        assert again is not None
        assert (again.status, again.attempts, again.due, again.finished) == (
            "pending",
            0,
            T0 + 3,
            None,
        )
        (entry,) = await claim(inbox, T0 + 3)
        assert (entry.id, entry.attempts) == ("b", 1)

    async def test_redrive_takes_dead_or_waiting_deliveries_only(
        self, inbox: ReceiverInbox
    ) -> None:
        """A waiting one is due now with its count kept; running or unknown ones are refused."""
        await put(inbox, "a")
        (entry,) = await claim(inbox, T0)
        assert await inbox.redrive("r", "a", T0 + 1) is False  # running
        await inbox.retry(entry, T0 + 500, "boom")
        assert await inbox.redrive("r", "a", T0 + 2) is True
        waiting = await inbox.get("r", "a")
        assert waiting is not None and (waiting.due, waiting.attempts) == (T0 + 2, 1)
        assert await inbox.redrive("r", "missing", T0) is False

    # -- the log ----------------------------------------------------------------------

    async def test_the_log_pages_newest_first_and_filters_by_status(
        self, inbox: ReceiverInbox
    ) -> None:
        """``before`` is the ``seq`` of the last delivery of the previous page."""
        for n in range(5):
            await put(inbox, f"m{n}")
        await put(inbox, "x", receiver="elsewhere")
        page = await inbox.deliveries("r", status=None, before=None, limit=2)
        assert [e.id for e in page] == ["m4", "m3"]
        page = await inbox.deliveries("r", status=None, before=page[-1].seq, limit=2)
        assert [e.id for e in page] == ["m2", "m1"]
        assert await inbox.deliveries("r", status="dead", before=None, limit=10) == []
        (entry,) = await claim(inbox, T0, 1)
        running = await inbox.deliveries("r", status="running", before=None, limit=10)
        assert [e.id for e in running] == [entry.id]
        assert await inbox.counts("r") == {"pending": 4, "running": 1, "done": 0, "dead": 0}
        assert await inbox.counts("nobody") == {"pending": 0, "running": 0, "done": 0, "dead": 0}
