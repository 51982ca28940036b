"""The event log on Redis: the shared contract, and what Redis adds (lost data, reads, driver).

Each test gets a key prefix of its own and deletes its keys afterwards; no
test flushes the database, which others may use.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service
from tests.contract.eventlog_contract import Factory, SharedEventLogContract, fill, p

from polyport.backends.redis import RedisEventLog
from polyport.backends.redis import eventlog as redis_eventlog
from polyport.core.errors import ConfigError, MissingExtra, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, position

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix no one else uses; its keys are deleted after the test."""
    require_service("Redis", 6379)
    from redis.asyncio import Redis

    base = f"polyport-test-{uuid.uuid4().hex}"
    yield base
    client = Redis.from_url(URL)
    try:
        keys = [key async for key in client.scan_iter(match="{" + base + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class TestRedisEventLog(SharedEventLogContract):
    @pytest.fixture
    def make_log(self, prefix: str) -> Factory:
        def make(history: History, name: str = "log") -> EventLog:
            return RedisEventLog(URL, history, prefix=f"{prefix}-{name}")

        return make


@pytest.fixture
async def log(prefix: str) -> AsyncIterator[RedisEventLog]:
    event_log = RedisEventLog(URL, History(max_events=1000, max_age=3600), prefix=prefix)
    await event_log.open()
    yield event_log
    await event_log.close()


async def _delete_keys(prefix: str) -> None:
    """What a Redis restarted without persistence holds of the log: nothing."""
    from redis.asyncio import Redis

    client = Redis.from_url(URL)
    try:
        keys = [key async for key in client.scan_iter(match="{" + prefix + "}*")]
        assert keys
        await client.delete(*keys)
    finally:
        await client.aclose()


async def test_a_redis_that_lost_its_data_is_a_new_epoch(log: RedisEventLog, prefix: str) -> None:
    """Every old cursor and position answers recovery failed; a reader of the old log is told."""
    ids = await fill(log, "c", 3)
    old_epoch, head = log.epoch, await log.head()
    other = RedisEventLog(URL, prefix=prefix)  # a second node on the same log
    await other.open()
    try:
        await _delete_keys(prefix)
        with pytest.raises(RecoveryFailed):
            await log.read(p("c"), head, 10)  # a subscriber's position in the lost log
        assert log.epoch != old_epoch
        event = await other.append("c", "t", b"{}", 5.0)  # the other node adopts the same epoch
        assert other.epoch == log.epoch
        assert (event.offset, event.seq) == (1, 1)
        assert event.epoch != ids[0].split(":")[0]
        for cursor in (ids[-1], position(old_epoch, head)):
            with pytest.raises(RecoveryFailed):
                await log.resolve(Cursor.parse(cursor))
        assert [e.id for e in (await log.read(p("c"), 0, 10)).events] == [event.id]
    finally:
        await other.close()


async def test_a_position_ahead_of_the_log_is_recovery_failed(log: RedisEventLog) -> None:
    """Only a lost history gives a position past the head: refused even without check."""
    await fill(log, "c", 2)
    for check in (True, False):
        with pytest.raises(RecoveryFailed):
            await log.read(p("c"), 5, 10, check=check)
        with pytest.raises(RecoveryFailed):
            await log.read(p("c/#"), 5, 10, check=check)


async def test_a_wildcard_read_scans_past_other_channels_in_batches(
    log: RedisEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan that looks at a few entries per call still finds every match, in order."""
    monkeypatch.setattr(redis_eventlog, "SCAN_BATCH", 7)
    await log.append_many([("noise", "t", b"%d" % i) for i in range(40)], 1.0)
    wanted = await log.append_many([("x/a", "t", b"1"), ("x/b", "t", b"2")], 2.0)
    await log.append_many([("noise", "t", b"%d" % i) for i in range(30)], 3.0)
    last = await log.append("x/a", "t", b"3", 4.0)
    page = await log.read(p("x/+"), 0, 2)
    assert [e.id for e in page.events] == [e.id for e in wanted]
    assert page.last_seq == wanted[-1].seq
    rest = await log.read(p("x/+"), page.last_seq, 10)
    assert [e.id for e in rest.events] == [last.id]
    assert rest.last_seq == await log.head()


async def test_a_wildcard_page_ends_at_its_limit_across_channels(log: RedisEventLog) -> None:
    """Channels interleaved: a full page is the first ``limit`` matches in seq order, no more."""
    channels = ["x/a", "x/b", "y", "x/a", "x/b", "x/a"]
    events = await log.append_many([(c, "t", b"%d" % i) for i, c in enumerate(channels)], 1.0)
    wanted = [e for e in events if e.channel != "y"]
    page = await log.read(p("x/#"), 0, 3)
    assert [e.id for e in page.events] == [e.id for e in wanted[:3]]
    assert page.last_seq == wanted[2].seq
    rest = await log.read(p("x/#"), page.last_seq, 3)
    assert [e.id for e in rest.events] == [e.id for e in wanted[3:]]


async def test_many_exact_channels_are_read_by_scanning(log: RedisEventLog) -> None:
    """Past EXACT_MAX exact channels a read scans the log: the same events, in order."""
    channels = [f"c{i}" for i in range(redis_eventlog.EXACT_MAX + 5)]
    events = await log.append_many([(c, "t", b"{}") for c in channels * 2], 1.0)
    few = await log.read(p(*channels[:3]), 0, 100)
    assert [e.id for e in few.events] == [e.id for e in events if e.channel in channels[:3]]
    many = await log.read(p(*channels), 0, 100)
    assert [e.id for e in many.events] == [e.id for e in events][:100]
    assert many.last_seq == events[99].seq


async def test_a_large_batch_is_written_in_chunks_in_order(
    log: RedisEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch over APPEND_CHUNK goes as several script calls in one pipeline, in order."""
    monkeypatch.setattr(redis_eventlog, "APPEND_CHUNK", 4)
    batch = await log.append_many([(f"c/{i % 3}", "t", b"%d" % i) for i in range(11)], 1.0)
    assert [e.seq for e in batch] == list(range(1, 12))
    assert [e.offset for e in batch if e.channel == "c/0"] == [1, 2, 3, 4]
    read = await log.read(p("c/#"), 0, 100)
    assert [(e.id, e.data) for e in read.events] == [(e.id, e.data) for e in batch]


async def test_concurrent_appends_share_script_calls_and_keep_their_order(
    log: RedisEventLog,
) -> None:
    """Appends of one loop iteration go together, each with its own offset and seq, in order."""
    events = await asyncio.gather(
        *(log.append(f"c/{i % 2}", "t", b"%d" % i, float(i)) for i in range(50))
    )
    assert [e.seq for e in events] == list(range(1, 51))
    assert [e.offset for e in events if e.channel == "c/1"] == list(range(1, 26))
    read = await log.read(p("c/#"), 0, 100)
    assert [(e.id, e.data, e.time) for e in read.events] == [(e.id, e.data, e.time) for e in events]


async def test_resolve_finds_every_held_offset(log: RedisEventLog) -> None:
    """The bisection over seqs finds each offset of a channel interleaved with another."""
    await log.append_many([("other", "t", b"{}")] * 7, 1.0)
    ids = []
    for i in range(30):
        batch = await log.append_many([("c", "t", b"{}"), *[("other", "t", b"{}")] * (i % 4)], 1.0)
        ids.append((batch[0].id, batch[0].seq))
    for event_id, seq in ids:
        assert await log.resolve(Cursor.parse(event_id)) == seq


async def test_trimming_by_age_goes_on_past_one_batch(
    log: RedisEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trim that looks at a few log entries per call still drops every expired event."""
    monkeypatch.setattr(redis_eventlog, "TRIM_BATCH", 3)
    for channel in ("a", "b"):
        await fill(log, channel, 5, t=100.0)
    kept = await log.append("a", "t", b"{}", 500.0)
    assert await log.trim_older_than(200.0) == 10
    assert [e.id for e in (await log.read(p("#"), 0, 100, check=False)).events] == [kept.id]
    assert {(c.name, c.trimmed_offset) for c in await log.channels()} == {("a", 5), ("b", 5)}


async def test_an_unreachable_redis_is_unavailable() -> None:
    """Nothing listens on the port: opening and appending answer Unavailable with a retry time."""
    log = RedisEventLog("redis://127.0.0.1:1/0", prefix="polyport-test-unreachable")
    try:
        with pytest.raises(Unavailable) as failed:
            await log.open()
        assert failed.value.retry_after
        with pytest.raises(Unavailable):
            await log.append("c", "t", b"{}", 1.0)
        # Appends that waited for a write in flight fail with it, each told.
        results = await asyncio.gather(
            *(log.append("c", "t", b"{}", 1.0) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
    finally:
        await log.close()


def test_a_prefix_that_is_not_a_plain_name_is_refused() -> None:
    """Braces would change the hash tag that keeps the log in one slot: refused at start."""
    for prefix in ("", "a}b", "{x}", "a b", "x" * 201):
        with pytest.raises(ConfigError):
            RedisEventLog(URL, prefix=prefix)


def test_without_the_driver_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making a Redis log without redis-py says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(MissingExtra) as missing:
        RedisEventLog(URL)
    assert missing.value.extra == "redis"
    assert "polyport[redis]" in str(missing.value)


async def test_a_burst_beyond_the_pool_waits_for_connections(log: RedisEventLog) -> None:
    """150 reads at once, more than the client keeps connections: each waits its turn
    instead of answering Unavailable from a Redis that is fine."""
    await fill(log, "burst", 3)
    results = await asyncio.gather(*(log.read(p("burst"), 0, 10) for _ in range(150)))
    assert all(len(result.events) == 3 for result in results)
