"""The leased work queue on NATS JetStream: the shared contract, and what JetStream adds.

Each test gets bucket names of its own and deletes them afterwards; no test
touches a stream or bucket it did not make. The outage runs on a nats-server
of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from tests.conftest import require_service
from tests.contract.inbox_contract import InboxFactory, ReceiverInboxContract
from tests.contract.private_servers import PrivateServer, closed_port
from tests.contract.workqueue_contract import T0, QueueFactory, WorkQueueContract, claim

from polyport.backends.nats import NatsWorkQueue
from polyport.backends.nats.workrecords import INLINE_MAX, name_token, token_name
from polyport.core.errors import InvalidArgument, Unavailable
from polyport.core.inbox import QueuedReceiverInbox, ReceiverInbox
from polyport.core.workqueue import MAX_NAME, WorkItem, WorkQueue

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A queue name prefix no one else uses; the buckets made under it are deleted afterwards."""
    require_service("NATS", 4222)
    base = f"pptest-{uuid.uuid4().hex[:12]}"
    yield base
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name.startswith(f"KV_{base}"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(info.config.name)
    finally:
        await nc.close()


class TestNatsWorkQueue(WorkQueueContract):
    """Each node a NatsWorkQueue of its own connection, sharing the bucket of one name."""

    NODES_CLAIM_AT_ONCE = True

    async def check_groups(self, wq: WorkQueue, claimable: list[WorkItem]) -> None:
        """The node's live index proposes exactly the items the rule lets a claim take."""
        assert isinstance(wq, NatsWorkQueue)
        await wq.live.barrier()
        proposed = wq.live.index.due(["q"], float("inf"), 10_000, set())
        assert [token_name(c.key) for c in proposed] == [item.key for item in claimable]

    @pytest.fixture
    def make_queue(self, prefix: str) -> QueueFactory:
        def make(name: str = "store") -> WorkQueue:
            return NatsWorkQueue(URL, name=f"{prefix}-{name}")

        return make


class TestNatsReceiverInbox(ReceiverInboxContract):
    """The receivers' inbox, a user of the queue, over the same bucket of one name."""

    @pytest.fixture
    def make_inbox(self, prefix: str) -> InboxFactory:
        def make(name: str = "inbox") -> ReceiverInbox:
            return QueuedReceiverInbox(NatsWorkQueue(URL, name=f"{prefix}-{name}"))

        return make


@pytest.fixture
async def wq(prefix: str) -> AsyncIterator[NatsWorkQueue]:
    queue = NatsWorkQueue(URL, name=prefix)
    await queue.open()
    yield queue
    await queue.close()


async def _stored_messages(queue: NatsWorkQueue) -> int:
    return int((await queue.client.api(f"STREAM.INFO.{queue.stream}"))["state"]["messages"])


def test_names_become_distinct_key_tokens_and_back() -> None:
    """Plain names stay readable; separators, spaces and non-ASCII are escaped; names too
    long escaped are base64; every token is a valid KV key token and decodes back."""
    names = ["jobs", "a.b", "a*", "a>", "a b", "é", "€", " AC", "=20AC", "==x", "a/b", "{a}"]
    names += ["€" * MAX_NAME, "😀" * MAX_NAME, "x=" * (MAX_NAME // 2)]
    tokens = [name_token(name) for name in names]
    assert len(set(tokens)) == len(names)
    assert tokens[:3] == ["jobs", "a=2Eb", "a=2A"]
    for name, token in zip(names, tokens, strict=True):
        assert token_name(token) == name
        assert token and all(c.isalnum() or c in "_-=" for c in token)
        assert len(token) <= 1100
    assert name_token("😀" * MAX_NAME).startswith("==")


async def test_long_non_ascii_names_are_stored_and_listed(wq: NatsWorkQueue) -> None:
    """The longest names of four-byte characters still make a subject NATS accepts."""
    queue, key = "😀" * MAX_NAME, "€" * MAX_NAME
    assert await wq.enqueue(queue, key, b"x", now=T0)
    assert await wq.enqueue(queue, key, b"y", now=T0) is False
    (item,) = await wq.claim([queue], now=T0, limit=5, lease=60)
    assert (item.queue, item.key, item.payload) == (queue, key, b"x")
    assert [i.key for i in await wq.items(queue)] == [key]


async def test_large_fields_live_in_chunks_which_go_with_their_values(
    wq: NatsWorkQueue,
) -> None:
    """Payloads, errors and results over the inline size live in chunks beside the
    record; a value replaced or cleared takes its chunks along, and a purge leaves
    the bucket empty."""
    big = bytes(range(256)) * (INLINE_MAX // 128)  # two inline sizes
    await wq.enqueue("q", "a", big + b"!", now=T0)
    (item,) = await claim(wq, T0)
    assert item.payload == big + b"!"
    assert await wq.retry(item, due=T0, error="é" * INLINE_MAX) is True
    (item,) = await claim(wq, T0)
    assert await wq.retry(item, due=T0, error="x" * (INLINE_MAX + 1)) is True
    (item,) = await claim(wq, T0)
    assert item.error == "x" * (INLINE_MAX + 1)
    # The record, the payload's one chunk and the last error's one chunk.
    assert await _stored_messages(wq) == 3
    assert await wq.ack(item, now=T0 + 1, result=big) is True
    found = await wq.get("q", "a")
    assert found is not None
    assert (found.payload, found.result, found.error) == (big + b"!", big, None)
    assert await _stored_messages(wq) == 3  # the error's chunk gone, the result's come
    assert await wq.redrive("q", "a", now=T0 + 2, replay=True) is True
    assert await _stored_messages(wq) == 2  # the result's chunk gone with it
    (item,) = await claim(wq, T0 + 2)
    assert await wq.ack(item, now=T0 + 3, result=big[::-1]) is True
    assert await wq.purge("q", T0 + 4) == 1
    assert await _stored_messages(wq) == 0
    assert await wq.enqueue("q", "a", b"again", now=T0 + 5) is True


async def test_a_purged_key_is_enqueued_again_over_a_delete_marker(wq: NatsWorkQueue) -> None:
    """A purge that left its delete marker behind (a node stopped between the two
    steps) does not make the key look known."""
    await wq.enqueue("q", "a", b"", now=T0)
    (item,) = await claim(wq, T0)
    await wq.ack(item, now=T0)
    subject = f"$KV.{wq.bucket}.i.q.a"
    found = await wq.client.direct_get(wq.stream, {"last_by_subj": subject})
    assert found is not None
    await wq.client.request(subject, b"", {"KV-Operation": "DEL"})
    assert await wq.get("q", "a") is None
    assert await wq.enqueue("q", "a", b"new", now=T0 + 1) is True
    found_item = await wq.get("q", "a")
    assert found_item is not None and found_item.payload == b"new"


async def test_four_nodes_share_four_queues_and_take_each_item_once(prefix: str) -> None:
    """Four nodes claim and ack from four queues of 100 items at once: every item is
    taken exactly once, and all end done."""
    queues = [f"q{n}" for n in range(4)]
    nodes = [NatsWorkQueue(URL, name=prefix) for _ in range(4)]
    for node in nodes:
        await node.open()
    try:
        for queue in queues:
            for n in range(100):
                assert await nodes[n % 4].enqueue(queue, f"k{n:03}", b"%d" % n, now=T0)
        taken: list[list[WorkItem]] = [[] for _ in nodes]

        async def work(node: NatsWorkQueue, mine: list[WorkItem]) -> None:
            while True:
                got = await node.claim(queues, now=T0, limit=7, lease=600)
                if not got:
                    if await node.next_due(queues) is None:
                        return
                    await asyncio.sleep(0.01)  # others still hold items
                    continue
                mine += got
                settled = await asyncio.gather(*(node.ack(i, now=T0) for i in got))
                assert all(settled)

        await asyncio.gather(*(work(node, mine) for node, mine in zip(nodes, taken, strict=True)))
        everything = [(item.queue, item.key) for mine in taken for item in mine]
        assert sorted(everything) == sorted((q, f"k{n:03}") for q in queues for n in range(100))
        assert all(item.attempts == 1 for mine in taken for item in mine)
        assert sum(1 for mine in taken if mine) >= 2  # the work was shared
        for queue in queues:
            assert await nodes[3].counts(queue) == {
                "pending": 0,
                "running": 0,
                "done": 100,
                "dead": 0,
            }
    finally:
        for node in nodes:
            await node.close()


async def test_opens_are_counted(prefix: str) -> None:
    """One instance serves several users: it stays connected until the last one closes."""
    queue = NatsWorkQueue(URL, name=prefix)
    await queue.open()
    await queue.open()
    await queue.close()
    assert await queue.enqueue("q", "a", b"", now=T0) is True
    await queue.close()
    with pytest.raises(Unavailable):
        await queue.enqueue("q", "b", b"", now=T0)


def test_a_bad_bucket_name_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        NatsWorkQueue(URL, name="a.b")


async def test_an_unreachable_server_is_unavailable() -> None:
    """Opening against a port nothing listens on fails at once with Unavailable."""
    queue = NatsWorkQueue(f"nats://127.0.0.1:{closed_port()}", name="unreachable", timeout=2)
    with pytest.raises(Unavailable):
        await queue.open()


def _nats_server(store: Path) -> Callable[[int], list[str]]:
    """A JetStream nats-server keeping its files in ``store``, on the port it is given."""

    def command(port: int) -> list[str]:
        return [
            "/usr/sbin/nats-server",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(store),
        ]

    return command


async def test_a_lost_server_is_unavailable_and_a_node_follows_again_after(
    tmp_path: Path,
) -> None:
    """While the server is down every call is Unavailable; once it is back (same files)
    the node sees what another node enqueued meanwhile and claims it."""
    server = PrivateServer(_nats_server(tmp_path / "js"), tmp_path / "nats.log")
    await server.start()
    url = f"nats://127.0.0.1:{server.port}"
    node = NatsWorkQueue(url, name="outage", timeout=2)
    try:
        await node.open()
        assert await node.enqueue("q", "before", b"", now=T0)
        await server.stop()
        with pytest.raises(Unavailable):
            await node.enqueue("q", "during", b"", now=T0)
        with pytest.raises(Unavailable):
            await node.claim(["q"], now=T0, limit=5, lease=60)
        await server.start()
        other = NatsWorkQueue(url, name="outage", timeout=2)
        await other.open()
        try:
            assert await other.enqueue("q", "after", b"", now=T0 + 1)
        finally:
            await other.close()
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(Unavailable):
                    got = await node.claim(["q"], now=T0 + 1, limit=5, lease=60)
                    break
                await asyncio.sleep(0.2)
        assert [item.key for item in got] == ["before", "after"]
    finally:
        await node.close()
        await server.close()


async def test_listings_reach_items_older_than_the_newest_writes(wq: NatsWorkQueue) -> None:
    """A listing reads back from the newest writes in widening windows: items far older
    than the bucket's last thousand writes are listed too, newest first, with the cursor."""
    for n in range(3):
        await wq.enqueue("q", f"old{n}", b"", now=T0)
    for start in range(0, 1500, 250):
        await asyncio.gather(
            *(wq.enqueue("busy", f"k{n}", b"", now=T0) for n in range(start, start + 250))
        )
    await wq.enqueue("q", "new", b"", now=T0 + 1)
    page = await wq.items("q", limit=2)
    assert [item.key for item in page] == ["new", "old2"]
    page = await wq.items("q", limit=10, before=page[-1].seq)
    assert [item.key for item in page] == ["old1", "old0"]
    (item,) = await claim(wq, T0, limit=1, queues=("q",))
    assert [i.key for i in await wq.items("q", status="running")] == [item.key] == ["old0"]
    assert (await wq.counts("busy"))["pending"] == 1500


def test_the_live_index_keeps_the_newest_state_of_each_item() -> None:
    """Older news is ignored, final and deleted items leave, a drop forgets what came
    before it, and stale heap entries never come back as candidates."""
    from polyport.backends.nats.workindex import LiveIndex
    from polyport.backends.nats.workrecords import Summary

    index = LiveIndex()
    for revision in range(1, 500):  # one item rewritten many times: its heap is rebuilt
        index.apply("q", "a", revision, Summary("running", T0 + revision, 1, None))
    index.apply("q", "a", 3, Summary("pending", T0 - 1, 1, None))  # older than held
    index.apply("q", "b", 600, Summary("pending", T0, 600, None))
    index.apply("q", "c", 601, Summary("pending", T0, 601, None))
    index.apply("r", "d", 602, Summary("pending", T0 - 5, 602, None))
    assert [(c.queue, c.key) for c in index.due(["q", "r"], T0, 10, set())] == [
        ("r", "d"),
        ("q", "b"),
        ("q", "c"),
    ]
    assert [c.key for c in index.due(["q"], T0, 1, {("q", "b")})] == ["c"]
    assert index.next_due(["q"]) == T0
    index.apply("q", "b", 603, Summary("done", T0, 600, T0))
    index.apply("q", "c", 604, None)
    assert index.next_due(["q"]) == T0 + 499
    index.drop("q", 700)
    index.apply("q", "e", 701, Summary("pending", T0 + 7, 701, None))
    assert index.next_due(["q"]) == T0 + 7 and len(index) == 2


def test_the_live_index_offers_only_the_head_of_each_group() -> None:
    """Items behind their group's head are not candidates nor due, however early; the
    next one is offered as the head finishes, an earlier seq arriving late (a replay
    in revision order, or a redrive) displaces the head, and a drop forgets groups."""
    from polyport.backends.nats.workindex import LiveIndex
    from polyport.backends.nats.workrecords import Summary

    index = LiveIndex()
    index.apply("q", "b", 20, Summary("pending", T0 - 50, 20, None, "g"))
    index.apply("q", "c", 21, Summary("pending", T0 - 60, 21, None, "g"))
    index.apply("q", "x", 22, Summary("pending", T0 - 1, 22, None))
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["b", "x"]
    index.apply("q", "a", 23, Summary("pending", T0 + 5, 10, None, "g"))  # seq 10: the head
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["x"]
    assert index.next_due(["q"]) == T0 - 1
    index.apply("q", "x", 24, Summary("done", T0, 22, T0))
    assert index.next_due(["q"]) == T0 + 5  # not b's or c's earlier times
    index.apply("q", "a", 25, Summary("running", T0 + 60, 10, None, "g"))
    index.apply("q", "a", 26, Summary("dead", T0 + 60, 10, T0, "g"))
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["b"]
    index.apply("q", "a", 27, Summary("pending", T0 + 1, 10, None, "g"))  # redriven
    assert index.due(["q"], T0, 10, set()) == []
    index.apply("q", "a", 28, Summary("done", T0 + 1, 10, T0, "g"))
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["b"]  # offered once again
    index.apply("q", "a", 29, Summary("pending", T0 + 1, 10, None, "g"))
    index.apply("q", "a", 30, Summary("dead", T0 + 1, 10, T0, "g"))
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["b"]  # on the heap twice
    index.drop("q", 31)
    assert index.due(["q"], T0, 10, set()) == [] and len(index) == 0
    index.apply("q", "d", 32, Summary("pending", T0, 32, None, "g"))
    assert [c.key for c in index.due(["q"], T0, 10, set())] == ["d"]


def test_the_live_index_agrees_with_the_rule_through_random_news() -> None:
    """Random records (in and out of revision order, into groups and not, finishing,
    coming back, deleted, dropped): what the index proposes and reports due is what
    the rule says of the live items it holds (the newest record of each, as far as it
    has been told: older news about an item it holds is ignored)."""
    import random

    from polyport.backends.nats.workindex import LiveIndex
    from polyport.backends.nats.workrecords import Summary

    rng = random.Random(16)
    index = LiveIndex()
    held: dict[str, tuple[int, Summary]] = {}
    keys = [f"k{n}" for n in range(30)]
    seqs = {key: n for n, key in enumerate(keys, 1)}
    groups = {key: rng.choice([None, "g", "h", "i"]) for key in keys}
    revision = 100
    for step in range(3000):
        revision += 1
        key = rng.choice(keys)
        late = rng.random() < 0.1  # older news than the copy may hold
        at = revision - rng.randint(1, 50) if late else revision
        summary = None
        if rng.random() > 0.05:
            status = rng.choice(["pending", "running", "done", "dead"])
            summary = Summary(status, T0 + rng.randint(-20, 20), seqs[key], None, groups[key])
        index.apply("q", key, at, summary)
        if at > held.get(key, (0,))[0]:
            if summary is None or summary.status in ("done", "dead"):
                held.pop(key, None)
            else:
                held[key] = (at, summary)
        if step % 500 == 499:
            index.drop("q", revision + 1)  # everything so far is gone
            held = {}
        live = {key: summary for key, (_, summary) in held.items()}
        heads = {}
        for key, summary in sorted(live.items(), key=lambda pair: pair[1].seq):
            heads.setdefault(summary.group or key, key)  # a key without a group leads itself
        claimable = sorted((live[key].due, live[key].seq, key) for key in heads.values())
        due = [key for when, _, key in claimable if when <= T0]
        assert [c.key for c in index.due(["q"], T0, 100, set())] == due, step
        assert index.next_due(["q"]) == (claimable[0][0] if claimable else None), step


def test_record_headers_carry_the_group_and_read_without_one() -> None:
    """A record's header names its group's token last; one from before groups has four
    fields, and reads as of no group."""
    from polyport.backends.nats.workrecords import Summary, parse_header, work_header

    header = work_header("pending", T0, 7, None, name_token("a group"))
    assert parse_header(header, 9) == Summary("pending", T0, 7, None, name_token("a group"))
    assert token_name(header.split(" ")[-1]) == "a group"
    assert parse_header(f"done {T0!r} 0 {T0 + 1!r}", 9) == Summary("done", T0, 9, T0 + 1)
    with pytest.raises(ValueError, match="too many fields"):
        parse_header(f"done {T0!r} 0 - g extra", 9)
