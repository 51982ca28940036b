"""Acknowledged means durable: no publisher, subscriber or poller sees an uncommitted event."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from polyport.backends.sqlite import SqliteEventLog
from polyport.core.errors import Unavailable
from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub


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
        if event.id not in committed_ids(path):
            seen_uncommitted.append(event.id)
        return event

    for round in range(3):  # several publishers per loop iteration share one commit
        await asyncio.gather(*(publish_one(round * 10 + i) for i in range(10)))
        items = [(f"c/{i % 3}", "t", b"%d" % i) for i in range(10)]
        for event in await hub.publish_many(items):
            if event.id not in committed_ids(path):
                seen_uncommitted.append(event.id)
    await watcher
    assert seen_uncommitted == []


async def test_a_failed_commit_fails_the_publisher_and_reaches_no_one(hub: EventHub) -> None:
    """The publisher gets Unavailable, subscribers and pollers never see the event."""
    log = hub.log
    assert isinstance(log, SqliteEventLog)
    first = await hub.publish("c", "t", b'"first"')
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
    with pytest.raises(Unavailable):
        await hub.publish("c", "t", b'"lost"')
    kept = await hub.publish("c", "t", b'"kept"')
    async with asyncio.timeout(5):
        assert [e.data for e in await subscription.batch()] == [b'"kept"']
    poll = await hub.poll([Pattern.parse("c")], after=first.id)
    assert [(e.id, e.data) for e in poll.events] == [(kept.id, b'"kept"')]
    assert kept.offset == first.offset + 1  # the failed event's offset was never shown
