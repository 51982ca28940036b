"""The webhook store over each shared engine's work queue: the shared contract.

Deliveries ride on the engine's queue (a connection per node); the records are
a :class:`~polyport.backends.memory.MemoryRecordStore` shared by the test's
nodes, standing in until the engines implement the record store, and the log
is a memory log. What this checks is that the composition keeps its guarantees
over every engine's queue.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import psycopg
import pytest
from tests.conftest import require_service
from tests.contract.test_workqueue_postgresql import URL as POSTGRESQL
from tests.contract.webhookstore_contract import NodeFactory, WebhookStoreContract

from polyport.backends.memory import MemoryEventLog, MemoryRecordStore
from polyport.core.eventlog import EventLog
from polyport.core.webhookqueue import QueuedWebhookStore
from polyport.core.webhookstore import WebhookStore
from polyport.core.workqueue import WorkQueue
from polyport.webhooks.encryption import SecretCipher

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

REDIS = "redis://127.0.0.1:6379/0"
NATS = "nats://127.0.0.1:4222"


def nodes_over(queue_of: Callable[[str], WorkQueue]) -> NodeFactory:
    """Nodes whose queue is ``queue_of(name)`` and whose log and records the name shares."""
    shared: dict[str, tuple[MemoryEventLog, MemoryRecordStore]] = {}

    def make(name: str = "store", *, keys: Sequence[str] = ()) -> tuple[EventLog, WebhookStore]:
        log, records = shared.setdefault(name, (MemoryEventLog(), MemoryRecordStore()))
        store = QueuedWebhookStore(
            queue_of(name), records, log=log, follows_log=True, seal=SecretCipher(keys)
        )
        return log, store

    return make


class TestWebhookStoreOnPostgres(WebhookStoreContract):
    @pytest.fixture
    async def schemas(self) -> AsyncIterator[list[str]]:
        require_service("PostgreSQL", 5432)
        made: list[str] = []
        yield made
        async with await psycopg.AsyncConnection.connect(POSTGRESQL, autocommit=True) as conn:
            for schema in made:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    @pytest.fixture
    def make_node(self, schemas: list[str]) -> NodeFactory:
        from polyport.backends.postgresql import PostgresDatabase, PostgresWorkQueue

        by_name: dict[str, str] = {}

        def queue(name: str) -> WorkQueue:
            if name not in by_name:
                by_name[name] = f"polyport_test_{secrets.token_hex(5)}_{name}"
                schemas.append(by_name[name])
            return PostgresWorkQueue(PostgresDatabase(POSTGRESQL, schema=by_name[name], max_size=4))

        return nodes_over(queue)


class TestWebhookStoreOnRedis(WebhookStoreContract):
    @pytest.fixture
    async def prefix(self) -> AsyncIterator[str]:
        require_service("Redis", 6379)
        from redis.asyncio import Redis

        base = f"polyport-test-{uuid.uuid4().hex}"
        yield base
        client = Redis.from_url(REDIS)
        try:
            keys = [key async for key in client.scan_iter(match=f"*{base}*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    @pytest.fixture
    def make_node(self, prefix: str) -> NodeFactory:
        from polyport.backends.redis import RedisWorkQueue

        return nodes_over(lambda name: RedisWorkQueue(REDIS, prefix=f"{prefix}-{name}"))


class TestWebhookStoreOnNats(WebhookStoreContract):
    @pytest.fixture
    async def prefix(self) -> AsyncIterator[str]:
        require_service("NATS", 4222)
        base = f"pptest-{uuid.uuid4().hex[:12]}"
        yield base
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(NATS)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                if info.config.name.startswith(f"KV_{base}"):
                    with contextlib.suppress(NotFoundError):
                        await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    @pytest.fixture
    def make_node(self, prefix: str) -> NodeFactory:
        from polyport.backends.nats import NatsWorkQueue

        return nodes_over(lambda name: NatsWorkQueue(NATS, name=f"{prefix}-{name}"))
