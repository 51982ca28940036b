"""The record store on PostgreSQL: the shared contract, and what nodes writing at once add.

Needs PostgreSQL on 127.0.0.1:5432 (``POLYPORT_TEST_POSTGRESQL`` overrides the
URL); skips without it, fails under ``POLYPORT_REQUIRE_SERVICES=1``. Every
store lives in a schema of its own, named at random here and dropped
afterwards; a second node is a second :class:`PostgresRecordStore` over a
:class:`PostgresDatabase` (a pool) of its own on the same schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from tests.contract.postgres_schemas import URL, new_schema
from tests.contract.private_servers import closed_port
from tests.contract.records_contract import RecordStoreContract, StoreFactory

from polyport.backends.postgresql import PostgresDatabase, PostgresRecordStore, PostgresWorkQueue
from polyport.core.errors import Unavailable
from polyport.core.records import ABSENT, RecordStore, scan_all

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


def new_node(schema: str) -> PostgresRecordStore:
    """A node's store: a pool of its own on the shared schema."""
    return PostgresRecordStore(PostgresDatabase(URL, schema=schema, max_size=4))


class TestPostgresRecordStore(RecordStoreContract):
    @pytest.fixture
    def make_store(self, schemas: list[str]) -> StoreFactory:
        by_name: dict[str, str] = {}

        def make(name: str = "store") -> RecordStore:
            if name not in by_name:
                by_name[name] = new_schema(schemas, name)
            return new_node(by_name[name])

        return make


@pytest.fixture
async def nodes(schemas: list[str]) -> AsyncIterator[list[PostgresRecordStore]]:
    """Two nodes over one store, each with a pool of its own, opened at once."""
    schema = new_schema(schemas, "nodes")
    stores = [new_node(schema) for _ in range(2)]
    await asyncio.gather(*(store.open() for store in stores))
    yield stores
    for store in stores:
        await store.close()


