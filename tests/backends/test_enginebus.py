"""What the three engine buses share, over an engine in memory whose failures a test controls.

The engines' own tests (``tests/contract/test_bus_*.py``) run the same class
over Redis, PostgreSQL and NATS; here the timing of failures is exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from polyport.backends import enginebus
from polyport.backends.enginebus import MAX_PENDING, EngineBus
from polyport.core.bus import Announcement

pytestmark = pytest.mark.timeout(30)


class MemoryEngine:
    """Buses' messages, delivered on the next loop iteration; can be down, or slow."""

    def __init__(self) -> None:
        self.buses: list[MemoryBus] = []
        self.down = False
        self.sends = 0  # tries, failed ones included
        self.gate: asyncio.Event | None = None  # set: sends wait for it
        self.cut = asyncio.Event()  # set: every subscription breaks

    def fail_if_down(self) -> None:
        if self.down:
            raise ConnectionError("the engine is down")


class MemoryBus(EngineBus):
    engine = "memory"
    frame_limit = 200

    def __init__(self, engine: MemoryEngine) -> None:
        super().__init__("bus")
        self.memory = engine
        self.messages: list[bytes] = []
        self.subscriptions = 0
        engine.buses.append(self)

    async def _connect(self) -> None:
        await self._resubscribe()

    async def _resubscribe(self) -> None:
        self.memory.fail_if_down()
        self.subscriptions += 1

    async def _receive(self) -> None:
        await self.memory.cut.wait()
        raise ConnectionError("the subscription broke")

    async def _send(self, messages: list[bytes]) -> None:
        self.memory.sends += 1
        if self.memory.gate is not None:
            await self.memory.gate.wait()
        self.memory.fail_if_down()
        self.messages += messages
        loop = asyncio.get_running_loop()
        for bus in self.memory.buses:
            if bus is not self:
                for message in messages:
                    loop.call_soon(bus._heard, message)

    async def _disconnect(self) -> None:
        return None


class Heard:
    def __init__(self) -> None:
        self.pairs: list[tuple[str, int]] = []

    def __call__(self, grown: Announcement) -> None:
        self.pairs += grown


