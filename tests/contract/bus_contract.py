"""The contract every bus passes, written once and subclassed per backend.

A backend's test module subclasses :class:`BusContract` and gives the
``make_bus`` fixture: a factory of buses over a fresh namespace of their own,
where the same ``name`` is the same namespace (several nodes on one engine).
Engines' buses subclass :class:`EngineBusContract` and also give
``unreachable_bus``: a bus whose engine cannot be reached.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import pytest

from polyport.core.bus import Announcement, Bus


class BusFactory(Protocol):
    def __call__(self, name: str = "bus") -> Bus: ...


class Heard:
    """What a listener was told, and a way to wait for it."""

    def __init__(self) -> None:
        self.announcements: list[list[tuple[str, int]]] = []
        self._changed = asyncio.Event()

    def __call__(self, grown: Announcement) -> None:
        self.announcements.append([(channel, seq) for channel, seq in grown])
        self._changed.set()

    async def until(self, predicate: object, seconds: float = 5.0) -> None:
        assert callable(predicate)
        async with asyncio.timeout(seconds):
            while not predicate(self.pairs()):
                self._changed.clear()
                await self._changed.wait()

    def pairs(self) -> list[tuple[str, int]]:
        return [pair for announcement in self.announcements for pair in announcement]


class BusContract:
    """Announcements reach the other nodes' listeners; a bus never fails its announcer."""

    @pytest.fixture
    def make_bus(self) -> BusFactory:
        raise NotImplementedError("a backend's subclass gives make_bus")

    async def test_an_announcement_reaches_every_other_node(self, make_bus: BusFactory) -> None:
        """Node A announces; B and C hear the channels and seqs, in one piece."""
        a, b, c = make_bus("shared"), make_bus("shared"), make_bus("shared")
        heard_b, heard_c = Heard(), Heard()
        for bus in (a, b, c):
            await bus.open()
        try:
            b.listen(heard_b)
            c.listen(heard_c)
            await asyncio.sleep(0.2)  # subscriptions settle on engines that need a round trip
            a.announce([("orders/created", 7), ("chat/room 1", 8)])
            for heard in (heard_b, heard_c):
                await heard.until(lambda pairs: ("chat/room 1", 8) in pairs)
                assert ("orders/created", 7) in heard.pairs()
        finally:
            for bus in (a, b, c):
                await bus.close()

    async def test_namespaces_do_not_hear_each_other(self, make_bus: BusFactory) -> None:
        """Two logs on one engine (two names) keep their announcements apart."""
        mine, other = make_bus("mine"), make_bus("other")
        listener = make_bus("mine")
        heard = Heard()
        for bus in (mine, other, listener):
            await bus.open()
        try:
            listener.listen(heard)
            await asyncio.sleep(0.2)
            other.announce([("x", 1)])
            mine.announce([("y", 2)])
            await heard.until(lambda pairs: ("y", 2) in pairs)
            assert ("x", 1) not in heard.pairs()
        finally:
            for bus in (mine, other, listener):
                await bus.close()

    async def test_a_listener_stops_when_told(self, make_bus: BusFactory) -> None:
        """The function listen returns stops that listener, and only it."""
        a, b = make_bus("stop"), make_bus("stop")
        kept, stopped = Heard(), Heard()
        await a.open()
        await b.open()
        try:
            b.listen(kept)
            stop = b.listen(stopped)
            await asyncio.sleep(0.2)
            stop()
            a.announce([("z", 3)])
            await kept.until(lambda pairs: ("z", 3) in pairs)
            await asyncio.sleep(0.1)
            assert stopped.pairs() == []
        finally:
            await a.close()
            await b.close()

    async def test_many_announcements_arrive_without_loss_on_a_quiet_engine(
        self, make_bus: BusFactory
    ) -> None:
        """A burst of 500 announcements: a bus may lose some under failure, not here."""
        a, b = make_bus("burst"), make_bus("burst")
        heard = Heard()
        await a.open()
        await b.open()
        try:
            b.listen(heard)
            await asyncio.sleep(0.2)
            for seq in range(1, 501):
                a.announce([("burst", seq)])
            await heard.until(lambda pairs: ("burst", 500) in pairs)
            assert {seq for _, seq in heard.pairs()} == set(range(1, 501))
        finally:
            await a.close()
            await b.close()


class EngineBusContract(BusContract):
    """What a bus over a network adds: an engine that is away never fails the announcer."""

    @pytest.fixture
    def unreachable_bus(self) -> Bus:
        raise NotImplementedError("a backend's subclass gives unreachable_bus")

    async def test_announcing_never_raises_even_when_the_engine_is_away(
        self, unreachable_bus: Bus
    ) -> None:
        """The events are durable in the log already: a bus that cannot send says nothing
        to its caller (other nodes find the events at their next read of the log)."""
        with pytest.raises(Exception):  # noqa: B017, PT011 - opening may fail as the engine does
            await unreachable_bus.open()
        unreachable_bus.announce([("x", 1)])  # no exception
        await asyncio.sleep(0.1)
        await unreachable_bus.close()
