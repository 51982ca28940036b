"""The event hub: live fan-out, resume, slow subscribers, polling and long polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from polyport.backends.memory import MemoryEventLog
from polyport.core.errors import RecoveryFailed
from polyport.core.eventlog import History
from polyport.core.events import Pattern, PatternIndex
from polyport.core.hub import EventHub


@pytest.fixture
async def hub() -> AsyncIterator[EventHub]:
    h = EventHub(MemoryEventLog(History(max_events=10_000)), buffer=50)
    await h.start()
    yield h
    await h.stop()


def p(*texts: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts]


async def take(subscription: AsyncIterator[Any], n: int) -> list[Any]:
    out = []
    async with asyncio.timeout(5):
        async for event in subscription:
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_live_events_arrive_in_order(hub: EventHub) -> None:
    """A subscriber gets what is published after it subscribed, in order."""
    await hub.publish("before", "t", b"0")
    sub = await hub.subscribe(p("orders/+"))
    for i in range(5):
        await hub.publish(f"orders/{'ab'[i % 2]}", "t", b"%d" % i)
    await hub.publish("users/x", "t", b"{}")
    events = await take(sub, 5)
    assert [e.data for e in events] == [b"0", b"1", b"2", b"3", b"4"]
    sub.close()
    assert hub.subscriber_count == 0


async def test_resume_delivers_missed_then_live_without_duplicates(hub: EventHub) -> None:
    """Resuming from an id replays what was missed, then continues live, nothing twice."""
    first = await hub.publish("c", "t", b"1")
    await hub.publish("c", "t", b"2")
    await hub.publish("c", "t", b"3")
    sub = await hub.subscribe(p("c"), after=first.id)
    await hub.publish("c", "t", b"4")
    events = await take(sub, 3)
    assert [e.data for e in events] == [b"2", b"3", b"4"]
    await hub.publish("c", "t", b"5")
    assert [e.data for e in await take(sub, 1)] == [b"5"]
    sub.close()


async def test_batches_keep_to_their_limit_across_history_and_live(hub: EventHub) -> None:
    """``batch`` takes at most ``limit`` events, from the log then live, each once, in order."""
    first = await hub.publish("c", "t", b"1")
    for i in range(2, 6):
        await hub.publish("c", "t", b"%d" % i)
    sub = await hub.subscribe(p("c"), after=first.id)
    for i in range(6, 9):  # live, while the subscription still reads the log
        await hub.publish("c", "t", b"%d" % i)

    async def batch(limit: int) -> list[bytes]:
        return [e.data for e in await asyncio.wait_for(sub.batch(limit), 5)]

    assert await batch(2) == [b"2", b"3"]
    assert await batch(3) == [b"4", b"5", b"6"]
    assert await batch(1) == [b"7"]
    assert await batch(100) == [b"8"]  # the log read up to here: the buffer's copies are skipped
    for i in range(9, 14):
        await hub.publish("c", "t", b"%d" % i)
    assert await batch(2) == [b"9", b"10"]
    assert await batch(100) == [b"11", b"12", b"13"]
    await hub.publish("c", "t", b"14")
    assert await batch(100) == [b"14"]
    sub.close()

    live = await hub.subscribe(p("c"))
    waiting = asyncio.create_task(live.batch(100))
    await asyncio.sleep(0.01)  # it has read the log to its end and waits on the buffer
    await hub.publish("c", "t", b"15")
    assert [e.data for e in await asyncio.wait_for(waiting, 5)] == [b"15"]
    for i in range(16, 21):
        await hub.publish("c", "t", b"%d" % i)
    assert [e.data for e in await live.batch(2)] == [b"16", b"17"]
    assert [e.data for e in await live.batch(100)] == [b"18", b"19", b"20"]
    live.close()


async def test_a_slow_subscriber_neither_blocks_nor_loses(hub: EventHub) -> None:
    """Publishing never waits for a subscriber; an overflowing one catches up from the log."""
    slow = await hub.subscribe(p("c"), buffer=10)
    fast = await hub.subscribe(p("c"))
    received: list[bytes] = []

    async def read_fast() -> None:
        async for event in fast:
            received.append(event.data)
            if len(received) == 1000:
                return

    reader = asyncio.create_task(read_fast())
    for i in range(1000):
        await hub.publish("c", "t", b"%d" % i)
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the fast reader run
    assert len(slow._queue) <= 10  # memory stays bounded
    await asyncio.wait_for(reader, 5)
    assert received == [b"%d" % i for i in range(1000)]
    events = await take(slow, 1000)
    assert [e.data for e in events] == [b"%d" % i for i in range(1000)]
    slow.close()
    fast.close()


async def test_a_subscriber_too_slow_for_the_history_gets_recovery_failed() -> None:
    """When the log no longer holds what an overflowed subscriber missed, it is told."""
    hub = EventHub(MemoryEventLog(History(max_events=20)), buffer=5)
    await hub.start()
    try:
        sub = await hub.subscribe(p("c"))
        for i in range(100):
            await hub.publish("c", "t", b"%d" % i)
        with pytest.raises(RecoveryFailed):
            await take(sub, 100)
    finally:
        await hub.stop()


async def test_subscribe_from_a_lost_cursor_fails_at_once() -> None:
    """An explicit recovery-failed answer, never a silent gap."""
    hub = EventHub(MemoryEventLog(History(max_events=5)))
    await hub.start()
    try:
        first = await hub.publish("c", "t", b"0")
        for i in range(20):
            await hub.publish("c", "t", b"%d" % i)
        with pytest.raises(RecoveryFailed):
            await hub.subscribe(p("c"), after=first.id)
        assert hub.subscriber_count == 0
    finally:
        await hub.stop()


async def test_poll_answers_at_once_and_the_next_cursor_continues(hub: EventHub) -> None:
    """Polling returns what is there and a cursor that picks up exactly after it."""
    for i in range(3):
        await hub.publish("c", "t", b"%d" % i)
    first = await hub.poll(p("c"), after=None, limit=2)
    assert [e.data for e in first.events] == [b"0", b"1"]
    second = await hub.poll(p("c"), after=first.next, limit=10)
    assert [e.data for e in second.events] == [b"2"]
    empty = await hub.poll(p("c"), after=second.next)
    assert empty.events == []
    await hub.publish("c", "t", b"3")
    assert [e.data for e in (await hub.poll(p("c"), after=empty.next)).events] == [b"3"]


async def test_long_poll_holds_until_an_event_arrives(hub: EventHub) -> None:
    """With wait, the poll returns as soon as a matching event is published."""
    cursor = (await hub.poll(p("c/#"), after="now")).next

    async def later() -> None:
        await asyncio.sleep(0.2)
        await hub.publish("other", "t", b"no")
        await hub.publish("c/x", "t", b"yes")

    task = asyncio.create_task(later())
    result = await hub.poll(p("c/#"), after=cursor, wait=5)
    await task
    assert [e.data for e in result.events] == [b"yes"]


async def test_long_poll_times_out_empty(hub: EventHub) -> None:
    """Nothing new within the wait: an empty answer with a cursor to continue from."""
    started = time.perf_counter()
    result = await hub.poll(p("quiet"), after="now", wait=0.3)
    assert result.events == []
    assert time.perf_counter() - started >= 0.25
    assert result.next.endswith("@0")


async def test_type_filters_hide_events_without_ending_the_wait(hub: EventHub) -> None:
    """A reader only sees types it may read; others do not wake a long poll for nothing."""
    cursor = (await hub.poll(p("#"), after="now")).next

    async def later() -> None:
        await asyncio.sleep(0.1)
        await hub.publish("a", "secret", b"1")
        await asyncio.sleep(0.1)
        await hub.publish("a", "visible", b"2")

    task = asyncio.create_task(later())
    result = await hub.poll(p("#"), after=cursor, wait=5, types=frozenset({"visible"}))
    await task
    assert [e.type for e in result.events] == ["visible"]


def test_pattern_index_matches_exact_and_wildcards() -> None:
    """The subscriber index finds exactly the patterns matching a channel."""
    index: PatternIndex[str] = PatternIndex()
    for text in ("a/b", "a/+", "a/#", "#", "+/b", "a/b/c", "x"):
        index.add(Pattern.parse(text), text)
    assert sorted(index.match("a/b")) == ["#", "+/b", "a/#", "a/+", "a/b"]
    assert sorted(index.match("a")) == ["#", "a/#"]
    assert sorted(index.match("a/b/c")) == ["#", "a/#", "a/b/c"]
    index.remove(Pattern.parse("a/#"), "a/#")
    index.remove(Pattern.parse("a/b"), "a/b")
    assert sorted(index.match("a/b")) == ["#", "+/b", "a/+"]
    assert len(index) == 5


def test_pattern_overlap() -> None:
    """Two patterns overlap when some channel matches both."""

    def ov(a: str, b: str) -> bool:
        return Pattern.parse(a).overlaps(Pattern.parse(b))

    assert ov("orders/#", "orders/created")
    assert ov("+/created", "orders/+")
    assert ov("#", "x/y/z")
    assert not ov("orders/+", "users/+")
    assert not ov("a/b", "a/b/c")
    assert ov("a/#", "a")


async def test_a_slow_subscribers_buffer_is_bounded_in_bytes_too() -> None:
    """Big events fill a slow subscriber's buffer by bytes long before its count: it catches up."""
    hub = EventHub(MemoryEventLog(History(max_events=10_000)), buffer=1000, buffer_bytes=256 * 1024)
    await hub.start()
    try:
        sub = await hub.subscribe(p("big"))
        blob = b'"' + b"x" * (64 * 1024) + b'"'
        for _ in range(20):
            await hub.publish("big", "t", blob)
        await hub.publish_many([("big", "t", blob)] * 20)
        held = sum(len(e.data) for e in sub._queue)
        assert held <= 256 * 1024
        assert len(await take(sub, 40)) == 40  # nothing lost: the rest came from the log
    finally:
        await hub.stop()