async def eventually(condition: object, seconds: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> MemoryEngine:
    monkeypatch.setattr(enginebus, "MIN_BACKOFF", 0.02)
    monkeypatch.setattr(enginebus, "MAX_BACKOFF", 0.1)
    return MemoryEngine()


@dataclass
class Nodes:
    """Two open buses on one engine: ``a`` announces, ``b`` listens with ``heard``."""

    a: MemoryBus
    b: MemoryBus
    heard: Heard


@pytest.fixture
async def nodes(engine: MemoryEngine) -> AsyncIterator[Nodes]:
    a, b = MemoryBus(engine), MemoryBus(engine)
    heard = Heard()
    await a.open()
    await b.open()
    b.listen(heard)
    yield Nodes(a, b, heard)
    await a.close()  # closing twice is harmless
    await b.close()


async def test_one_loop_iteration_is_one_send(engine: MemoryEngine, nodes: Nodes) -> None:
    """Announcements made without yielding leave in one send, split by the bound only."""
    a, heard = nodes.a, nodes.heard
    for seq in range(1, 101):
        a.announce([("c", seq)])
    await eventually(lambda: len(heard.pairs) == 100)
    assert engine.sends == 1
    assert all(len(m) <= MemoryBus.frame_limit for m in a.messages)
    assert len(a.messages) > 1  # 100 seqs do not fit 200 bytes


async def test_announcing_never_raises(
    engine: MemoryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Before open, after close, with arguments that are not announcements: no exception."""
    bus = MemoryBus(engine)
    bus.announce([("c", 1)])
    assert bus.unsent == 1
    await bus.open()
    with caplog.at_level(logging.ERROR, logger="polyport.bus"):
        bus.announce(5)  # type: ignore[arg-type]
        bus.announce([("c", "x"), ("c", -1)])  # type: ignore[list-item]
        await asyncio.sleep(0.05)
    assert bus.unsent == 3
    assert any("could not queue" in r.getMessage() for r in caplog.records)
    await bus.close()
    bus.announce([("c", 2)])
    assert bus.unsent == 4


async def test_an_outage_is_logged_once_and_sends_back_off(
    engine: MemoryEngine, nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    """Announcing all through an outage logs one warning, tries a few times (not once per
    announcement), counts what it dropped, and logs once when it works again."""
    a, heard = nodes.a, nodes.heard
    with caplog.at_level(logging.INFO, logger="polyport.bus"):
        engine.down = True
        for seq in range(1, 101):
            a.announce([("c", seq)])
            await asyncio.sleep(0.005)
        tries = engine.sends
        engine.down = False
        a.announce([("c", 101)])
        await eventually(lambda: ("c", 101) in heard.pairs)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot announce" in m for m in messages) == 1
    assert sum("announcing new events on memory bus again" in m for m in messages) == 1
    assert tries < 30
    assert 0 < a.unsent <= 100


async def test_what_waits_is_bounded_and_keeps_each_channels_newest(
    engine: MemoryEngine, nodes: Nodes
) -> None:
    """A send that hangs while announcements pour in: past MAX_PENDING pairs only each
    channel's newest seq waits, and that is what the listeners hear."""
    a, heard = nodes.a, nodes.heard
    engine.gate = asyncio.Event()
    a.announce([("first", 1)])
    await eventually(lambda: engine.sends == 1)  # that send hangs
    for seq in range(1, 3 * MAX_PENDING):
        a.announce([(f"c/{seq % 5}", seq)])
    assert len(a._pending) <= MAX_PENDING
    engine.gate.set()
    newest = {f"c/{k}": max(s for s in range(1, 3 * MAX_PENDING) if s % 5 == k) for k in range(5)}
    await eventually(lambda: all((c, s) in heard.pairs for c, s in newest.items()))


async def test_a_broken_subscription_is_made_again_with_backoff(
    engine: MemoryEngine, nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscription breaks while the engine is down: one warning, a few tries while it
    stays down, then the bus listens again by itself."""
    a, b, heard = nodes.a, nodes.b, nodes.heard
    with caplog.at_level(logging.INFO, logger="polyport.bus"):
        engine.down = True
        engine.cut.set()
        await asyncio.sleep(0.5)
        engine.cut = asyncio.Event()
        tries = (a.subscriptions, b.subscriptions)
        engine.down = False
        await eventually(lambda: (a.subscriptions, b.subscriptions) == (2, 2))
        a.announce([("c", 1)])
        await eventually(lambda: ("c", 1) in heard.pairs)
    messages = [r.getMessage() for r in caplog.records if "memory bus" in r.getMessage()]
    assert sum("lost the subscription" in m for m in messages) == 2  # a and b
    assert sum("listening on memory bus again" in m for m in messages) == 2
    assert tries == (1, 1)  # the first subscriptions only: every try while down failed


async def test_a_failing_listener_does_not_keep_others_from_hearing(
    nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged; the next one still hears, and so does it next time."""
    after = Heard()

    def broken(grown: Announcement) -> None:
        raise RuntimeError("a bug in a listener")

    nodes.b.listen(broken)
    nodes.b.listen(after)
    with caplog.at_level(logging.ERROR, logger="polyport.bus"):
        nodes.a.announce([("c", 1)])
        await eventually(lambda: ("c", 1) in after.pairs)
        nodes.a.announce([("c", 2)])
        await eventually(lambda: ("c", 2) in after.pairs)
    assert sum("a listener of memory bus failed" in r.getMessage() for r in caplog.records) == 2


async def test_closing_sends_what_is_pending_and_stops_everything(nodes: Nodes) -> None:
    """Announcements made just before close still leave; then no task of the bus runs."""
    a, b, heard = nodes.a, nodes.b, nodes.heard
    tasks = asyncio.all_tasks()
    a.announce([("last", 1)])
    await a.close()
    await eventually(lambda: ("last", 1) in heard.pairs)
    await b.close()
    assert not any(t.get_name().startswith("polyport-bus") for t in asyncio.all_tasks())
    assert len(tasks) > len(asyncio.all_tasks())
