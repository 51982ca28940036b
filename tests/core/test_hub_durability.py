"""Acknowledged means durable: no subscriber, poller or answer shows an uncommitted event.

A publisher's own call returns at once (a handler publishing many events shares
one commit); what its caller is answered waits for :func:`settle_published`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from polyport.backends.sqlite import SqliteEventLog
from polyport.core.errors import Unavailable
from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub, settle_published


def committed_ids(path: Path) -> set[str]:
    """The ids another process would read from the file now."""
    with sqlite3.connect(path) as other:
        rows = other.execute(
            "SELECT c.epoch, e.offset FROM polyport_events e "
            "JOIN polyport_channels c ON c.name = e.channel"
        ).fetchall()
    return {f"{epoch}:{offset}" for epoch, offset in rows}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[EventHub]:
    h = EventHub(SqliteEventLog(str(tmp_path / "log.sqlite3")))
    await h.start()
    yield h
    await h.stop()


async def test_every_event_a_subscriber_or_publisher_sees_is_already_committed(
    hub: EventHub, tmp_path: Path
) -> None:
    """At the moment an event reaches a subscriber, or its publisher, another reader has it."""
    path = tmp_path / "log.sqlite3"
    subscription = await hub.subscribe([Pattern.parse("c/#")])
    seen_uncommitted: list[str] = []

    async def watch() -> None:
        async with asyncio.timeout(10):
            count = 0
            while count < 60:
                for event in await subscription.batch():
                    count += 1
                    if event.id not in committed_ids(path):
                        seen_uncommitted.append(event.id)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)

    async def publish_one(i: int) -> Event:
        event = await hub.publish(f"c/{i % 3}", "t", b"%d" % i)
        await settle_published()  # what the dispatcher does before it answers
        if event.id not in committed_ids(path):
            seen_uncommitted.append(event.id)
        return event

    for round in range(3):  # several publishers per loop iteration share one commit
        await asyncio.gather(*(publish_one(round * 10 + i) for i in range(10)))
        items = [(f"c/{i % 3}", "t", b"%d" % i) for i in range(10)]
        batch = await hub.publish_many(items)
        await settle_published()
        for event in batch:
            if event.id not in committed_ids(path):
                seen_uncommitted.append(event.id)
    await watcher
    assert seen_uncommitted == []


async def test_a_failed_commit_fails_the_publisher_and_reaches_no_one(hub: EventHub) -> None:
    """The publisher gets Unavailable, subscribers and pollers never see the event."""
    log = hub.log
    assert isinstance(log, SqliteEventLog)
    first = await hub.publish("c", "t", b'"first"')
    await settle_published()
    subscription = await hub.subscribe([Pattern.parse("c")])
    real = log.db._conn
    assert real is not None

    class FailingCommit:
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT":
                log.db._conn = real  # once
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    log.db._conn = FailingCommit()  # type: ignore[assignment]
    await hub.publish("c", "t", b'"lost"')
    with pytest.raises(Unavailable):
        await settle_published()  # the caller's answer is the failure
    kept = await hub.publish("c", "t", b'"kept"')
    await settle_published()
    async with asyncio.timeout(5):
        assert [e.data for e in await subscription.batch()] == [b'"kept"']
    poll = await hub.poll([Pattern.parse("c")], after=first.id)
    assert [(e.id, e.data) for e in poll.events] == [(kept.id, b'"kept"')]
    assert kept.offset == first.offset + 1  # the failed event's offset was never shown


async def test_a_handler_publishing_many_events_shares_one_commit(hub: EventHub) -> None:
    """Publishing 200 events one by one, then settling, costs one commit, not 200."""
    log = hub.log
    assert isinstance(log, SqliteEventLog)
    commits = 0
    real = log.db._conn
    assert real is not None

    class Counting:
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            nonlocal commits
            commits += sql == "COMMIT"
            return real.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    log.db._conn = Counting()  # type: ignore[assignment]
    try:
        for i in range(200):
            await hub.publish("burst", "t", b"%d" % i)
        await settle_published()
    finally:
        log.db._conn = real
    assert commits == 1
