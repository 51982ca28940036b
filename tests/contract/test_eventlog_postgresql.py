"""The event log on PostgreSQL: the shared contract, and what a cluster of nodes adds.

Needs PostgreSQL on 127.0.0.1:5432 (``POLYPORT_TEST_POSTGRESQL`` overrides the
URL); skips without it, fails under ``POLYPORT_REQUIRE_SERVICES=1``. Every log
lives in a schema of its own, named at random here and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from tests.contract.eventlog_contract import Factory, SharedEventLogContract, fill, p
from tests.contract.postgres_schemas import URL, new_schema

from polyport.backends.postgresql import PostgresDatabase, PostgresEventLog
from polyport.backends.postgresql.eventlog import channel_regex
from polyport.core.errors import MissingExtra, RecoveryFailed, Unavailable
from polyport.core.eventlog import EventLog, History
from polyport.core.events import Cursor, Event, Pattern, position

pytestmark = pytest.mark.timeout(60)


class TestPostgresEventLog(SharedEventLogContract):
    @pytest.fixture
    def make_log(self, schemas: list[str]) -> Factory:
        by_name: dict[str, str] = {}

        def make(history: History, name: str = "log") -> EventLog:
            if name not in by_name:
                by_name[name] = new_schema(schemas, name)
            return PostgresEventLog(PostgresDatabase(URL, schema=by_name[name]), history)

        return make


@pytest.fixture
async def nodes(schemas: list[str]) -> AsyncIterator[list[PostgresEventLog]]:
    """Three nodes over one log, each with a pool of its own."""
    schema = new_schema(schemas, "nodes")
    logs = [PostgresEventLog(PostgresDatabase(URL, schema=schema)) for _ in range(3)]
    for log in logs:
        await log.open()
    yield logs
    for log in logs:
        await log.close()


async def test_a_reader_following_concurrent_writers_misses_nothing(
    nodes: list[PostgresEventLog],
) -> None:
    """Readers that move their cursor to each read's end, while three nodes write
    single events and batches at once, end up with every event exactly once."""
    writers_done = asyncio.Event()

    async def write(log: PostgresEventLog, who: int) -> list[Event]:
        events: list[Event] = []
        for i in range(60):
            if i % 10 == 0:
                batch = [(f"w/{who}", "t", b"%d" % i)] * (1 + i % 7)
                events += await log.append_many(batch, 1.0)
            else:
                events.append(await log.append(f"w/{i % 3}", "t", b"%d" % i, 1.0))
        return events

    async def follow(log: PostgresEventLog, patterns: list[Pattern]) -> list[Event]:
        seen: list[Event] = []
        cursor = 0
        while True:
            finished = writers_done.is_set()
            result = await log.read(patterns, cursor, 7)
            seen += result.events
            cursor = result.last_seq
            if finished and not result.events:
                return seen

    readers = [
        asyncio.create_task(follow(nodes[0], p("w/#"))),
        asyncio.create_task(follow(nodes[1], p("w/0", "w/1", "w/2"))),
    ]
    written = await asyncio.gather(*(write(log, who) for who, log in enumerate(nodes)))
    writers_done.set()
    seqs = sorted(e.seq for events in written for e in events)
    assert len(set(seqs)) == len(seqs)
    for reader in readers:
        seen = await reader
        assert [e.seq for e in seen] == seqs
    for channel in ("w/0", "w/1", "w/2"):
        offsets = sorted(e.offset for events in written for e in events if e.channel == channel)
        assert offsets == list(range(1, len(offsets) + 1))


async def test_the_next_writer_waits_for_the_one_before_to_commit(
    nodes: list[PostgresEventLog],
) -> None:
    """A transaction that took seq N holds back the writer of N+1 until it commits, so
    a reader never sees N+1 without N: the head never passes an uncommitted seq."""
    a, b, reader = nodes
    await fill(a, "c", 2)
    head = await reader.head()
    schema = a.db.schema
    async with await psycopg.AsyncConnection.connect(URL) as slow:  # a transaction left open
        cursor = await slow.execute(
            f"SELECT out_seq FROM {schema}.eventlog_append("
            "ARRAY['c'], ARRAY['t'], ARRAY['\\x7b7d'::bytea], ARRAY[3.0::float8], 1000, 1100)"
        )
        row = await cursor.fetchone()
        assert row is not None and row[0] == head + 1
        later = asyncio.create_task(b.append("c", "t", b'"later"', 4.0))
        done, _ = await asyncio.wait([later], timeout=0.5)
        assert not done, "the next writer went ahead of an uncommitted seq"
        assert await reader.head() == head
        assert (await reader.read(p("c"), head, 10)).events == []
        await slow.commit()
    event = await asyncio.wait_for(later, 10)
    assert event.seq == head + 2 and event.offset == 4
    assert [e.seq for e in (await reader.read(p("c"), head, 10)).events] == [head + 1, head + 2]


async def test_wildcards_over_many_channels_read_the_log_in_order(
    nodes: list[PostgresEventLog],
) -> None:
    """Past the few-channels case a read scans the log by seq: same events, same pages."""
    log = nodes[0]
    items = [(f"m/{i % 90}/x", "t", b"%d" % i) for i in range(300)]
    items += [("m.a/1/x", "t", b'"dot"'), ("other", "t", b"{}")]
    written = await log.append_many(items, 1.0)
    for patterns, wanted in (
        (p("m/+/x"), [e for e in written if e.channel.startswith("m/")]),
        (p("#"), written),
        (p("m.a/#"), [written[-2]]),
        (p("m/3/x", "m/4/#"), [e for e in written if e.channel in ("m/3/x", "m/4/x")]),
    ):
        got: list[Event] = []
        cursor = 0
        while True:
            page = await log.read(patterns, cursor, 50)
            got += page.events
            if len(page.events) < 50:
                break
            cursor = page.last_seq
        assert [e.id for e in got] == [e.id for e in wanted]
        assert page.last_seq == await log.head()


def test_patterns_become_anchored_regular_expressions() -> None:
    """'+' is one segment, a final '#' the rest with its parent, and '.' is literal."""
    assert channel_regex(p("#")) is None
    assert channel_regex(p("a.b/+", "c/#")) == r"^(a\.b/[^/]+|c(/.*)?)$"
    assert channel_regex(p("+/x/#")) == "^([^/]+/x(/.*)?)$"


async def test_trims_by_age_and_by_count_while_nodes_append(
    nodes: list[PostgresEventLog], schemas: list[str]
) -> None:
    """Age trims on two nodes racing appends on a third neither deadlock nor break the bound."""
    schema = new_schema(schemas, "bounded")
    history = History(max_events=20, max_age=3600)
    logs = [PostgresEventLog(PostgresDatabase(URL, schema=schema), history) for _ in range(3)]
    for log in logs:
        await log.open()
    try:

        async def append(log: PostgresEventLog) -> None:
            for i in range(150):
                await log.append_many([(f"b/{i % 4}", "t", b"{}")] * 3, float(i))

        async def trim(log: PostgresEventLog) -> int:
            dropped = 0
            for cut in range(0, 150, 5):
                dropped += await log.trim_older_than(float(cut))
                await asyncio.sleep(0)
            return dropped

        await asyncio.gather(append(logs[0]), append(logs[1]), trim(logs[2]), trim(logs[1]))
        for info in await logs[2].channels():
            page = await logs[2].read([Pattern.parse(info.name)], info.trimmed_seq, 100)
            assert 1 <= len(page.events) <= 22
            assert [e.offset for e in page.events] == list(
                range(info.trimmed_offset + 1, info.last_offset + 1)
            )
    finally:
        for log in logs:
            await log.close()


async def test_a_dropped_connection_is_replaced(nodes: list[PostgresEventLog]) -> None:
    """When the server ends the node's connections, reads retry on a new one and an append
    either is stored or fails with Unavailable; nothing acknowledged is lost."""
    log = nodes[0]
    acknowledged = await fill(log, "c", 3)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"polyport:{log.db.schema}"],
        )
    assert [e.id for e in (await log.read(p("c"), 0, 10)).events] == acknowledged
    for _ in range(3):
        with contextlib.suppress(Unavailable):  # the first may meet the dropped connection
            acknowledged.append((await log.append("c", "t", b"{}", 2.0)).id)
    assert [e.id for e in (await log.read(p("c"), 0, 10)).events] == acknowledged


async def test_an_unreachable_database_is_unavailable() -> None:
    """Opening a log on a port where nothing listens fails fast with Unavailable."""
    log = PostgresEventLog(PostgresDatabase("postgresql://postgres@127.0.0.1:1/test", timeout=0.5))
    with pytest.raises(Unavailable) as failed:
        await log.open()
    assert "127.0.0.1" not in failed.value.message  # the client learns nothing internal


async def test_an_id_resolves_on_a_node_that_never_saw_the_channel(
    nodes: list[PostgresEventLog],
) -> None:
    """Channel epochs are rows: a node resolves ids of channels another node created."""
    a, b, _ = nodes
    ids = await fill(a, "fresh/channel", 4)
    assert await b.resolve(Cursor.parse(ids[1])) == (await a.resolve(Cursor.parse(ids[1])))
    assert {c.name for c in await b.channels()} == {"fresh/channel"}
    assert b.epoch == a.epoch


def test_without_the_driver_the_backend_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the backend without psycopg says which extra to install."""
    for name in list(sys.modules):
        if name.startswith("polyport.backends.postgresql"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtra, match=r"polyport\[postgresql\]"):
        importlib.import_module("polyport.backends.postgresql")


