"""The work queue on PostgreSQL: the shared contract (and the receivers' inbox contract over
it), and what nodes claiming at once add.

Needs PostgreSQL on 127.0.0.1:5432 (``POLYPORT_TEST_POSTGRESQL`` overrides the
URL); skips without it, fails under ``POLYPORT_REQUIRE_SERVICES=1``. Every
queue lives in a schema of its own, named at random here and dropped
afterwards; a second node is a second :class:`PostgresWorkQueue` over a
:class:`PostgresDatabase` (a pool) of its own on the same schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from tests.contract.inbox_contract import InboxFactory, ReceiverInboxContract
from tests.contract.postgres_schemas import URL, new_schema
from tests.contract.private_servers import closed_port
from tests.contract.workqueue_contract import LEASE, T0, QueueFactory, WorkQueueContract, claim

from polyport.backends.postgresql import (
    PostgresDatabase,
    PostgresEventLog,
    PostgresWorkQueue,
    outcomes,
    workqueue,
)
from polyport.core.errors import Unavailable
from polyport.core.inbox import QueuedReceiverInbox, ReceiverInbox
from polyport.core.workqueue import WorkItem, WorkQueue

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


def new_node(schema: str) -> PostgresWorkQueue:
    """A node's queue: a pool of its own on the shared schema."""
    return PostgresWorkQueue(PostgresDatabase(URL, schema=schema, max_size=4))


class TestPostgresWorkQueue(WorkQueueContract):
    NODES_CLAIM_AT_ONCE = True

    async def check_groups(self, wq: WorkQueue, claimable: list[WorkItem]) -> None:
        """Exactly the live rows the rule lets a claim take wait for nothing."""
        assert isinstance(wq, PostgresWorkQueue)
        async with wq.db.connection("checking") as conn:
            cursor = await conn.execute(
                f"SELECT key FROM {wq.db.schema}.work WHERE queue = 'q' "
                "AND status IN ('pending', 'running') AND NOT waits"
            )
            ready = {key for (key,) in await cursor.fetchall()}
        assert ready == {item.key for item in claimable}

    @pytest.fixture
    def make_queue(self, schemas: list[str]) -> QueueFactory:
        by_name: dict[str, str] = {}

        def make(name: str = "store") -> WorkQueue:
            if name not in by_name:
                by_name[name] = new_schema(schemas, name)
            return new_node(by_name[name])

        return make


class TestPostgresReceiverInbox(ReceiverInboxContract):
    """The receivers' inbox, one of the queue's users, passes its own contract here too."""

    @pytest.fixture
    def make_inbox(self, schemas: list[str]) -> InboxFactory:
        by_name: dict[str, str] = {}

        def make(name: str = "inbox") -> ReceiverInbox:
            if name not in by_name:
                by_name[name] = new_schema(schemas, name)
            return QueuedReceiverInbox(new_node(by_name[name]))

        return make


@pytest.fixture
async def nodes(schemas: list[str]) -> AsyncIterator[list[PostgresWorkQueue]]:
    """Four nodes over one queue table, each with a pool of its own, opened at once."""
    schema = new_schema(schemas, "nodes")
    queues = [new_node(schema) for _ in range(4)]
    await asyncio.gather(*(queue.open() for queue in queues))
    yield queues
    for queue in queues:
        await queue.close()


async def test_nodes_claiming_at_once_take_every_item_exactly_once(
    nodes: list[PostgresWorkQueue],
) -> None:
    """4 queues of 200 items, claimed by 4 nodes with 2 workers each, all at once, each
    claim naming every queue: every item is claimed once, acked once, and done."""
    queues = [f"q{n}" for n in range(4)]

    async def fill(queue: str) -> None:
        for n in range(200):
            assert await nodes[n % 4].enqueue(queue, f"k{n:03}", b"%d" % n, now=T0)

    await asyncio.gather(*(fill(queue) for queue in queues))

    async def work(node: PostgresWorkQueue) -> list[WorkItem]:
        taken: list[WorkItem] = []
        while batch := await node.claim(queues, now=T0, limit=7, lease=LEASE):
            taken += batch
            acked = await asyncio.gather(*(node.ack(item, now=T0 + 1) for item in batch))
            assert all(acked)
        return taken

    done = await asyncio.gather(*(work(node) for node in nodes for _ in range(2)))
    claimed = sorted((item.queue, item.key) for taken in done for item in taken)
    assert claimed == sorted((queue, f"k{n:03}") for queue in queues for n in range(200))
    assert sum(1 for taken in done if taken) > 1  # the workers did share the work
    for queue in queues:
        assert await nodes[0].counts(queue) == {"pending": 0, "running": 0, "done": 200, "dead": 0}


