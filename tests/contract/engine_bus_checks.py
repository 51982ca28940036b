"""What every engine's bus does beyond the bus contract, written once for the three.

An engine's test module subclasses :class:`EngineBusChecks` beside
:class:`~tests.contract.bus_contract.EngineBusContract` and gives two fixtures:

* ``wire``: a raw client of the engine on a bus's channel (the engine's own
  driver, not polyport), to see the messages a bus sends and to send it
  messages of any shape;
* ``outage``: buses on an engine that the test can take away and bring back;
* ``route``: the engine's port, and buses that reach it at another port (a
  relay the test puts in between, to cut the network without a reset).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import pytest
from tests.contract.bus_contract import BusFactory, Heard
from tests.contract.freezing_proxy import FreezingProxy

from polyport.backends.announcements import decode
from polyport.backends.enginebus import EngineBus
from polyport.core.bus import Bus


class Wire(Protocol):
    """The engine's own client on one bus's channel."""

    #: Every message seen on the channel since the wire was opened.
    received: list[bytes]
    #: Whether the engine carries any bytes (Redis, NATS), or only text (PostgreSQL).
    binary: bool

    async def publish(self, payload: bytes) -> None: ...


WireFactory = Callable[[Bus], AbstractAsyncContextManager[Wire]]


class Outage(Protocol):
    """An engine this test may take away and bring back, and buses on it."""

    def make_bus(self) -> EngineBus: ...

    async def begin(self) -> None:
        """Take the engine away from the buses (stop it, or end their sessions)."""

    async def end(self) -> None:
        """Bring it back (where it was stopped), without touching the buses."""


class Route(Protocol):
    """Where the engine listens, and buses of one namespace that reach it at any port."""

    port: int

    def make_bus(self, port: int) -> EngineBus: ...


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


#: Messages no bus sends, as text every engine carries.
JUNK_TEXT = [
    b"",
    b"not json",
    b"[1,2]",
    b'["a"]',
    b'["a",1,"b"]',
    b'{"a":1}',
    b'["a",-1]',
    b'["a",true]',
    b'["a",1.5]',
    b'["a",99999999999999999999]',
    b"[" * 4000,
    "é".encode(),
]
#: And as bytes, for the engines that carry any.
JUNK_BINARY = [b"\xff\xfe", b'["a",1]\x00', b"\x00"]


class EngineBusChecks:
    """Messages are coalesced and checked; a listener outlives its engine going away."""

    @pytest.fixture
    def wire(self) -> WireFactory:
        raise NotImplementedError("an engine's subclass gives wire")

    @pytest.fixture
    def outage(self) -> Outage:
        raise NotImplementedError("an engine's subclass gives outage")

    @pytest.fixture
    def route(self) -> Route:
        raise NotImplementedError("an engine's subclass gives route")

    async def test_announcements_of_one_loop_iteration_leave_as_one_message(
        self, make_bus: BusFactory, wire: WireFactory
    ) -> None:
        """300 announcements made without yielding to the loop are one message on the wire."""
        bus = make_bus("coalesced")
        await bus.open()
        try:
            async with wire(bus) as seen:
                for seq in range(1, 301):
                    bus.announce([("c/1", seq), ("c/2", seq)])
                await eventually(lambda: bool(seen.received))
                await asyncio.sleep(0.2)  # nothing more comes
                assert len(seen.received) == 1
                pairs = decode(seen.received[0])
                assert pairs is not None
                assert sorted(pairs) == sorted(
                    (channel, seq) for seq in range(1, 301) for channel in ("c/1", "c/2")
                )
        finally:
            await bus.close()

    async def test_a_malformed_message_is_dropped_and_counted(
        self, make_bus: BusFactory, wire: WireFactory
    ) -> None:
        """Whatever else arrives on the channel, listeners get announcements only; the
        bus counts the rest and goes on."""
        bus = make_bus("junk")
        heard = Heard()
        await bus.open()
        try:
            bus.listen(heard)
            async with wire(bus) as raw:
                junk = JUNK_TEXT + (JUNK_BINARY if raw.binary else [])
                for payload in junk:
                    await raw.publish(payload)
                await raw.publish(b'["ok",1]')
                await heard.until(lambda pairs: ("ok", 1) in pairs)
            assert heard.pairs() == [("ok", 1)]
            assert isinstance(bus, EngineBus)
            assert bus.malformed == len(junk)
        finally:
            await bus.close()

    async def test_a_quiet_subscription_is_kept(
        self, make_bus: BusFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Silence longer than several heartbeats: the engine answers the bus's probes, the
        subscription is never taken for lost, and the next announcement arrives."""
        a, b = make_bus("quiet"), make_bus("quiet")
        assert isinstance(b, EngineBus)
        b.heartbeat = 0.2
        heard = Heard()
        await a.open()
        await b.open()
        try:
            b.listen(heard)
            with caplog.at_level(logging.INFO, logger="polyport.bus"):
                await asyncio.sleep(1.5)
                a.announce([("c", 1)])
                await heard.until(lambda pairs: ("c", 1) in pairs)
            assert not [r for r in caplog.records if r.name == "polyport.bus"]
        finally:
            await a.close()
            await b.close()

    async def test_a_listener_survives_its_engine_going_away(
        self, outage: Outage, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The engine goes away and comes back: announcing never raises meanwhile, each
        bus says once what it lost, and announcements flow again with no restart."""
        a, b = outage.make_bus(), outage.make_bus()
        heard = Heard()
        await a.open()
        await b.open()
        try:
            b.listen(heard)
            a.announce([("before", 1)])
            await heard.until(lambda pairs: ("before", 1) in pairs)
            with caplog.at_level(logging.INFO, logger="polyport.bus"):
                await outage.begin()
                for seq in range(1, 31):
                    a.announce([("during", seq)])  # never raises
                    await asyncio.sleep(0.02)
                await outage.end()
                seq = 0
                async with asyncio.timeout(20):  # both reconnect with backoff, by themselves
                    while not any(channel == "after" for channel, _ in heard.pairs()):
                        seq += 1
                        a.announce([("after", seq)])
                        await asyncio.sleep(0.05)
            messages = [r.getMessage() for r in caplog.records if r.name == "polyport.bus"]
            assert sum("lost the subscription" in m for m in messages) == 2, messages  # a and b
            assert sum("cannot announce" in m for m in messages) <= 1, messages
        finally:
            await a.close()
            await b.close()

    async def test_a_silent_connection_is_noticed_by_heartbeats(
        self, route: Route, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The network between a listener and its engine stops carrying bytes, with no
        reset and no end of stream: the heartbeats notice within seconds, and the bus
        subscribes again once the network carries bytes again."""
        async with FreezingProxy(route.port).running() as proxy:
            a, b = route.make_bus(route.port), route.make_bus(proxy.port)
            b.heartbeat = 0.3
            heard = Heard()
            await a.open()
            await b.open()
            try:
                b.listen(heard)
                a.announce([("before", 1)])
                await heard.until(lambda pairs: ("before", 1) in pairs)
                with caplog.at_level(logging.WARNING, logger="polyport.bus"):
                    proxy.freeze()
                    await eventually(
                        lambda: any(
                            "lost the subscription" in r.getMessage() for r in caplog.records
                        ),
                        seconds=15,
                    )
                    proxy.thaw()
                    seq = 0
                    async with asyncio.timeout(20):
                        while not any(channel == "after" for channel, _ in heard.pairs()):
                            seq += 1
                            a.announce([("after", seq)])
                            await asyncio.sleep(0.05)
            finally:
                proxy.thaw()
                await a.close()
                await b.close()