async def test_of_writers_racing_on_one_version_exactly_one_wins(
    nodes: list[PostgresRecordStore],
) -> None:
    """Two pools, four writers each, all setting the version they read at once, round after
    round: each round exactly one wins, and the record holds its value and version."""
    a, b = nodes
    version = await a.put("counter", b"0")
    for round_ in range(20):
        assert version is not None
        writers = [
            node.put("counter", b"%d-%d" % (round_, n), expect=version)
            for n in range(4)
            for node in (a, b)
        ]
        answers = await asyncio.gather(*writers)
        won = [(n, v) for n, v in enumerate(answers) if v is not None]
        assert len(won) == 1, answers
        ((winner, new),) = won
        assert new > version
        found = await b.get("counter")
        assert found is not None and found.version == new
        assert found.value == b"%d-%d" % (round_, winner // 2)
        version = new


async def test_of_nodes_creating_one_key_at_once_exactly_one_wins(
    nodes: list[PostgresRecordStore],
) -> None:
    """Writes expecting absence from both pools at once: one creates, the others are refused;
    deletes expecting that version: one deletes."""
    a, b = nodes
    for n in range(10):
        key = f"k{n}"
        answers = await asyncio.gather(*(node.put(key, b"x", expect=ABSENT) for node in (a, b) * 3))
        created = [v for v in answers if v is not None]
        assert len(created) == 1
        gone = await asyncio.gather(*(node.delete(key, expect=created[0]) for node in (a, b) * 3))
        assert gone.count(True) == 1


async def test_versions_of_a_key_written_from_many_connections_only_grow(
    nodes: list[PostgresRecordStore],
) -> None:
    """Unconditional writes and deletes of one key from both pools at once: every version
    the key is read at is larger than the one read before, and none is given twice."""
    a, b = nodes
    given: list[int] = []
    seen: list[int] = []

    async def write(node: PostgresRecordStore, n: int) -> None:
        for m in range(15):
            if (n + m) % 5 == 0:
                await node.delete("k")
            else:
                version = await node.put("k", b"%d" % m)
                assert version is not None
                given.append(version)

    async def read() -> None:
        for _ in range(30):
            found = await a.get("k")
            if found is not None:
                seen.append(found.version)
            await asyncio.sleep(0)

    await asyncio.gather(*(write(node, n) for n, node in enumerate((a, b, a, b))), read())
    assert len(given) == len(set(given))
    assert seen == sorted(seen)


async def test_pattern_characters_in_a_prefix_are_plain(
    nodes: list[PostgresRecordStore],
) -> None:
    """``%``, ``_`` and ``\\`` in a prefix match only themselves (no LIKE pattern)."""
    node = nodes[0]
    keys = ["a%b/1", "a%b/2", "axb/1", "a_c/1", "abc/1", "a\\d/1", "a\\\\d/1", "a%/x", "a_"]
    for key in keys:
        await node.put(key, key.encode())
    assert [r.key for r in await node.scan("a%b/")] == ["a%b/1", "a%b/2"]
    assert [r.key for r in await node.scan("a_")] == ["a_", "a_c/1"]
    assert [r.key for r in await node.scan("a%")] == ["a%/x", "a%b/1", "a%b/2"]
    assert [r.key for r in await node.scan("a\\")] == ["a\\\\d/1", "a\\d/1"]
    assert [r.key for r in await scan_all(node, "a", page=2)] == sorted(keys)


async def test_keys_are_ordered_by_code_point_beyond_the_basic_plane(
    nodes: list[PostgresRecordStore],
) -> None:
    """Keys with characters from every UTF-8 length scan in code point order, and a prefix
    ending in the last printable plane still finds its keys."""
    node = nodes[0]
    keys = ["k/z", "k/é", "k/\uff21", "k/\U0001f600", "k/\U000e0100", "k/\u4e2d", "k/Z", "k/~"]
    for key in keys:
        await node.put(key, b"")
    assert [r.key for r in await node.scan("k/")] == sorted(keys)
    assert [r.key for r in await node.scan("k/\U0001f600")] == ["k/\U0001f600"]
    assert [r.key for r in await node.scan("k/", after="k/\u4e2d")] == sorted(keys)[-3:]


async def test_keys_no_record_can_have_are_simply_absent(
    nodes: list[PostgresRecordStore],
) -> None:
    """NUL (which PostgreSQL text cannot hold) in a key read, deleted or scanned: nothing."""
    node = nodes[0]
    await node.put("a", b"")
    await node.put("ab", b"")
    assert await node.get("a\x00") is None
    assert await node.delete("a\x00") is False
    assert await node.scan("a\x00") == []
    assert [r.key for r in await node.scan("", after="a\x00b")] == ["ab"]


async def test_the_store_shares_the_nodes_pool_with_the_work_queue(schemas: list[str]) -> None:
    """A node's records and queue over one database: the pool closes with its last user."""
    database = PostgresDatabase(URL, schema=new_schema(schemas, "shared"), max_size=2)
    records, queue = PostgresRecordStore(database), PostgresWorkQueue(database)
    await records.open()
    await queue.open()
    pool = database.pool
    await queue.close()
    assert await records.put("k", b"v") is not None
    assert database.pool is pool
    await records.close()
    with pytest.raises(RuntimeError):
        _ = database.pool


async def test_a_store_whose_table_is_gone_is_created_anew(
    nodes: list[PostgresRecordStore],
) -> None:
    """When the database loses the table (its schema dropped), the next statement creates it
    again and runs: the records are gone, the store works."""
    a, b = nodes
    await a.put("k", b"1")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"DROP SCHEMA {a.db.schema} CASCADE")  # made by this test's fixture
    assert await b.get("k") is None
    assert await a.put("k", b"again", expect=ABSENT) is not None
    found = await b.get("k")
    assert found is not None and found.value == b"again"


async def test_an_unreachable_database_is_unavailable() -> None:
    """Opening a store on a port where nothing listens fails fast with Unavailable, and the
    client's message names nothing internal."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    store = PostgresRecordStore(PostgresDatabase(url, timeout=0.5))
    with pytest.raises(Unavailable) as failed:
        await store.open()
    assert "127.0.0.1" not in failed.value.message