async def test_two_nodes_racing_the_same_claims_never_share_an_item(
    nodes: list[PostgresWorkQueue],
) -> None:
    """Claims sent at the same moment from two pools, over and over, each get items of
    their own, and together take everything due."""
    a, b, _, _ = nodes
    for n in range(60):
        await a.enqueue("q", f"k{n:02}", b"", now=T0)
    seen: list[str] = []
    for _ in range(10):
        mine, theirs = await asyncio.gather(claim(a, T0, limit=3), claim(b, T0, limit=3))
        assert len(mine) == len(theirs) == 3  # passed over each other's rows, never empty
        seen += [item.key for item in mine + theirs]
    assert sorted(seen) == [f"k{n:02}" for n in range(60)]


async def test_a_claim_passes_over_a_row_another_transaction_holds(
    nodes: list[PostgresWorkQueue],
) -> None:
    """A row locked by a transaction still open (another claim mid-statement) is skipped,
    not waited for; it is claimed once the lock is gone."""
    node = nodes[0]
    await node.enqueue("q", "held", b"", now=T0, due=T0 - 10)
    await node.enqueue("q", "free", b"", now=T0)
    async with await psycopg.AsyncConnection.connect(URL) as other:
        await other.execute(f"SELECT 1 FROM {node.db.schema}.work WHERE key = 'held' FOR UPDATE")
        got = await asyncio.wait_for(claim(node, T0), 5)
        assert [item.key for item in got] == ["free"]
        await other.rollback()
    assert [item.key for item in await claim(node, T0)] == ["held"]


async def test_a_late_outcome_and_a_takeover_racing_agree(
    nodes: list[PostgresWorkQueue],
) -> None:
    """A node acking as its lease runs out, while another claims the item over: either
    the ack wins and nothing is claimed, or the claim wins and the ack is refused."""
    late, taker, _, _ = nodes
    queues = [f"q{n:02}" for n in range(30)]  # one item each: a claim can take no other
    for queue in queues:
        await late.enqueue(queue, "a", b"", now=T0)
    held = await late.claim(queues, now=T0, limit=30, lease=LEASE)
    assert len(held) == 30
    for item in held:
        acked, taken = await asyncio.gather(
            late.ack(item, now=T0 + LEASE),
            taker.claim([item.queue], now=T0 + LEASE, limit=1, lease=LEASE),
        )
        assert acked != bool(taken), item.queue
        found = await taker.get(item.queue, "a")
        assert found is not None
        assert found.status == ("done" if acked else "running")


