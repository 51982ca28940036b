"""The leased work queue on Redis: the shared contract (and the receivers' inbox's, which rides
on it), and what Redis adds (nodes claiming in parallel, an unreachable server, one hash slot,
deletion in batches).

Each test gets a key prefix of its own and deletes its keys afterwards; no
test flushes the database, which others may use.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service
from tests.contract.inbox_contract import InboxFactory, ReceiverInboxContract
from tests.contract.private_servers import closed_port
from tests.contract.workqueue_contract import LEASE, T0, QueueFactory, WorkQueueContract, claim

from polyport.backends.redis import RedisWorkQueue
from polyport.backends.redis import workqueue as redis_workqueue
from polyport.core.errors import ConfigError, Unavailable
from polyport.core.inbox import QueuedReceiverInbox, ReceiverInbox
from polyport.core.workqueue import WorkItem, WorkQueue

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "redis://127.0.0.1:6379/0"


async def _keys(prefix: str) -> list[bytes]:
    """Every key whose name holds ``prefix``, wherever in the name."""
    from redis.asyncio import Redis

    client = Redis.from_url(URL)
    try:
        return [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
    finally:
        await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix no one else uses; its keys are deleted after the test."""
    require_service("Redis", 6379)
    from redis.asyncio import Redis

    base = f"polyport-test-{uuid.uuid4().hex}"
    yield base
    keys = await _keys(base)
    if keys:
        client = Redis.from_url(URL)
        try:
            await client.delete(*keys)
        finally:
            await client.aclose()


class TestRedisWorkQueue(WorkQueueContract):
    """Each node a RedisWorkQueue with a client of its own, on the test's prefix."""

    NODES_CLAIM_AT_ONCE = True

    async def check_groups(self, wq: WorkQueue, claimable: list[WorkItem]) -> None:
        """The due set holds exactly the items the rule lets a claim take."""
        assert isinstance(wq, RedisWorkQueue)
        due = f"{wq._base}:wq:q:1:q:0:due"  # queue "q", generation 0
        members = await wq._client.zrange(due, 0, -1)
        assert [member[16:].decode() for member in members] == [item.key for item in claimable]

    @pytest.fixture
    def make_queue(self, prefix: str) -> QueueFactory:
        def make(name: str = "store") -> WorkQueue:
            return RedisWorkQueue(URL, prefix=f"{prefix}-{name}")

        return make


class TestRedisReceiverInbox(ReceiverInboxContract):
    """The receivers' inbox on the Redis work queue, shared by nodes as the queue is."""

    @pytest.fixture
    def make_inbox(self, prefix: str) -> InboxFactory:
        def make(name: str = "inbox") -> ReceiverInbox:
            return QueuedReceiverInbox(RedisWorkQueue(URL, prefix=f"{prefix}-{name}"))

        return make


@pytest.fixture
async def wq(prefix: str) -> AsyncIterator[RedisWorkQueue]:
    queue = RedisWorkQueue(URL, prefix=prefix)
    await queue.open()
    yield queue
    await queue.close()


async def test_nodes_claiming_in_parallel_take_each_item_exactly_once(prefix: str) -> None:
    """Four nodes, each in a thread of its own with its own client, drain four queues of
    200 items (claims of a few items across all queues, each acked): every item is claimed
    and settled once, and every queue ends all done."""
    queues = [f"q{n}" for n in range(4)]
    setup = RedisWorkQueue(URL, prefix=prefix)
    await setup.open()
    try:
        for queue in queues:
            for n in range(200):
                assert await setup.enqueue(queue, f"k{n:03}", b"%d" % n, now=T0 - n % 7)
    finally:
        await setup.close()

    started = threading.Barrier(4, timeout=10)

    async def work(seed: int) -> list[tuple[str, str]]:
        node = RedisWorkQueue(URL, prefix=prefix)
        await node.open()
        rng, taken = random.Random(seed), []
        try:
            started.wait()  # all connected: none finds the queues drained by the others
            while items := await node.claim(queues, now=T0, limit=rng.randint(1, 7), lease=LEASE):
                for item in items:
                    assert await node.ack(item, now=T0 + 1)
                    taken.append((item.queue, item.key))
        finally:
            await node.close()
        return taken

    def run(seed: int) -> list[tuple[str, str]]:
        return asyncio.run(work(seed))

    found = await asyncio.gather(*(asyncio.to_thread(run, seed) for seed in range(4)))
    taken = Counter(pair for node in found for pair in node)
    assert len(taken) == 800 and set(taken.values()) == {1}
    assert all(found), "each node claimed some"
    check = RedisWorkQueue(URL, prefix=prefix)
    await check.open()
    try:
        for queue in queues:
            assert await check.counts(queue) == {"pending": 0, "running": 0, "done": 200, "dead": 0}
    finally:
        await check.close()


