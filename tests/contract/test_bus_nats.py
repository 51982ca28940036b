"""The bus on a core NATS subject: the bus contract, and what an engine's bus adds.

Buses of a test share a log name no other test uses (core subjects keep
nothing: nothing to delete afterwards). The outage runs on a nats-server of the
test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.conftest import require_service
from tests.contract.bus_contract import BusFactory, EngineBusContract, Heard
from tests.contract.engine_bus_checks import EngineBusChecks, Outage, Route, Wire, WireFactory
from tests.contract.private_servers import closed_port, server_outage

from polyport.backends.nats import NatsBus, NatsEventLog
from polyport.core.bus import Bus
from polyport.core.errors import InvalidArgument

if TYPE_CHECKING:
    from nats.aio.client import Client

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "nats://127.0.0.1:4222"


class NatsWire:
    """nats-py on a bus's subject: what arrives, and a way to publish anything."""

    binary = True

    def __init__(self, subject: str) -> None:
        self.received: list[bytes] = []
        self._subject = subject
        self._nc: Client | None = None

    async def publish(self, payload: bytes) -> None:
        assert self._nc is not None
        await self._nc.publish(self._subject, payload)
        await self._nc.flush()

    @asynccontextmanager
    async def following(self) -> AsyncIterator[NatsWire]:
        import nats
        from nats.aio.msg import Msg

        async def arrived(msg: Msg) -> None:
            self.received.append(msg.data)

        nc = self._nc = await nats.connect(URL)
        try:
            await nc.subscribe(self._subject, cb=arrived)
            await nc.flush()
            yield self
        finally:
            await nc.close()


def nats_server(port: int) -> list[str]:
    return ["/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", str(port)]


class TestNatsBus(EngineBusContract, EngineBusChecks):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        require_service("NATS", 4222)
        base = f"pptest-{uuid.uuid4().hex[:12]}"

        def make(name: str = "bus") -> Bus:
            return NatsBus(URL, name=f"{base}-{name}")

        return make

    @pytest.fixture
    def unreachable_bus(self) -> Bus:
        return NatsBus(f"nats://127.0.0.1:{closed_port()}", name="unreachable")

    @pytest.fixture
    def wire(self) -> WireFactory:
        def following(bus: Bus) -> AbstractAsyncContextManager[Wire]:
            assert isinstance(bus, NatsBus)
            return NatsWire(bus.subject).following()

        return following

    @pytest.fixture
    async def outage(self, tmp_path: Path) -> AsyncIterator[Outage]:
        def bus(port: int) -> NatsBus:
            return NatsBus(f"nats://127.0.0.1:{port}", name="outage")

        async with server_outage(nats_server, tmp_path / "nats.log", bus) as outage:
            yield outage

    @pytest.fixture
    def route(self) -> Route:
        require_service("NATS", 4222)
        return NatsRoute(f"pptest-{uuid.uuid4().hex[:12]}")


class NatsRoute:
    port = 4222

    def __init__(self, name: str) -> None:
        self.name = name

    def make_bus(self, port: int) -> NatsBus:
        return NatsBus(f"nats://127.0.0.1:{port}", name=self.name)


def test_a_log_name_that_is_not_a_subject_token_is_refused() -> None:
    """The bus takes the names its log takes: one subject token each."""
    assert NatsBus(URL, name="shop").subject == "polyport-bus.shop"
    for name in ("", "a.b", "a b", "*", ">", "x" * 65):
        with pytest.raises(InvalidArgument):
            NatsBus(URL, name=name)


async def test_the_log_stream_never_stores_an_announcement() -> None:
    """The bus's subject is outside the log's subjects: its stream holds events only."""
    require_service("NATS", 4222)
    import nats
    from nats.js.errors import NotFoundError

    name = f"pptest-{uuid.uuid4().hex[:12]}"
    log = NatsEventLog(URL, name=name)
    announcer, listener = NatsBus(URL, name=name), NatsBus(URL, name=name)
    heard = Heard()
    await log.open()
    try:
        await announcer.open()
        await listener.open()
        listener.listen(heard)
        announcer.announce([("c", 1)])
        await heard.until(lambda pairs: ("c", 1) in pairs)
        nc = await nats.connect(URL)
        try:
            info = await nc.jetstream().stream_info(name)
        finally:
            await nc.close()
        assert info.state.messages == 0
    finally:
        await announcer.close()
        await listener.close()
        await log.close()
        nc = await nats.connect(URL)
        try:
            for stream in (name, f"KV_{name}-meta"):
                with contextlib.suppress(NotFoundError):
                    await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


async def test_a_node_does_not_hear_its_own_announcements() -> None:
    """no_echo: the server keeps a bus's announcements from its own listeners."""
    require_service("NATS", 4222)
    name = f"pptest-{uuid.uuid4().hex[:12]}"
    bus, other = NatsBus(URL, name=name), NatsBus(URL, name=name)
    mine, theirs = Heard(), Heard()
    await bus.open()
    await other.open()
    try:
        bus.listen(mine)
        other.listen(theirs)
        bus.announce([("c", 1)])
        await theirs.until(lambda pairs: ("c", 1) in pairs)
        await asyncio.sleep(0.1)
        assert mine.pairs() == []
    finally:
        await bus.close()
        await other.close()