async def test_claims_and_outcomes_read_only_the_rows_they_touch(
    nodes: list[PostgresWorkQueue],
) -> None:
    """Over 30,000 items, a fifth of them in 50 groups (most of those waiting), a claim
    of 5 from two queues reads at most 5 rows of each from the ready index (checking
    those of a group with a probe of the group index) and updates them by primary key,
    and an ack (alone or in a batch; of a row of a group) reads its one row by primary
    key, to take its group's turn and to change it: in the generic plans the pool's
    connections keep (``plan_cache_mode=force_generic_plan``), with and without
    statistics, nothing scans the table."""
    node = nodes[0]
    schema = node.db.schema
    options = "-c plan_cache_mode=force_generic_plan"
    async with await psycopg.AsyncConnection.connect(URL, options=options) as conn:
        await conn.execute(  # stored in bulk: the test is about reading them
            f"INSERT INTO {schema}.work "
            '(queue, key, payload, status, created, due, lease, "group") '
            "SELECT 'q' || (n % 3), 'k' || n, '', s.status, 0, random() * 1000, "
            "       CASE WHEN s.status = 'running' THEN 'token' || n END, "
            "       CASE WHEN n % 5 = 0 THEN 'g' || (n % 50) END "
            "FROM generate_series(1, 30000) AS n, LATERAL (SELECT "
            "    (ARRAY['pending', 'running', 'done', 'dead'])[n % 4 + 1] AS status) AS s"
        )
        await conn.execute(  # as enqueues would have left them: all but the heads wait
            f"UPDATE {schema}.work AS w SET waits = true "
            "WHERE w.status IN ('pending', 'running') AND EXISTS (SELECT 1 "
            f'    FROM {schema}.work AS e WHERE e.queue = w.queue AND e."group" = w."group" '
            "    AND e.seq < w.seq AND e.status IN ('pending', 'running'))"
        )
        await conn.commit()
        # As a node first sees the table (autovacuum has not analysed it yet), then with
        # statistics: a plan that is right in only one of them costs a node either way.
        for analysed in (False, True):
            if analysed:
                await conn.execute(f"ANALYZE {schema}.work")
                await conn.commit()
            claim = await _generic_plan(
                conn,
                node._claim_sql,
                {
                    "queues": "ARRAY['q0', 'q1']",
                    "now": "2000",
                    "limit": "5",
                    "until": "2060",
                    "owner": "'node-a'",
                },
            )
            ack = await _generic_plan(  # k5 is running, in q2, under token5, of group g5
                conn,
                node._outcomes.batch_sql,
                [
                    "ARRAY['ack']",
                    "ARRAY['q2']",
                    "ARRAY['k5']",
                    "ARRAY['token5']",
                    "ARRAY[1.0]",
                    "ARRAY[NULL]::text[]",
                    "ARRAY[NULL]::bytea[]",
                ],
            )
            alone = await _generic_plan(
                conn,
                node._outcomes.one_sql["ack"],
                {"queue": "'q2'", "key": "'k5'", "lease": "'token5'", "at": "1", "result": "NULL"},
            )
            for plan in (claim, ack, alone):
                kinds = {n["Node Type"] for n in plan}
                assert not kinds & {"Seq Scan", "Bitmap Heap Scan", "Hash Join"}, (analysed, kinds)
                assert not [n for n in plan if n["Node Type"] == "Sort" and n["Actual Rows"] > 10]
            due = [n for n in claim if n.get("Index Name") == "work_ready"]
            assert len(due) == 1 and due[0]["Actual Loops"] == 2 and due[0]["Actual Rows"] <= 5
            assert "$2" in due[0]["Index Cond"]  # a generic plan: parameters, not values
            assert due[0].get("Rows Removed by Filter", 0) == 0  # no waiting row read
            (group,) = [n for n in claim if n.get("Index Name") == "work_group"]
            assert group["Actual Loops"] <= 10  # a probe per row of a group taken
            updated = [n for n in claim if n.get("Index Name") == "work_pkey"]
            assert len(updated) == 1 and updated[0]["Actual Loops"] == 5
            for plan in (ack, alone):
                reads = [
                    (n.get("Index Name"), n["Actual Rows"])
                    for n in plan
                    if n.get("Relation Name") == "work" and "Scan" in n["Node Type"]
                ]
                assert reads == [("work_pkey", 1)] * 2, analysed  # the turn's, the change's


