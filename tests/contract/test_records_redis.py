"""The record store on Redis: the shared contract, and what Redis adds (nodes racing on one
version, prefixes that mean something to ``ZRANGEBYLEX``, an unreachable server, one hash
slot).

Each test gets a key prefix of its own and deletes its keys afterwards; no
test flushes the database, which others may use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service
from tests.contract.private_servers import closed_port
from tests.contract.records_contract import RecordStoreContract, StoreFactory

from polyport.backends.memory import MemoryRecordStore
from polyport.backends.redis import RedisRecordStore
from polyport.core.errors import ConfigError, Unavailable
from polyport.core.records import ABSENT, MAX_KEY, RecordStore

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


class TestRedisRecordStore(RecordStoreContract):
    """Each node a RedisRecordStore with a client of its own, on the test's prefix."""

    @pytest.fixture
    def make_store(self, prefix: str) -> StoreFactory:
        def make(name: str = "store") -> RecordStore:
            return RedisRecordStore(URL, prefix=f"{prefix}-{name}")

        return make


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisRecordStore]:
    found = RedisRecordStore(URL, prefix=prefix)
    await found.open()
    yield found
    await found.close()


async def test_of_writers_racing_on_one_version_exactly_one_wins(
    store: RedisRecordStore, prefix: str
) -> None:
    """Two nodes, each with its own client, set the version both read, again and again:
    each round exactly one wins; counters raised by compare-and-set lose no increment."""
    other = RedisRecordStore(URL, prefix=prefix)
    await other.open()
    try:
        version = await store.put("race", b"0")
        for _ in range(50):
            wins = await asyncio.gather(
                store.put("race", b"mine", expect=version),
                other.put("race", b"theirs", expect=version),
            )
            assert sum(win is not None for win in wins) == 1
            version = next(win for win in wins if win is not None)
        created = await asyncio.gather(
            *(node.put("new", b"x", expect=ABSENT) for node in (store, other) for _ in range(5))
        )
        assert sum(win is not None for win in created) == 1

        async def count(node: RecordStore, times: int) -> None:
            for _ in range(times):
                while True:
                    found = await node.get("counter")
                    now = 0 if found is None else int(found.value)
                    expect = ABSENT if found is None else found.version
                    if await node.put("counter", b"%d" % (now + 1), expect=expect):
                        break

        await asyncio.gather(*(count(node, 20) for node in (store, other) for _ in range(4)))
        found = await other.get("counter")
        assert found is not None and found.value == b"160"
    finally:
        await other.close()


async def test_scans_under_prefixes_zrangebylex_would_read_as_syntax(
    store: RedisRecordStore,
) -> None:
    """``[``, ``(``, ``-``, ``+`` and characters whose UTF-8 bytes run high are ordinary in
    prefixes and cursors: every scan answers what the in-memory store answers."""
    oracle = MemoryRecordStore()
    keys = ["[", "[a", "[[", "(", "(a", "-", "-a", "+", "+a", "a", "a[", "a(", "a-", "a+"]
    keys += ["ÿ", "ÿa", "a\u00ff", "\ufffd", "\ufffda", "a\ufffd", "\U0001f600", "a\U0001f600"]
    keys += ["\u07ff", "\u0800", "~", "a~", "a b", "z" * MAX_KEY]
    for key in keys:
        await store.put(key, key.encode())
        await oracle.put(key, key.encode())
    prefixes = ["", "[", "(", "-", "+", "a", "a[", "a(", "a-", "a+", "ÿ", "\ufffd", "\U0001f600"]
    prefixes += ["\U0010fffd", "z", "b"]
    afters: list[str | None] = [None, "", "[", "(", "-", "+", "a", "a(", "ÿ", "\ufffd"]
    afters.append("\U0010fffd")
    for prefix in prefixes:
        for after in afters:
            for limit in (1, 3, 500):
                found = await store.scan(prefix, after=after, limit=limit)
                expected = await oracle.scan(prefix, after=after, limit=limit)
                pairs = [(r.key, r.value) for r in expected]
                assert [(r.key, r.value) for r in found] == pairs, (prefix, after, limit)


async def test_an_unreachable_redis_is_unavailable() -> None:
    """Nothing listens on the port: opening, reading, writing and scanning answer Unavailable."""
    records = RedisRecordStore(f"redis://127.0.0.1:{closed_port()}/0", prefix="polyport-test-gone")
    try:
        with pytest.raises(Unavailable) as failed:
            await records.open()
        assert failed.value.retry_after
        with pytest.raises(Unavailable):
            await records.put("k", b"")
        with pytest.raises(Unavailable):
            await records.get("k")
        with pytest.raises(Unavailable):
            await records.delete("k", expect=1)
        with pytest.raises(Unavailable):
            await records.scan("")
    finally:
        await records.close()


async def test_every_key_is_in_the_prefixs_hash_slot(store: RedisRecordStore, prefix: str) -> None:
    """Whatever the record keys hold (braces too), every key begins with the hash tag
    ``{prefix}``, so a Redis Cluster keeps them in one slot."""
    from redis.crc import key_slot

    for key in ("k", "{x}", "a}b{c", "with space", "{", "}"):
        await store.put(key, b"x")
    await store.put("gone", b"x")
    await store.delete("gone")
    keys = await _keys(prefix)
    assert len(keys) == 8  # six records, the key set, the version counter
    tag = b"{" + prefix.encode() + b"}"
    assert all(key.startswith(tag) for key in keys)
    assert {key_slot(key) for key in keys} == {key_slot(tag)}


async def test_a_client_passed_in_is_left_open(prefix: str) -> None:
    """The store closes only a client it made: the caller's keeps working."""
    from redis.asyncio import Redis

    client = Redis.from_url(URL)
    try:
        records = RedisRecordStore(client, prefix=prefix)
        await records.open()
        await records.put("k", b"v")
        await records.close()
        assert await client.ping()
    finally:
        await client.aclose()


def test_a_prefix_that_is_not_a_plain_name_is_refused() -> None:
    """Braces would change the hash tag that keeps the records in one slot: refused at start."""
    for prefix in ("", "a}b", "{x}", "a b", "x" * 201):
        with pytest.raises(ConfigError):
            RedisRecordStore(URL, prefix=prefix)