async def test_claims_across_queues_go_earliest_due_first_then_by_seq(wq: RedisWorkQueue) -> None:
    """Candidates of several queues merge by due time; equal times go in enqueue order,
    whatever the keys' order as text."""
    await wq.enqueue("a", "z", b"", now=T0, due=T0 - 1)
    await wq.enqueue("b", "y", b"", now=T0, due=T0 - 1)
    await wq.enqueue("a", "x", b"", now=T0, due=T0 - 1)
    await wq.enqueue("b", "early", b"", now=T0, due=T0 - 2)
    await wq.enqueue("c", "earliest", b"", now=T0, due=T0 - 3)
    got = await claim(wq, T0, limit=3, queues=("a", "b", "a"))
    assert [(item.queue, item.key) for item in got] == [("b", "early"), ("a", "z"), ("b", "y")]
    rest = await claim(wq, T0, limit=10, queues=("b", "a"))
    assert [item.key for item in rest] == ["x"]


async def test_times_round_trip_exactly(wq: RedisWorkQueue) -> None:
    """Floats that have no short decimal form come back as the same floats."""
    now, lease = 0.1 + 0.2, 1 / 3
    await wq.enqueue("q", "a", b"", now=now / 7, due=now)
    found = await wq.get("q", "a")
    assert found is not None and (found.created, found.due) == (now / 7, now)
    assert await wq.next_due(["q"]) == now
    (item,) = await wq.claim(["q"], now=now, limit=1, lease=lease)
    assert (item.claimed, item.due) == (now, now + lease)
    assert await wq.next_due(["q"]) == now + lease
    assert await wq.ack(item, now=1e300) is True
    found = await wq.get("q", "a")
    assert found is not None and found.finished == 1e300


async def test_redrives_move_an_item_between_the_sets(wq: RedisWorkQueue) -> None:
    """A dead or replayed done item leaves the finished sets: counted pending, listed
    pending, claimable, and out of a purge's reach."""
    for key in ("dead", "done"):
        await wq.enqueue("q", key, b"", now=T0)
    dead, done = await claim(wq, T0, limit=2)
    await wq.dead_letter(dead, now=T0, error="x")
    await wq.ack(done, now=T0)
    assert await wq.redrive("q", "dead", now=T0 + 1) is True
    assert await wq.redrive("q", "done", now=T0 + 2, replay=True) is True
    assert await wq.counts("q") == {"pending": 2, "running": 0, "done": 0, "dead": 0}
    assert [item.key for item in await wq.items("q", status="pending")] == ["done", "dead"]
    assert await wq.purge("q", T0 + 1000) == 0
    assert [item.key for item in await claim(wq, T0 + 2)] == ["dead", "done"]


async def test_an_unreachable_redis_is_unavailable() -> None:
    """Nothing listens on the port: opening, enqueueing and claiming answer Unavailable."""
    queue = RedisWorkQueue(f"redis://127.0.0.1:{closed_port()}/0", prefix="polyport-test-gone")
    try:
        with pytest.raises(Unavailable) as failed:
            await queue.open()
        assert failed.value.retry_after
        with pytest.raises(Unavailable):
            await queue.enqueue("q", "a", b"", now=T0)
        with pytest.raises(Unavailable):
            await queue.claim(["q"], now=T0, limit=1, lease=LEASE)
    finally:
        await queue.close()


