"""The contract every leased work queue backend passes, written once and subclassed per backend.

A backend's test module subclasses :class:`WorkQueueContract` and gives the
``make_queue`` fixture: a factory of queues over storage of the test's own,
where the same ``name`` reaches the same storage — so a second queue is a
second node sharing it, or the node restarted.

Clocks are explicit (``T0``). Claims and outcomes not durable when they
return are durable once the caller yields to its loop (:func:`settle`),
before another node looks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from polyport.core.errors import InvalidArgument
from polyport.core.workqueue import WorkItem, WorkQueue

T0 = 1_000_000.0
LEASE = 60.0


class QueueFactory(Protocol):
    def __call__(self, name: str = "store") -> WorkQueue: ...


class QueueOpener(Protocol):
    def __call__(self, name: str = "store") -> AbstractAsyncContextManager[WorkQueue]: ...


async def settle() -> None:
    """Let writes that become durable once the caller yields do so."""
    await asyncio.sleep(0)


async def claim(
    queue: WorkQueue, now: float = T0, limit: int = 10, queues: tuple[str, ...] = ("q",)
) -> list[WorkItem]:
    return await queue.claim(queues, now=now, limit=limit, lease=LEASE)


async def claim_one(queue: WorkQueue, now: float = T0) -> WorkItem:
    (item,) = await claim(queue, now, limit=1)
    return item


def claimable_by_rule(items: Sequence[WorkItem]) -> list[WorkItem]:
    """The live items a claim may take, as the port's rule says: those without a group,
    and the first (by seq) live item of each group; earliest due first."""
    heads: dict[str, WorkItem] = {}
    free = []
    for item in sorted(items, key=lambda item: item.seq):
        if item.status not in ("pending", "running"):
            continue
        if item.group is None:
            free.append(item)
        else:
            heads.setdefault(item.group, item)
    return sorted([*free, *heads.values()], key=lambda item: (item.due, item.seq))


class WorkQueueContract:
    """Idempotent enqueue, leases and takeovers, settling once, retries, dead letters, redrive,
    ordering groups."""

    #: Two nodes of the backend may claim truly at once in one event loop (network
    #: engines). SQLite's nodes would wait for each other's write lock on the loop's own
    #: thread: theirs take turns, yielding between them.
    NODES_CLAIM_AT_ONCE = False

    async def check_groups(self, wq: WorkQueue, claimable: list[WorkItem]) -> None:
        """Check that what the backend keeps to find claimable items (a flag, an index)
        agrees with ``claimable``, the rule's answer for queue ``q``. Its own business:
        a backend that keeps such a thing overrides this."""

    @pytest.fixture
    def make_queue(self) -> QueueFactory:
        raise NotImplementedError("a backend's subclass gives make_queue")

    @pytest.fixture
    def node(self, make_queue: QueueFactory) -> QueueOpener:
        """A node's queue over the shared storage, opened for the length of a ``with``."""

        @asynccontextmanager
        async def opened(name: str = "store") -> AsyncIterator[WorkQueue]:
            found = make_queue(name)
            await found.open()
            try:
                yield found
            finally:
                await found.close()

        return opened

    @pytest.fixture
    async def wq(self, node: QueueOpener) -> AsyncIterator[WorkQueue]:
        async with node() as found:
            yield found

    # -- enqueue --------------------------------------------------------------------

    async def test_a_known_key_is_refused_on_every_node(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Enqueue answers False for a known (queue, key), from another node and after a
        restart too; each queue has its own keys."""
        assert await wq.enqueue("q", "a", b"1", now=T0) is True
        assert await wq.enqueue("q", "a", b"2", now=T0) is False
        assert await wq.enqueue("other", "a", b"3", now=T0) is True
        async with node() as other:
            assert await other.enqueue("q", "a", b"4", now=T0) is False
            assert await other.enqueue("q", "b", b"5", now=T0) is True
        async with node() as restarted:
            assert await restarted.enqueue("q", "b", b"6", now=T0) is False
            found = await restarted.get("q", "a")
        assert found is not None and found.payload == b"1"

    async def test_an_item_is_stored_as_given_and_durable_at_once(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Another node reads every field back before any yield to the loop; payloads are
        bytes of any value."""
        payload = bytes(range(256)) * 4 + b"\xff\xfe\x00"
        await wq.enqueue("q", "a", payload, now=T0)
        await wq.enqueue("q", "later", b"", now=T0, due=T0 + 30)
        async with node() as other:
            found = await other.get("q", "a")
            later = await other.get("q", "later")
        assert found is not None and later is not None
        assert (found.queue, found.key, found.status) == ("q", "a", "pending")
        assert found.payload == payload
        assert (found.attempts, found.created, found.due) == (0, T0, T0)
        assert (found.lease, found.claimed, found.finished, found.error, found.result) == (
            None,
            None,
            None,
            None,
            None,
        )
        assert (later.payload, later.due) == (b"", T0 + 30)
        assert later.seq > found.seq
        assert found.group is None and later.group is None
        assert await wq.get("q", "missing") is None
        assert await wq.get("nowhere", "a") is None

    async def test_a_large_payload_round_trips(self, wq: WorkQueue) -> None:
        payload = b"x" * (1 << 20)
        await wq.enqueue("q", "big", payload, now=T0)
        item = await claim_one(wq)
        assert item.payload == payload

    @pytest.mark.parametrize("name", ["", "x" * 201, "a\nb", "tab\there"])
    async def test_bad_queue_names_keys_and_groups_are_refused(
        self, wq: WorkQueue, name: str
    ) -> None:
        with pytest.raises(InvalidArgument):
            await wq.enqueue(name, "k", b"", now=T0)
        with pytest.raises(InvalidArgument):
            await wq.enqueue("q", name, b"", now=T0)
        with pytest.raises(InvalidArgument):
            await wq.enqueue("q", "k", b"", now=T0, group=name)
        assert await wq.get("q", "k") is None

    async def test_names_with_separators_stay_apart(self, wq: WorkQueue) -> None:
        """Characters a backend might use in its own keys (``:``, ``.``, ``/``, ``*``,
        ``>``, ``{}``, spaces) are ordinary: no two names collide."""
        names = ["a:b", "a.b", "a/b", "a*", "a>", "{a}", "a b", "a", "é"]
        for queue in names:
            for key in names:
                assert await wq.enqueue(queue, key, f"{queue}|{key}".encode(), now=T0)
        for queue in names:
            for key in names:
                found = await wq.get(queue, key)
                assert found is not None and found.payload == f"{queue}|{key}".encode()
            assert (await wq.counts(queue))["pending"] == len(names)

    # -- claims ---------------------------------------------------------------------

    async def test_a_claim_takes_due_items_earliest_first_under_a_lease(
        self, wq: WorkQueue
    ) -> None:
        """Only items due by now, of the queues named, earliest due first, up to the limit;
        each comes back running with a token, its claim time and its attempt counted."""
        await wq.enqueue("q", "second", b"", now=T0, due=T0 - 5)
        await wq.enqueue("q", "first", b"", now=T0, due=T0 - 10)
        await wq.enqueue("q", "future", b"", now=T0, due=T0 + 10)
        await wq.enqueue("r", "other", b"", now=T0, due=T0 - 7)
        await wq.enqueue("s", "unnamed", b"", now=T0, due=T0 - 20)
        got = await claim(wq, T0, limit=2, queues=("q", "r"))
        assert [item.key for item in got] == ["first", "other"]
        for item in got:
            assert (item.status, item.attempts, item.claimed, item.due) == (
                "running",
                1,
                T0,
                T0 + LEASE,
            )
            assert item.lease
        rest = await claim(wq, T0, limit=10, queues=("q", "r"))
        assert [item.key for item in rest] == ["second"]
        assert await claim(wq, T0, queues=("q", "r")) == []
        assert len({item.lease for item in got + rest}) == 3
        assert await claim(wq, T0, limit=0, queues=("s",)) == []
        assert await claim(wq, T0, queues=()) == []

    async def test_claims_from_two_nodes_never_share_an_item(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Two nodes claiming in turns: every item is claimed exactly once. (Backends
        that allow it also race claims truly at once, in their own tests.)"""
        for n in range(40):
            await wq.enqueue("q", f"k{n:02}", b"", now=T0)
        async with node() as other:
            seen: list[str] = []
            for _ in range(10):
                for claimer in (wq, other):
                    seen += [item.key for item in await claim(claimer, T0, limit=3)]
                    await settle()
        assert sorted(seen) == [f"k{n:02}" for n in range(40)]

    async def test_a_lease_that_ran_out_is_claimed_again_and_only_the_new_one_settles(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """A node that died mid-work: its item is due once the lease has passed; the
        taker counts a second attempt; the late node can no longer settle it."""
        await wq.enqueue("q", "a", b"", now=T0)
        first = await claim_one(wq, T0)
        await settle()
        async with node() as other:
            assert await claim(other, T0 + LEASE - 1) == []
            assert await other.next_due(["q"]) == T0 + LEASE
            second = await claim_one(other, T0 + LEASE)
            await settle()
            assert second.attempts == 2 and second.lease != first.lease
            assert await wq.ack(first, now=T0 + LEASE + 1) is False
            assert await wq.retry(first, due=T0, error="late") is False
            assert await wq.dead_letter(first, now=T0, error="late") is False
            assert await wq.release(first, now=T0) is False
            assert await wq.extend([first], T0 + 1000) == 0
            await settle()
            assert await other.ack(second, now=T0 + LEASE + 2, result=b"ok") is True
            await settle()
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.result, found.finished) == ("done", b"ok", T0 + LEASE + 2)

    async def test_the_claimer_is_named_while_it_holds_the_item(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """A claim records its owner; another node reads it (to tell a dead node's claims
        from a live one's); every way out of running forgets it."""
        for key in ("a", "b", "c", "d"):
            await wq.enqueue("q", key, b"", now=T0)
        held = await wq.claim(["q"], now=T0, limit=4, lease=LEASE, owner="host/42/x")
        assert [item.owner for item in held] == ["host/42/x"] * 4
        await settle()
        async with node() as other:
            running = await other.items("q", status="running")
            assert {item.owner for item in running} == {"host/42/x"}
            assert {item.lease for item in running} == {item.lease for item in held}
            # What a node that knows host/42 is gone does: end those leases now.
            assert await other.extend(running[:1], T0) == 1
            await settle()
            (taken,) = await other.claim(["q"], now=T0, limit=4, lease=LEASE, owner="other")
            assert (taken.key, taken.owner, taken.attempts) == (running[0].key, "other", 2)
            await settle()
        a, b, c, d = held
        settled = [
            await wq.ack(a, now=T0),
            await wq.retry(b, due=T0 + 10, error="x"),
            await wq.release(c, now=T0),
            await wq.dead_letter(d, now=T0, error="x"),
        ]
        assert settled.count(False) == 1  # the one the other node took
        for item in await wq.items("q"):
            assert item.owner == ("other" if item.key == taken.key else None)
        assert (await wq.claim(["q"], now=T0, limit=1, lease=LEASE))[0].owner is None

    async def test_a_lease_that_ran_out_but_was_not_taken_still_settles(
        self, wq: WorkQueue
    ) -> None:
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.ack(item, now=T0 + LEASE * 3) is True

    async def test_extend_pushes_a_lease_and_a_past_until_ends_it(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        await wq.enqueue("q", "a", b"", now=T0)
        await wq.enqueue("q", "b", b"", now=T0)
        a, b = await claim(wq, T0, limit=2)
        assert await wq.extend([a, b], T0 + 500) == 2
        await settle()
        async with node() as other:
            assert await claim(other, T0 + LEASE + 1) == []
            found = await other.get("q", "a")
            assert found is not None and found.due == T0 + 500
            assert await wq.extend([b], T0 - 1) == 1  # ends now: b is anyone's
            await settle()
            (taken,) = await claim(other, T0)
            assert taken.key == "b"
            await settle()
        assert await wq.extend([a, b], T0 + 900) == 1  # b is the other node's now

    # -- outcomes -------------------------------------------------------------------

    async def test_ack_is_final(self, wq: WorkQueue) -> None:
        """Done never changes: no second outcome, no redrive, no claim. An earlier
        attempt's error is gone with it."""
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.retry(item, due=T0, error="first try failed") is True
        item = await claim_one(wq, T0)
        assert await wq.ack(item, now=T0 + 1, result=b'{"n":1}') is True
        assert await wq.ack(item, now=T0 + 2) is False
        assert await wq.retry(item, due=T0, error="x") is False
        assert await wq.dead_letter(item, now=T0, error="x") is False
        assert await wq.release(item, now=T0) is False
        assert await wq.redrive("q", "a", now=T0 + 3) is False
        assert await claim(wq, T0 + 10_000) == []
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.lease, found.finished, found.result, found.attempts) == (
            "done",
            None,
            T0 + 1,
            b'{"n":1}',
            2,
        )
        assert found.error is None
        assert await wq.next_due(["q"]) is None

    async def test_retry_waits_until_due_and_counts_the_next_attempt(self, wq: WorkQueue) -> None:
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.retry(item, due=T0 + 30, error="503 from upstream") is True
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.due, found.error, found.lease) == (
            "pending",
            T0 + 30,
            "503 from upstream",
            None,
        )
        assert await claim(wq, T0 + 29) == []
        assert await wq.next_due(["q"]) == T0 + 30
        again = await claim_one(wq, T0 + 30)
        assert again.attempts == 2
        assert await wq.retry(item, due=T0, error="stale token") is False

    async def test_release_gives_an_item_back_without_counting_the_claim(
        self, wq: WorkQueue
    ) -> None:
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.release(item, now=T0 + 1) is True
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.attempts, found.due, found.lease) == (
            "pending",
            0,
            T0 + 1,
            None,
        )
        assert (await claim_one(wq, T0 + 1)).attempts == 1

    async def test_dead_letters_wait_for_a_redrive_which_starts_afresh(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.retry(item, due=T0, error="once") is True
        item = await claim_one(wq, T0)
        assert item.attempts == 2
        assert await wq.dead_letter(item, now=T0 + 5, error="gave up") is True
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.finished, found.error) == ("dead", T0 + 5, "gave up")
        assert await claim(wq, T0 + 10_000) == []
        await settle()
        async with node() as other:
            assert await other.redrive("q", "a", now=T0 + 100) is True
        found = await wq.get("q", "a")
        assert found is not None
        assert (found.status, found.attempts, found.due, found.finished) == (
            "pending",
            0,
            T0 + 100,
            None,
        )
        assert (await claim_one(wq, T0 + 100)).attempts == 1

    async def test_redrive_brings_a_waiting_item_forward_and_refuses_the_rest(
        self, wq: WorkQueue
    ) -> None:
        """A pending item becomes due now, keeping its count; running, done and unknown
        items are refused."""
        await wq.enqueue("q", "a", b"", now=T0)
        item = await claim_one(wq, T0)
        assert await wq.redrive("q", "a", now=T0) is False  # running
        await wq.retry(item, due=T0 + 3600, error="later")
        assert await wq.redrive("q", "a", now=T0 + 1) is True
        found = await wq.get("q", "a")
        assert found is not None and (found.due, found.attempts) == (T0 + 1, 1)
        assert await wq.redrive("q", "missing", now=T0) is False
        assert await wq.redrive("nowhere", "a", now=T0) is False

    async def test_a_replay_sends_a_done_item_again_as_a_fresh_round(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Only when asked to replay: the done item is pending again, attempts from 0,
        its result and finish time gone; the next ack is its outcome."""
        await wq.enqueue("q", "a", b"payload", now=T0)
        item = await claim_one(wq, T0)
        await wq.ack(item, now=T0 + 1, result=b"first")
        await settle()
        async with node() as other:
            assert await other.redrive("q", "a", now=T0 + 5) is False  # done is done...
            assert await other.redrive("q", "a", now=T0 + 5, replay=True) is True  # ...unless
            found = await other.get("q", "a")
        assert found is not None
        assert (found.status, found.attempts, found.due, found.finished, found.result) == (
            "pending",
            0,
            T0 + 5,
            None,
            None,
        )
        assert found.payload == b"payload"
        again = await claim_one(wq, T0 + 5)
        assert again.attempts == 1
        assert await wq.ack(again, now=T0 + 6, result=b"second") is True
        found = await wq.get("q", "a")
        assert found is not None and (found.result, found.finished) == (b"second", T0 + 6)
        assert await wq.redrive("q", "missing", now=T0, replay=True) is False

    # -- listings -------------------------------------------------------------------

    async def test_items_are_listed_newest_first_by_status_with_a_cursor(
        self, wq: WorkQueue
    ) -> None:
        for n in range(5):
            await wq.enqueue("q", f"k{n}", b"", now=T0 + n)
        await wq.enqueue("other", "x", b"", now=T0)
        done = await claim_one(wq, T0 + 10)  # k0, the earliest due
        await wq.ack(done, now=T0 + 11)
        page = await wq.items("q", limit=2)
        assert [item.key for item in page] == ["k4", "k3"]
        page = await wq.items("q", limit=10, before=page[-1].seq)
        assert [item.key for item in page] == ["k2", "k1", "k0"]
        pending = await wq.items("q", status="pending")
        assert [item.key for item in pending] == ["k4", "k3", "k2", "k1"]
        assert [item.key for item in await wq.items("q", status="done")] == ["k0"]
        assert await wq.items("q", status="dead") == []
        assert await wq.items("nowhere") == []
        assert await wq.counts("q") == {"pending": 4, "running": 0, "done": 1, "dead": 0}
        assert await wq.counts("nowhere") == {"pending": 0, "running": 0, "done": 0, "dead": 0}

    async def test_next_due_is_the_earliest_of_the_queues_named(self, wq: WorkQueue) -> None:
        assert await wq.next_due(["q"]) is None
        await wq.enqueue("q", "a", b"", now=T0, due=T0 + 50)
        await wq.enqueue("r", "b", b"", now=T0, due=T0 + 20)
        await wq.enqueue("s", "c", b"", now=T0, due=T0 + 5)
        assert await wq.next_due(["q", "r"]) == T0 + 20
        assert await wq.next_due(["q"]) == T0 + 50
        running = await claim_one(wq, T0 + 50)
        assert await wq.next_due(["q"]) == running.due
        assert await wq.next_due([]) is None

    # -- forgetting -----------------------------------------------------------------

    async def test_the_idempotency_window_ends_with_the_purge(self, wq: WorkQueue) -> None:
        """Final items are forgotten once finished before the bound; pending and running
        never; a forgotten key may be enqueued again."""
        for key in ("done-old", "dead-old", "done-new", "pending", "running"):
            await wq.enqueue("q", key, b"", now=T0)
        await wq.enqueue("other", "done-old", b"", now=T0)
        items = {item.key: item for item in await claim(wq, T0, limit=10)}
        await wq.ack(items["done-old"], now=T0 + 10)
        await wq.dead_letter(items["dead-old"], now=T0 + 10, error="x")
        await wq.ack(items["done-new"], now=T0 + 100)
        await wq.release(items["pending"], now=T0)
        other = await claim_one(wq, T0)  # "pending" again, now running
        assert other.key == "pending"
        await wq.retry(other, due=T0, error="again")
        assert await wq.purge("q", T0 + 50) == 2
        assert await wq.get("q", "done-old") is None
        assert await wq.get("q", "dead-old") is None
        assert await wq.get("other", "done-old") is not None
        assert {item.key for item in await wq.items("q")} == {"done-new", "pending", "running"}
        assert await wq.enqueue("q", "done-old", b"again", now=T0 + 200) is True
        assert await wq.enqueue("q", "done-new", b"", now=T0 + 200) is False
        assert await wq.purge("q", T0 + 10_000) == 1  # done-new; the rest are not final

    async def test_drop_forgets_a_whole_queue(self, wq: WorkQueue) -> None:
        for n in range(3):
            await wq.enqueue("q", f"k{n}", b"", now=T0)
        await wq.enqueue("other", "k0", b"", now=T0)
        await claim_one(wq, T0)
        assert await wq.drop("q") == 3
        assert await wq.items("q") == []
        assert await wq.get("q", "k0") is None
        assert await claim(wq, T0 + 10_000) == []
        assert await wq.enqueue("q", "k0", b"", now=T0) is True
        assert await wq.get("other", "k0") is not None
        assert await wq.drop("nowhere") == 0

    # -- ordering groups ------------------------------------------------------------

    async def test_a_group_runs_one_item_at_a_time_in_enqueue_order(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Items of a group are claimed one at a time, each once the one before it is done,
        in the order they were enqueued whatever their due times; every node reads the
        group back."""
        await wq.enqueue("q", "first", b"", now=T0, due=T0 - 1, group="g")
        await wq.enqueue("q", "second", b"", now=T0, due=T0 - 9, group="g")  # due earlier
        await wq.enqueue("q", "third", b"", now=T0, group="g")
        await settle()
        order = []
        async with node() as other:
            for claimer in (wq, other, wq):
                (item,) = await claim(claimer, T0, limit=10)
                assert item.group == "g"
                assert await claim(claimer, T0, limit=10) == []
                await settle()
                assert await claim(wq if claimer is other else other, T0, limit=10) == []
                assert await claimer.ack(item, now=T0) is True
                await settle()
                order.append(item.key)
            assert await claim(other, T0) == []
            found = await other.get("q", "third")
        assert order == ["first", "second", "third"]
        assert found is not None and (found.group, found.status) == ("g", "done")
        assert {item.group for item in await wq.items("q")} == {"g"}

    async def test_a_group_waits_out_the_retries_and_leases_of_its_head(
        self, wq: WorkQueue
    ) -> None:
        """While the first item waits for its retry, or was given back, or runs under a
        lease that ran out, the later ones stay behind it, due or not."""
        await wq.enqueue("q", "a", b"", now=T0, group="g")
        await wq.enqueue("q", "b", b"", now=T0, group="g")
        a = await claim_one(wq, T0)
        assert a.key == "a"
        assert await wq.retry(a, due=T0 + 30, error="backoff") is True
        assert await claim(wq, T0 + 29) == []  # b is due, a is not: neither is claimed
        a = await claim_one(wq, T0 + 30)
        assert (a.key, a.attempts) == ("a", 2)
        assert await wq.release(a, now=T0 + 31) is True
        a = await claim_one(wq, T0 + 31)
        assert a.key == "a"
        assert await claim(wq, T0 + 31 + LEASE - 1) == []
        taken = await claim(wq, T0 + 31 + LEASE, limit=10)  # the lease ran out: a, again
        assert [(item.key, item.attempts) for item in taken] == [("a", 3)]
        assert await wq.ack(taken[0], now=T0 + 100) is True
        assert [item.key for item in await claim(wq, T0 + 100)] == ["b"]

    async def test_a_dead_item_no_longer_holds_its_group_back(self, wq: WorkQueue) -> None:
        for key in ("a", "b", "c"):
            await wq.enqueue("q", key, b"", now=T0, group="g")
        a = await claim_one(wq, T0)
        assert await wq.dead_letter(a, now=T0, error="gave up") is True
        b = await claim_one(wq, T0)
        assert b.key == "b"
        assert await wq.ack(b, now=T0) is True
        assert [item.key for item in await claim(wq, T0)] == ["c"]

    async def test_groups_wait_only_for_themselves(self, wq: WorkQueue) -> None:
        """Each group (per queue, by its exact name) has its own order; items without a
        group are claimed as ever, and a held-back run hides no item behind it."""
        groups = ["g", "g:1", "g 1", "{g}", "é"]
        for n in range(3):
            for group in groups:
                await wq.enqueue("q", f"{group}/{n}", b"", now=T0 + n, group=group)
        await wq.enqueue("q", "loose-1", b"", now=T0 + 5)
        await wq.enqueue("q", "loose-2", b"", now=T0 + 6)
        await wq.enqueue("other", "g/0", b"", now=T0, group="g")  # same group, other queue
        got = await claim(wq, T0 + 10, limit=100, queues=("q", "other"))
        assert sorted((item.queue, item.key) for item in got) == sorted(
            [("q", f"{group}/0") for group in groups]
            + [("q", "loose-1"), ("q", "loose-2"), ("other", "g/0")]
        )
        assert await claim(wq, T0 + 10, limit=100, queues=("q", "other")) == []
        for item in got:
            assert await wq.ack(item, now=T0 + 10) is True
        again = await claim(wq, T0 + 10, limit=100, queues=("q", "other"))
        assert sorted(item.key for item in again) == sorted(f"{group}/1" for group in groups)

    async def test_a_long_held_back_run_does_not_hide_the_items_after_it(
        self, wq: WorkQueue
    ) -> None:
        """A claim finds the items it may take behind many due items it may not."""
        for n in range(300):
            await wq.enqueue("q", f"run{n:03}", b"", now=T0, due=T0 - 1000 + n, group="g")
        await wq.enqueue("q", "h/0", b"", now=T0, due=T0 - 1, group="h")
        await wq.enqueue("q", "h/1", b"", now=T0, due=T0 - 2000, group="h")
        await wq.enqueue("q", "loose", b"", now=T0)
        got = await claim(wq, T0, limit=3)
        assert [item.key for item in got] == ["run000", "h/0", "loose"]
        assert await claim(wq, T0, limit=3) == []

    async def test_claims_at_once_never_hold_two_items_of_a_group(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """Workers claiming together — gathered on one node, and on two (at once where the
        backend allows it, else in turns) — while each holds what it claimed: no two
        hold items of one group together, and every group is acked in its order."""
        groups = [f"g{n}" for n in range(4)]
        for n in range(6):
            for group in groups:
                await wq.enqueue("q", f"{group}/{n}", b"", now=T0, group=group)
        await settle()
        holding: dict[str | None, str] = {}
        acked: dict[str | None, list[str]] = {}

        async def work(queue: WorkQueue) -> None:
            got = await claim(queue, T0, limit=3)
            for item in got:
                assert item.group not in holding, (item.key, holding)
                holding[item.group] = item.key
            await settle()  # hold them while the others claim
            for item in got:
                del holding[item.group]
                assert await queue.ack(item, now=T0) is True
                acked.setdefault(item.group, []).append(item.key)

        async with node() as other:
            for _ in range(40):
                if self.NODES_CLAIM_AT_ONCE:
                    await asyncio.gather(work(wq), work(other), work(wq), work(other))
                else:
                    for claimer in (wq, other):
                        await asyncio.gather(work(claimer), work(claimer))
                        await settle()
                await settle()
                if sum(map(len, acked.values())) == 24:
                    break
        assert acked == {group: [f"{group}/{n}" for n in range(6)] for group in groups}

    async def test_next_due_leaves_out_items_held_back_by_their_group(self, wq: WorkQueue) -> None:
        """Only a group's head (and items without a group) count: a worker woken for a held
        item would find nothing to claim."""
        await wq.enqueue("q", "head", b"", now=T0, due=T0 + 50, group="g")
        await wq.enqueue("q", "next", b"", now=T0, due=T0 + 5, group="g")
        assert await wq.next_due(["q"]) == T0 + 50
        assert await claim(wq, T0 + 5) == []
        head = await claim_one(wq, T0 + 50)
        assert await wq.next_due(["q"]) == T0 + 50 + LEASE  # the head's lease, not next
        await wq.enqueue("q", "loose", b"", now=T0, due=T0 + 70)
        assert await wq.next_due(["q"]) == T0 + 70
        assert await wq.ack(head, now=T0 + 60) is True
        assert await wq.next_due(["q"]) == T0 + 5

    async def test_a_redriven_item_takes_its_place_in_its_group_again(
        self, wq: WorkQueue, node: QueueOpener
    ) -> None:
        """It keeps its seq: when nothing before it is unfinished it is the group's head
        again and the later pending items wait for it; a later item already running is
        not stopped (its lease still settles it) and one already done stays done."""
        for key in ("a", "b", "c", "d"):
            await wq.enqueue("q", key, b"", now=T0, group="g")
        a = await claim_one(wq, T0)
        assert await wq.dead_letter(a, now=T0, error="gave up") is True
        b = await claim_one(wq, T0)
        assert await wq.ack(b, now=T0) is True
        c = await claim_one(wq, T0)
        assert c.key == "c"
        await settle()
        async with node() as other:
            assert await other.redrive("q", "a", now=T0 + 1) is True
        a = await claim_one(wq, T0 + 1)  # the head again, while c still runs
        assert (a.key, a.attempts) == ("a", 1)
        assert await wq.ack(c, now=T0 + 2) is True
        assert await claim(wq, T0 + 2) == []  # d waits for a
        assert await wq.next_due(["q"]) == a.due
        assert await wq.ack(a, now=T0 + 3) is True
        found = await wq.get("q", "b")
        assert found is not None and found.status == "done"
        # A replayed item is the head again too: d, pending, waits for it.
        assert await wq.redrive("q", "a", now=T0 + 4, replay=True) is True
        assert [item.key for item in await claim(wq, T0 + 4, limit=10)] == ["a"]

    async def test_a_dropped_or_purged_group_holds_nothing_back(self, wq: WorkQueue) -> None:
        """Dropping a queue forgets its groups' items with it; purged items were final."""
        await wq.enqueue("q", "a", b"", now=T0, group="g")
        await wq.enqueue("q", "b", b"", now=T0, group="g")
        await claim_one(wq, T0)
        assert await wq.drop("q") == 2
        assert await wq.enqueue("q", "c", b"", now=T0, group="g") is True
        c = await claim_one(wq, T0)
        assert (c.key, c.group) == ("c", "g")
        assert await wq.ack(c, now=T0) is True
        assert await wq.purge("q", T0 + 1) == 1
        assert await wq.enqueue("q", "c", b"", now=T0 + 2, group="g") is True
        assert [item.key for item in await claim(wq, T0 + 2)] == ["c"]

    async def test_random_work_keeps_to_the_group_rule(self, wq: WorkQueue) -> None:
        """Random enqueues (in three groups and none), claims at random times (leases run
        out), outcomes of what was claimed and redrives: every claim takes the earliest
        items the rule allows, and next_due is the earliest of them, as read from the
        listing before each step (and what the backend keeps beside agrees)."""
        rng = random.Random(16)
        held: list[WorkItem] = []
        enqueued = 0
        for step in range(150):
            listing = await wq.items("q", limit=1000)
            allowed = claimable_by_rule(listing)
            assert await wq.next_due(["q"]) == (allowed[0].due if allowed else None), step
            await self.check_groups(wq, allowed)
            now = T0 + rng.randint(0, 120)
            roll = rng.random()
            if roll < 0.3 or not listing:
                group = rng.choice([None, "a", "b", "c"])
                due = now + rng.randint(-5, 20)
                assert await wq.enqueue("q", f"k{enqueued}", b"", now=now, due=due, group=group)
                enqueued += 1
            elif roll < 0.55:
                limit = rng.randint(1, 3)
                got = await claim(wq, now, limit=limit)
                wanted = [item.key for item in allowed if item.due <= now][:limit]
                assert [item.key for item in got] == wanted, step
                held += got
            elif roll < 0.85 and held:
                item = held.pop(rng.randrange(len(held)))
                outcome = rng.choice(["ack", "retry", "release", "dead_letter"])
                if outcome == "ack":
                    await wq.ack(item, now=now)
                elif outcome == "retry":
                    await wq.retry(item, due=now + rng.randint(0, 30), error="again")
                elif outcome == "release":
                    await wq.release(item, now=now)
                else:
                    await wq.dead_letter(item, now=now, error="gave up")
            else:
                key = rng.choice(listing).key
                await wq.redrive("q", key, now=now, replay=rng.random() < 0.5)
            await settle()
