"""The bus on Redis pub/sub: the bus contract, and what an engine's bus adds.

Buses of a test share a key prefix no other test uses (pub/sub keeps no keys:
nothing to delete afterwards). The outage runs on a Redis of the test's own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from tests.conftest import require_service
from tests.contract.bus_contract import BusFactory, EngineBusContract
from tests.contract.engine_bus_checks import EngineBusChecks, Outage, Route, Wire, WireFactory
from tests.contract.private_servers import closed_port, server_outage

from polyport.backends.redis import RedisBus
from polyport.core.bus import Bus
from polyport.core.errors import ConfigError

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "redis://127.0.0.1:6379/0"


class RedisWire:
    """redis-py on a bus's channel: what arrives, and a way to publish anything."""

    binary = True

    def __init__(self, url: str, channel: str) -> None:
        from redis.asyncio import Redis

        self.received: list[bytes] = []
        self._client = Redis.from_url(url)
        self._channel = channel

    async def publish(self, payload: bytes) -> None:
        await self._client.publish(self._channel, payload)

    @asynccontextmanager
    async def following(self) -> AsyncIterator[RedisWire]:
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._channel)
        await pubsub.get_message(timeout=5)  # the confirmation: subscribed from here

        async def collect() -> None:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    self.received.append(message["data"])

        task = asyncio.create_task(collect())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pubsub.aclose()
            await self._client.aclose()


def redis_server(port: int) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]


class TestRedisBus(EngineBusContract, EngineBusChecks):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        require_service("Redis", 6379)
        base = f"polyport-test-{uuid.uuid4().hex}"

        def make(name: str = "bus") -> Bus:
            return RedisBus(URL, prefix=f"{base}-{name}")

        return make

    @pytest.fixture
    def unreachable_bus(self) -> Bus:
        return RedisBus(f"redis://127.0.0.1:{closed_port()}/0", prefix="unreachable")

    @pytest.fixture
    def wire(self) -> WireFactory:
        def following(bus: Bus) -> AbstractAsyncContextManager[Wire]:
            assert isinstance(bus, RedisBus)
            return RedisWire(URL, bus.channel).following()

        return following

    @pytest.fixture
    async def outage(self, tmp_path: Path) -> AsyncIterator[Outage]:
        def bus(port: int) -> RedisBus:
            return RedisBus(f"redis://127.0.0.1:{port}/0", prefix="outage")

        async with server_outage(redis_server, tmp_path / "redis.log", bus) as outage:
            yield outage

    @pytest.fixture
    def route(self) -> Route:
        require_service("Redis", 6379)
        return RedisRoute(f"polyport-test-{uuid.uuid4().hex}")


class RedisRoute:
    port = 6379

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def make_bus(self, port: int) -> RedisBus:
        return RedisBus(f"redis://127.0.0.1:{port}/0", prefix=self.prefix)


def test_the_channel_is_named_from_the_prefix() -> None:
    """One prefix names a log's keys and its bus's channel, with the same hash tag."""
    assert RedisBus(URL, prefix="shop").channel == "{shop}:bus"


def test_a_prefix_that_is_not_a_plain_name_is_refused() -> None:
    """The log's rule for prefixes is the bus's: braces would move the hash tag."""
    for prefix in ("", "a}b", "{x}", "a b"):
        with pytest.raises(ConfigError):
            RedisBus(URL, prefix=prefix)