async def _generic_plan(
    conn: psycopg.AsyncConnection[Any], statement: str, params: dict[str, str] | list[str]
) -> list[dict[str, Any]]:
    """The nodes of a queue's statement as its generic plan runs it with ``params`` (SQL
    literals, by placeholder name or in order); what it changed is rolled back."""
    if isinstance(params, dict):
        for n, name in enumerate(params, 1):
            statement = statement.replace(f"%({name})s", f"${n}")
    else:
        for n in range(1, len(params) + 1):
            statement = statement.replace("%s", f"${n}", 1)
    values = ", ".join(params.values() if isinstance(params, dict) else params)
    await conn.execute(f"PREPARE measured AS {statement}")
    cursor = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE measured({values})")
    row = await cursor.fetchone()
    await conn.rollback()
    await conn.execute("DEALLOCATE measured")  # PREPARE is not undone by a rollback
    assert row is not None
    return list(_plan_nodes(row[0][0]["Plan"]))


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def test_nodes_opening_at_once_create_the_table_once(schemas: list[str]) -> None:
    """Eight nodes (queues and event logs) opening a fresh schema together all succeed."""
    schema = new_schema(schemas, "start")
    stores: list[PostgresWorkQueue | PostgresEventLog] = []
    for _ in range(4):
        stores.append(new_node(schema))
        stores.append(PostgresEventLog(PostgresDatabase(URL, schema=schema, max_size=2)))
    await asyncio.gather(*(store.open() for store in stores))
    try:
        queue = stores[0]
        assert isinstance(queue, PostgresWorkQueue)
        assert await queue.enqueue("q", "a", b"", now=T0)
    finally:
        for store in stores:
            await store.close()


async def test_the_log_and_the_queue_share_one_pool(schemas: list[str]) -> None:
    """A node's log and queue over one database: the pool closes with its last user."""
    database = PostgresDatabase(URL, schema=new_schema(schemas, "shared"), max_size=2)
    log, queue = PostgresEventLog(database), PostgresWorkQueue(database)
    await log.open()
    await queue.open()
    pool = database.pool
    await log.close()
    assert await queue.enqueue("q", "a", b"", now=T0)
    assert database.pool is pool
    await queue.close()
    with pytest.raises(RuntimeError):
        _ = database.pool


async def test_an_unreachable_database_is_unavailable() -> None:
    """Opening a queue on a port where nothing listens fails fast with Unavailable, and the
    client's message names nothing internal."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    queue = PostgresWorkQueue(PostgresDatabase(url, timeout=0.5))
    with pytest.raises(Unavailable) as failed:
        await queue.open()
    assert "127.0.0.1" not in failed.value.message


async def test_a_dropped_connection_is_unavailable_once_and_loses_nothing(
    nodes: list[PostgresWorkQueue],
) -> None:
    """When the server ends a node's connections, reads are tried again on a new one, and a
    write either happens or fails with Unavailable."""
    node = nodes[0]
    await node.enqueue("q", "a", b"1", now=T0)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"polyport:{node.db.schema}"],
        )
    found = await node.get("q", "a")
    assert found is not None and found.payload == b"1"
    stored = []
    for n in range(3):
        try:
            stored.append(await node.enqueue("q", f"b{n}", b"", now=T0))
        except Unavailable:
            stored.append(await node.get("q", f"b{n}") is not None)
    keys = {item.key for item in await node.items("q")}
    assert keys == {"a"} | {f"b{n}" for n, ok in enumerate(stored) if ok}
    assert stored[-1]


async def test_a_queue_whose_table_is_gone_is_created_anew(
    nodes: list[PostgresWorkQueue],
) -> None:
    """When the database loses the table (its schema dropped), the next statement creates it
    again and runs: the items are gone, the queue works."""
    a, b, _, _ = nodes
    await a.enqueue("q", "a", b"", now=T0)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"DROP SCHEMA {a.db.schema} CASCADE")  # made by this test's fixture
    assert await b.get("q", "a") is None
    assert await a.enqueue("q", "a", b"again", now=T0) is True
    assert [item.payload for item in await claim(b, T0)] == [b"again"]


async def test_an_error_text_postgresql_cannot_hold_is_stored_readably(
    nodes: list[PostgresWorkQueue],
) -> None:
    """NUL and lone surrogates (text PostgreSQL refuses) are replaced in errors, not fatal."""
    node = nodes[0]
    await node.enqueue("q", "a", b"", now=T0)
    (item,) = await claim(node, T0)
    assert await node.retry(item, due=T0, error="bad\x00byte \udcff") is True
    found = await node.get("q", "a")
    assert found is not None and found.error == "bad\N{REPLACEMENT CHARACTER}byte ?"


async def test_a_purge_deletes_in_batches_and_spares_live_items(
    nodes: list[PostgresWorkQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge and a drop of more rows than one statement deletes count every row."""
    monkeypatch.setattr(workqueue, "DELETE_BATCH", 4)
    node = nodes[0]
    for n in range(10):
        await node.enqueue("q", f"k{n}", b"", now=T0)
    for item in await claim(node, T0, limit=9):
        await node.ack(item, now=T0 + 1)
    assert await node.purge("q", T0 + 2) == 9
    assert await node.counts("q") == {"pending": 1, "running": 0, "done": 0, "dead": 0}
    for n in range(10):
        await node.enqueue("r", f"k{n}", b"", now=T0)
    assert await node.drop("r") == 10
    assert await node.items("r") == []