async def test_a_log_whose_tables_are_gone_begins_a_new_epoch_on_every_node(
    nodes: list[PostgresEventLog],
) -> None:
    """When the database loses the log (its schema dropped), the next statement creates it
    anew with a new epoch; every node learns it, and cursors of the old one fail."""
    a, b, _ = nodes
    ids = await fill(a, "c", 3)
    old_epoch, old_head = a.epoch, await a.head()
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"DROP SCHEMA {a.db.schema} CASCADE")  # made by this test's fixture
    event = await a.append("c", "t", b"{}", 5.0)
    assert a.epoch != old_epoch
    assert (event.offset, event.seq) == (1, 1)
    assert event.epoch != ids[0].split(":")[0]
    assert await b.head() == 1
    assert b.epoch == a.epoch
    with pytest.raises(RecoveryFailed):
        await b.resolve(Cursor.parse(ids[-1]))
    with pytest.raises(RecoveryFailed):
        await b.resolve(Cursor.parse(position(old_epoch, old_head)))


async def test_commits_are_synchronous_whatever_the_role_says(schemas: list[str]) -> None:
    """A role whose default is synchronous_commit=off still gets durable commits from polyport."""
    role = f"polyport_nosync_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"ALTER ROLE {role} SET synchronous_commit = off")
        await admin.execute(f"GRANT CREATE ON DATABASE test TO {role}")
    url = URL.replace("postgresql://postgres@", f"postgresql://{role}@")
    try:
        async with await psycopg.AsyncConnection.connect(url) as plain:
            row = await (await plain.execute("SHOW synchronous_commit")).fetchone()
            assert row is not None and row[0] == "off"  # the role's default, as set
        database = PostgresDatabase(url, schema=new_schema(schemas, "sync"))
        log = PostgresEventLog(database)
        await log.open()
        try:
            async with database.pool.connection() as conn:
                row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            assert row is not None and row[0] == "on"
        finally:
            await log.close()
    finally:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
            for schema in schemas:
                await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            schemas.clear()
            await admin.execute(f"REVOKE CREATE ON DATABASE test FROM {role}")
            await admin.execute(f"DROP ROLE {role}")