async def test_every_key_is_in_the_prefixs_hash_slot(wq: RedisWorkQueue, prefix: str) -> None:
    """Whatever the queue names and groups hold (braces too), every key begins with the
    hash tag ``{prefix}``, so a Redis Cluster keeps them in one slot."""
    from redis.crc import key_slot

    for queue in ("q", "{x}", "a}b{c", "with space"):
        for n in range(3):
            await wq.enqueue(queue, f"{{k}}{n}", b"", now=T0)
            await wq.enqueue(queue, f"{{g}}{n}", b"", now=T0, group="{g}")
        one, two, *_ = await claim(wq, T0, queues=(queue,))
        await wq.ack(one, now=T0)
        await wq.dead_letter(two, now=T0, error="x")
    keys = await _keys(prefix)
    assert len(keys) > 20
    tag = b"{" + prefix.encode() + b"}"
    assert all(key.startswith(tag) for key in keys)
    assert {key_slot(key) for key in keys} == {key_slot(tag)}


async def test_a_drop_deletes_every_key_of_the_queue_in_batches(
    wq: RedisWorkQueue, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items in every state, of groups or not, deleted a few per call: only the store's own
    counters remain."""
    monkeypatch.setattr(redis_workqueue, "BATCH", 3)
    for n in range(10):
        await wq.enqueue("q", f"k{n}", b"x" * 100, now=T0)
    for n in range(6):
        await wq.enqueue("q", f"g{n}", b"", now=T0, group=("g", "{h}")[n % 2])
    done, dead, running, *_ = await claim(wq, T0, limit=3)
    await wq.ack(done, now=T0)
    await wq.dead_letter(dead, now=T0, error="x")
    assert await wq.drop("q") == 16
    assert sorted(await _keys(prefix)) == [
        b"{" + prefix.encode() + b"}:wq:gens",
        b"{" + prefix.encode() + b"}:wq:seq",
    ]
    assert await wq.ack(running, now=T0) is False
    assert await wq.counts("q") == {"pending": 0, "running": 0, "done": 0, "dead": 0}


async def test_a_drop_whose_deletion_was_interrupted_is_finished_by_the_next(
    wq: RedisWorkQueue, prefix: str
) -> None:
    """A node that died after the drop's first script left the old items unreachable; the
    next drop, on any node, deletes them."""
    for n in range(5):
        await wq.enqueue("q", f"k{n}", b"", now=T0)
    await wq._run(redis_workqueue._DROP, "q")  # the drop's first step, then the node dies
    assert await wq.items("q") == []
    assert await wq.enqueue("q", "k0", b"new", now=T0) is True
    assert len(await _keys(prefix)) > 5
    other = RedisWorkQueue(URL, prefix=prefix)
    await other.open()
    try:
        assert await other.drop("nowhere") == 0
    finally:
        await other.close()
    found = await wq.get("q", "k0")
    assert found is not None and found.payload == b"new"
    assert await wq.counts("q") == {"pending": 1, "running": 0, "done": 0, "dead": 0}
    assert len(await _keys(prefix)) == 5  # gens, seq, the item, its due and pending sets


async def test_a_purge_goes_on_past_one_batch(
    wq: RedisWorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_workqueue, "BATCH", 3)
    for n in range(10):
        await wq.enqueue("q", f"k{n}", b"", now=T0)
    for item in await claim(wq, T0, limit=10):
        await wq.ack(item, now=T0 + int(item.key[1:]))
    assert await wq.purge("q", T0 + 7) == 7
    assert sorted(item.key for item in await wq.items("q")) == ["k7", "k8", "k9"]


def test_a_prefix_that_is_not_a_plain_name_is_refused() -> None:
    """Braces would change the hash tag that keeps the queues in one slot: refused at start."""
    for prefix in ("", "a}b", "{x}", "a b", "x" * 201):
        with pytest.raises(ConfigError):
            RedisWorkQueue(URL, prefix=prefix)