async def test_a_purge_racing_redrives_never_forgets_a_redriven_item(
    nodes: list[PostgresWorkQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead items redriven by one node while another purges them in small batches: each is
    either redriven (and kept, pending) or purged (and its redrive refused), never both."""
    monkeypatch.setattr(workqueue, "DELETE_BATCH", 3)
    purger, driver, _, _ = nodes
    keys = [f"k{n:03}" for n in range(120)]
    for key in keys:
        await purger.enqueue("q", key, b"", now=T0)
    for item in await claim(purger, T0, limit=len(keys)):
        await purger.dead_letter(item, now=T0 + 1, error="gave up")

    async def redrive_all() -> dict[str, bool]:
        # From the newest back, as the purge goes from the oldest on: they meet midway.
        return {key: await driver.redrive("q", key, now=T0 + 2) for key in reversed(keys)}

    purged, redriven = await asyncio.gather(purger.purge("q", T0 + 10), redrive_all())
    purged += await purger.purge("q", T0 + 10)  # what the first passed over, if anything
    for key, ok in redriven.items():
        found = await purger.get("q", key)
        if ok:
            assert found is not None and found.status == "pending", key
        else:
            assert found is None, key
    assert purged == sum(not ok for ok in redriven.values())
    assert 0 < purged < len(keys)  # the race did happen both ways


@pytest.mark.parametrize("bounds", [None, (3, 10)], ids=["one-batch", "small-batches"])
async def test_outcomes_given_at_once_are_settled_together_each_for_its_own_item(
    nodes: list[PostgresWorkQueue],
    monkeypatch: pytest.MonkeyPatch,
    bounds: tuple[int, int] | None,
) -> None:
    """Acks, retries, releases and dead letters of one node given in the same moment
    (written together, in a statement or a few; or, bounded to 3 outcomes or 10 bytes of
    results a statement, in many) each change their own item as if alone; two outcomes
    of one claim given together settle it once."""
    if bounds is not None:
        monkeypatch.setattr(outcomes, "SETTLE_BATCH", bounds[0])
        monkeypatch.setattr(outcomes, "SETTLE_BYTES", bounds[1])
    node = nodes[0]
    for n in range(40):
        await node.enqueue("q", f"k{n:02}", b"", now=T0)
    held = await claim(node, T0, limit=40)
    assert await node.retry(held[0], due=T0, error="first") is True  # an error ack clears
    held[0] = (await claim(node, T0, limit=1))[0]
    calls = []
    for n, item in enumerate(held):
        kind = n % 4
        if kind == 0:
            result = b"r%d" % n
            calls.append(node.ack(item, now=T0 + 1, result=bytearray(result) if n % 8 else result))
        elif kind == 1:
            calls.append(node.retry(item, due=T0 + 30, error=f"e{n}"))
        elif kind == 2:
            calls.append(node.release(item, now=int(T0) + 2))  # an int among floats
        else:
            calls.append(node.dead_letter(item, now=T0 + 3, error=f"d{n}"))
    twice = [node.dead_letter(item, now=T0 + 9, error="twice") for item in held[:8]]
    answers = await asyncio.gather(*calls, *twice)
    assert all(answers[:40])
    assert not any(answers[40:])  # the first outcome of each won; the second found it settled
    for n, item in enumerate(held):
        found = await node.get("q", item.key)
        assert found is not None and found.lease is None and found.owner is None
        wanted = [
            ("done", None, T0 + 1, b"r%d" % n, item.attempts, item.due),
            ("pending", f"e{n}", None, None, item.attempts, T0 + 30),
            ("pending", None, None, None, item.attempts - 1, T0 + 2),
            ("dead", f"d{n}", T0 + 3, None, item.attempts, item.due),
        ][n % 4]
        got = (found.status, found.error, found.finished, found.result, found.attempts, found.due)
        assert got == wanted, item.key


async def test_an_outcome_whose_caller_left_before_it_was_sent_is_never_written(
    nodes: list[PostgresWorkQueue],
) -> None:
    """While one statement of outcomes waits (on a row another transaction holds), an
    outcome given and then cancelled is dropped from the next; close waits for the rest."""
    node = nodes[0]
    for key in ("slow", "left"):
        await node.enqueue("q", key, b"", now=T0)
    slow, left = await claim(node, T0, limit=2)
    async with await psycopg.AsyncConnection.connect(URL) as other:
        await other.execute(f"SELECT 1 FROM {node.db.schema}.work WHERE key = 'slow' FOR UPDATE")
        first = asyncio.create_task(node.ack(slow, now=T0 + 1))
        await asyncio.sleep(0.2)  # its statement is in flight, waiting for the row
        assert not first.done()
        gone = asyncio.create_task(node.ack(left, now=T0 + 1))
        await asyncio.sleep(0)  # queued behind it
        gone.cancel()
        await other.rollback()
    assert await first is True
    with pytest.raises(asyncio.CancelledError):
        await gone
    found = await node.get("q", "left")
    assert found is not None and found.status == "running"
    # Outcomes given just before close are written before the pool goes.
    late = asyncio.create_task(node.ack(left, now=T0 + 2))
    await asyncio.sleep(0)
    await node.close()
    await node.open()
    assert await late is True
    found = await node.get("q", "left")
    assert found is not None and found.status == "done"


#: The work table as schemas made before ordering groups hold it.
TABLE_BEFORE_GROUPS = """
CREATE TABLE {schema}.work (
    queue text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    payload bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    created double precision NOT NULL,
    due double precision NOT NULL,
    lease text,
    owner text,
    claimed double precision,
    finished double precision,
    error text,
    result bytea,
    PRIMARY KEY (queue, key),
    CHECK ((status = 'running') = (lease IS NOT NULL)),
    CHECK (status = 'running' OR owner IS NULL)
);
CREATE INDEX work_due ON {schema}.work (queue, due, seq) WHERE status IN ('pending', 'running');
CREATE INDEX work_by_seq ON {schema}.work (queue, seq);
CREATE INDEX work_finished ON {schema}.work (queue, finished) WHERE status IN ('done', 'dead');
INSERT INTO {schema}.work (queue, key, payload, status, attempts, created, due, lease, owner,
    claimed, finished)
VALUES ('q', 'waiting', '\\x01', 'pending', 1, 1, 5, NULL, NULL, 2, NULL),
       ('q', 'running', '\\x02', 'running', 1, 1, 100, 'token', 'node', 40, NULL),
       ('q', 'done', '\\x03', 'done', 1, 1, 1, NULL, NULL, 1, 2);
"""


async def test_a_table_from_before_groups_is_upgraded_in_place(schemas: list[str]) -> None:
    """Nodes opening it at once add the group columns and indexes (the ready index
    replacing the due index); its items read back without a group and keep working, and
    groups work beside them."""
    schema = new_schema(schemas, "old")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(TABLE_BEFORE_GROUPS.replace("{schema}", schema))
    first, second = new_node(schema), new_node(schema)
    await asyncio.gather(first.open(), second.open())
    try:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
            cursor = await admin.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s", [schema]
            )
            indexes = {name for (name,) in await cursor.fetchall()}
        assert {"work_ready", "work_group"} <= indexes
        assert "work_due" not in indexes
        items = {item.key: item for item in await first.items("q")}
        assert {key: item.group for key, item in items.items()} == dict.fromkeys(
            ("waiting", "running", "done")
        )
        assert await first.enqueue("q", "g1", b"", now=10, group="g") is True
        assert await second.enqueue("q", "g2", b"", now=10, group="g") is True
        got = await first.claim(["q"], now=10, limit=10, lease=LEASE)
        assert [item.key for item in got] == ["waiting", "g1"]
        assert await second.ack(items["running"], now=11) is True  # the old lease settles
        assert await second.next_due(["q"]) == 10 + LEASE
        for item in got:
            assert await first.ack(item, now=12) is True
        taken = await second.claim(["q"], now=12, limit=10, lease=LEASE)
        assert [item.key for item in taken] == ["g2"]
    finally:
        await first.close()
        await second.close()


async def test_an_enqueue_into_a_group_waits_for_the_one_before_it_to_commit(
    nodes: list[PostgresWorkQueue],
) -> None:
    """Two enqueues into one group from two nodes: the second, drawing its seq once the
    first has committed, comes after it — it never commits first with the larger seq,
    which would let a claim take the later item, then the earlier beside it. Another
    group does not wait."""
    node = nodes[0]
    schema = node.db.schema
    async with await psycopg.AsyncConnection.connect(URL) as other:  # a transaction held open
        cursor = await other.execute(
            f"SELECT {schema}.work_enqueue_in_group('q', 'first', '', 0, 0, 'g')"
        )
        assert await cursor.fetchone() == (True,)
        second = asyncio.create_task(node.enqueue("q", "second", b"", now=T0, group="g"))
        assert await node.enqueue("q", "elsewhere", b"", now=T0, group="h") is True
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting for the group's turn
        assert [item.key for item in await claim(nodes[1], T0, limit=10)] == ["elsewhere"]
        await other.commit()
    assert await second is True
    first, later = await node.get("q", "first"), await node.get("q", "second")
    assert first is not None and later is not None and first.seq < later.seq
    (taken,) = await claim(nodes[1], T0, limit=10)
    assert taken.key == "first"


async def test_nodes_working_groups_at_once_keep_each_in_order(
    nodes: list[PostgresWorkQueue],
) -> None:
    """Four nodes enqueueing into 6 groups (and outside any) while 8 workers claim, ack,
    retry and dead-letter at once: a group never has two items running, and each
    group's items finish in seq order."""
    groups = [f"g{n}" for n in range(6)]
    running: dict[str, str] = {}
    finished: dict[str, list[int]] = {group: [] for group in groups}
    enqueued = 0

    async def produce(node: PostgresWorkQueue, offset: int) -> None:
        nonlocal enqueued
        for n in range(30):
            group = groups[(n + offset) % len(groups)]
            assert await node.enqueue("q", f"{offset}-{n}", b"", now=T0, group=group)
            if n % 5 == 0:
                assert await node.enqueue("q", f"{offset}-{n}-free", b"", now=T0)
            enqueued += 1 + (n % 5 == 0)

    async def work(node: PostgresWorkQueue) -> int:
        done = idle = 0
        while idle < 40:
            taken = await node.claim(["q"], now=T0, limit=4, lease=LEASE)
            if not taken:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for item in taken:
                if item.group is not None:
                    assert item.group not in running, (item.key, running)
                    running[item.group] = item.key
            await asyncio.sleep(0)  # the others claim meanwhile
            for item in taken:
                if item.group is not None:
                    del running[item.group]
                if item.attempts == 1 and item.seq % 7 == 0:
                    assert await node.retry(item, due=T0, error="again")
                    continue
                if item.group is not None:
                    finished[item.group].append(item.seq)
                if item.seq % 11 == 0:
                    assert await node.dead_letter(item, now=T0, error="no")
                else:
                    assert await node.ack(item, now=T0)
                done += 1
        return done

    results = await asyncio.gather(
        *(produce(node, n) for n, node in enumerate(nodes)),
        *(work(node) for node in nodes for _ in range(2)),
    )
    assert sum(result for result in results if result) == enqueued
    for group in groups:
        assert finished[group] == sorted(finished[group]), group
        assert len(finished[group]) == 20
