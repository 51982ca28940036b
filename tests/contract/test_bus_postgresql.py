"""The bus on PostgreSQL LISTEN/NOTIFY: the bus contract, and what an engine's bus adds.

Needs PostgreSQL on 127.0.0.1:5432 (``POLYPORT_TEST_POSTGRESQL`` overrides the
URL). Buses of a test use a schema name no other test uses; a bus creates
nothing in the database (the schema names its channel only), so nothing is
left to drop. The outage ends the buses' own sessions with ``pg_terminate_backend``
from an admin connection, never another session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from tests.conftest import require_service
from tests.contract.bus_contract import BusFactory, EngineBusContract, Heard
from tests.contract.engine_bus_checks import EngineBusChecks, Outage, Route, Wire, WireFactory
from tests.contract.private_servers import closed_port

from polyport.backends.postgresql import PostgresBus, PostgresDatabase
from polyport.backends.postgresql.bus import channel_name
from polyport.core.bus import Bus

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = os.environ.get("POLYPORT_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/test")


def new_schema(name: str) -> str:
    return f"polyport_test_{secrets.token_hex(5)}_{name}"


class PostgresWire:
    """psycopg on a bus's channel: what arrives, and a way to notify anything (as text)."""

    binary = False

    def __init__(self, channel: str) -> None:
        self.received: list[bytes] = []
        self._channel = channel

    async def publish(self, payload: bytes) -> None:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload.decode()))

    @asynccontextmanager
    async def following(self) -> AsyncIterator[PostgresWire]:
        conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))

        async def collect() -> None:
            async for notify in conn.notifies():
                self.received.append(notify.payload.encode())

        task = asyncio.create_task(collect())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await conn.close()


class PostgresOutage:
    """PostgreSQL ends the buses' sessions, as a restart or an administrator would."""

    def __init__(self) -> None:
        self.schema = new_schema("outage")

    def make_bus(self) -> PostgresBus:
        return PostgresBus(PostgresDatabase(URL, schema=self.schema))

    async def begin(self) -> None:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
            cursor = await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE %s",
                [f"polyport:{self.schema} bus %"],
            )
            ended = await cursor.fetchall()
        # Both buses' listeners, and the notifier of the one that announced (a bus makes
        # its notifier at its first send).
        assert len(ended) == 3 and all(row[0] for row in ended)

    async def end(self) -> None:
        return None  # the server stayed up: only the sessions ended


class TestPostgresBus(EngineBusContract, EngineBusChecks):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        require_service("PostgreSQL", 5432)
        schemas: dict[str, str] = {}

        def make(name: str = "bus") -> Bus:
            schema = schemas.setdefault(name, new_schema(name))
            return PostgresBus(PostgresDatabase(URL, schema=schema))

        return make

    @pytest.fixture
    def unreachable_bus(self) -> Bus:
        url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
        return PostgresBus(PostgresDatabase(url, timeout=1))

    @pytest.fixture
    def wire(self) -> WireFactory:
        def following(bus: Bus) -> AbstractAsyncContextManager[Wire]:
            assert isinstance(bus, PostgresBus)
            return PostgresWire(bus.channel).following()

        return following

    @pytest.fixture
    def outage(self) -> Outage:
        require_service("PostgreSQL", 5432)
        return PostgresOutage()

    @pytest.fixture
    def route(self) -> Route:
        require_service("PostgreSQL", 5432)
        return PostgresRoute(new_schema("route"))


class PostgresRoute:
    port = urlsplit(URL).port or 5432

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def make_bus(self, port: int) -> PostgresBus:
        url = urlunsplit(urlsplit(URL)._replace(netloc=f"postgres@127.0.0.1:{port}"))
        return PostgresBus(PostgresDatabase(url, schema=self.schema))


def test_the_channel_is_named_from_the_schema_within_63_bytes() -> None:
    """Schema names up to 63 characters give distinct channels a LISTEN does not truncate."""
    assert channel_name("shop") == "shop.bus"
    long_a, long_b = "a" * 60 + "_x", "a" * 60 + "_y"
    names = {channel_name(long_a), channel_name(long_b), channel_name("a" * 63)}
    assert len(names) == 3
    assert all(len(name) <= 63 for name in names)


async def test_announcements_past_one_payload_arrive_whole() -> None:
    """2,000 pairs on long channel names fill many NOTIFY payloads of nearly 8000 bytes,
    sent in one transaction: every pair arrives."""
    require_service("PostgreSQL", 5432)
    schema = new_schema("large")
    a, b = (PostgresBus(PostgresDatabase(URL, schema=schema)) for _ in range(2))
    heard = Heard()
    wanted = [(f"c{i}/" + "x" * 200, i) for i in range(2000)]
    await a.open()
    await b.open()
    try:
        b.listen(heard)
        a.announce(wanted)
        await heard.until(lambda pairs: len(pairs) >= len(wanted))
        assert sorted(heard.pairs()) == sorted(wanted)
        assert len(heard.announcements) > 40  # as many payloads
        assert a.unsent == 0
    finally:
        await a.close()
        await b.close()
