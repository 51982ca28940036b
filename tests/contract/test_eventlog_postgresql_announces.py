"""The event log on PostgreSQL announces its own appends: one commit stores and announces.

Each append notifies the bus of its schema in the append's own transaction, so
another node's :class:`PostgresBus` hears the newest seq of every channel the
append grew — and only once it is committed: PostgreSQL delivers a
notification on commit, and a rolled back transaction's never. Needs
PostgreSQL on 127.0.0.1:5432 (``POLYPORT_TEST_POSTGRESQL`` overrides the URL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from tests.contract.bus_contract import Heard
from tests.contract.postgres_schemas import URL, new_schema

from polyport.backends.announcements import decode
from polyport.backends.postgresql import PostgresBus, PostgresDatabase, PostgresEventLog
from polyport.backends.postgresql.bus import channel_name
from polyport.core.errors import Unavailable
from polyport.core.events import Pattern

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(
    schemas: list[str],
) -> AsyncIterator[tuple[list[PostgresEventLog], PostgresBus, Heard]]:
    """Three nodes' logs on one schema, each with a pool of its own, and a fourth node's
    bus listening, with what it heard."""
    schema = new_schema(schemas, "announces")
    logs = [PostgresEventLog(PostgresDatabase(URL, schema=schema)) for _ in range(3)]
    for log in logs:
        await log.open()
    bus = PostgresBus(PostgresDatabase(URL, schema=schema))
    await bus.open()
    heard = Heard()
    bus.listen(heard)
    yield logs, bus, heard
    await bus.close()
    for log in logs:
        await log.close()


async def test_an_append_is_heard_by_another_nodes_bus(
    cluster: tuple[list[PostgresEventLog], PostgresBus, Heard],
) -> None:
    """A batch over two channels: the listening node hears each channel's newest seq,
    without any bus of the appending node sending a word."""
    (log, _, _), bus, heard = cluster
    assert log.announces_appends
    events = await log.append_many(
        [("orders/created", "t", b"1"), ("chat/room", "t", b"2"), ("orders/created", "t", b"3")],
        1.0,
    )
    await heard.until(lambda pairs: len(pairs) >= 2)
    assert heard.announcements == [
        [("orders/created", events[2].seq), ("chat/room", events[1].seq)]
    ]
    assert bus.malformed == 0


async def test_a_failed_append_announces_nothing(
    cluster: tuple[list[PostgresEventLog], PostgresBus, Heard],
) -> None:
    """An append whose transaction fails at its commit — after its NOTIFY was queued in
    it — is announced to no one; the next append is, with the seq the failed one gave back."""
    (log, _, _), _, heard = cluster
    schema = log.db.schema
    before = await log.head()
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        # Runs at commit, after the statement and its pg_notify: the commit fails.
        await admin.execute(
            f"""
            CREATE FUNCTION {schema}.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'poison';
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON {schema}.eventlog_events
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                WHEN (NEW.channel = 'poison') EXECUTE FUNCTION {schema}.refuse_poison();
            """
        )
    with pytest.raises(Unavailable):
        await log.append("poison", "t", b"{}", 1.0)
    assert await log.head() == before
    event = await log.append("fine", "t", b"{}", 2.0)
    assert event.seq == before + 1
    await heard.until(lambda pairs: ("fine", event.seq) in pairs)
    await asyncio.sleep(0.2)  # anything else would have come by now, in commit order
    assert heard.pairs() == [("fine", event.seq)]


async def test_announcements_arrive_in_log_order(
    cluster: tuple[list[PostgresEventLog], PostgresBus, Heard],
) -> None:
    """Three nodes append singles and batches at once: each commit's announcement arrives
    after the one before it, so the newest seqs heard only grow, up to the head."""
    logs, _, heard = cluster

    async def write(log: PostgresEventLog, who: int) -> None:
        for i in range(40):
            if i % 5 == 0:
                await log.append_many([(f"w/{who}", "t", b"{}"), ("w/all", "t", b"{}")], 1.0)
            else:
                await log.append(f"w/{i % 3}", "t", b"{}", 1.0)

    await asyncio.gather(*(write(log, who) for who, log in enumerate(logs)))
    head = await logs[0].head()
    await heard.until(lambda pairs: any(seq == head for _, seq in pairs))
    newest = [max(seq for _, seq in announcement) for announcement in heard.announcements]
    assert newest == sorted(set(newest))  # strictly increasing: commit order is seq order
    assert newest[-1] == head
    # Every channel's last event was announced.
    for channel in {f"w/{n}" for n in range(3)} | {"w/all"}:
        last = max(e.seq for e in (await logs[0].read([Pattern.parse(channel)], 0, 1000)).events)
        assert (channel, last) in heard.pairs()


async def test_a_notify_that_fails_does_not_fail_the_append(
    cluster: tuple[list[PostgresEventLog], PostgresBus, Heard],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When announcing fails as a full NOTIFY queue does (program_limit_exceeded, the
    commit refused), the events are stored without a word, and appends go unannounced
    for a while; then they are announced again."""
    (log, _, _), _, heard = cluster
    schema = log.db.schema
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(
            f"""
            CREATE SEQUENCE {schema}.queue_full_tries;
            CREATE FUNCTION {schema}.queue_full() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                -- The first try (the announcing statement) only: a sequence is not rolled back.
                IF nextval('{schema}.queue_full_tries') = 1 THEN
                    RAISE EXCEPTION 'too many notifications in the NOTIFY queue'
                        USING ERRCODE = 'program_limit_exceeded';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER queue_full AFTER INSERT ON {schema}.eventlog_events
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                WHEN (NEW.channel = 'full') EXECUTE FUNCTION {schema}.queue_full();
            """
        )
    with caplog.at_level(logging.WARNING, logger="polyport.postgresql"):
        stored = await log.append("full", "t", b"{}", 1.0)
    assert "could not announce" in caplog.text
    assert [e.id for e in (await log.read([Pattern.parse("full")], 0, 10)).events] == [stored.id]
    quiet = await log.append("quiet", "t", b"{}", 2.0)  # within the quiet time: not announced
    log._quiet_until = 0.0  # the quiet time is over
    loud = await log.append("loud", "t", b"{}", 3.0)
    await heard.until(lambda pairs: ("loud", loud.seq) in pairs)
    assert ("full", stored.seq) not in heard.pairs()
    assert ("quiet", quiet.seq) not in heard.pairs()


async def test_a_batch_past_one_payload_is_announced_in_several(schemas: list[str]) -> None:
    """A batch over 100 channels of 250 characters needs several NOTIFY payloads (each
    under 8000 bytes): every channel's newest seq arrives, in well-formed messages."""
    schema = new_schema(schemas, "large")
    log = PostgresEventLog(PostgresDatabase(URL, schema=schema))
    await log.open()
    try:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as listener:
            await listener.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(channel_name(schema)))
            )
            items = [(f"c{i:03d}/" + "x" * 245, "t", b"{}") for i in range(100)] * 2
            events = await log.append_many(items, 1.0)
            payloads: list[str] = []
            async for notify in listener.notifies(timeout=2.0, stop_after=10):
                payloads.append(notify.payload)
        assert len(payloads) > 3
        assert all(len(payload.encode()) < 8000 for payload in payloads)
        pairs = [pair for payload in payloads for pair in decode(payload) or []]
        assert sorted(pairs) == sorted((e.channel, e.seq) for e in events[100:])
    finally:
        await log.close()
