"""Batch publishing: ``EventType.publish_many``, ``Service.publish_many`` and the hub below."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from polyport.backends.memory import MemoryEventLog
from polyport.backends.sqlite.eventlog import SqliteEventLog
from polyport.core.contract import Service
from polyport.core.errors import ContractError, InvalidArgument
from polyport.core.eventlog import History
from polyport.core.events import Event, Pattern
from polyport.core.hub import EventHub
from polyport.core.runtime import EventCodec


class Tick(BaseModel):
    run: str
    seq: int


@pytest.fixture
async def hub() -> AsyncIterator[EventHub]:
    h = EventHub(MemoryEventLog(History(max_events=10_000)), buffer=50)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture(params=["messages", "data"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    """A service on a hub that encodes messages only, or data by type too (as a node's does)."""
    svc = Service("ticks", version=1)
    svc.event("ticks.tick", Tick, channel="ticks/{run}")
    codec = EventCodec(svc.spec())
    h = EventHub(
        MemoryEventLog(History(max_events=10_000)),
        encoder=codec.encode,
        type_encoder=codec.encoder if request.param == "data" else None,
    )
    await h.start()
    svc.bind(h)
    yield svc
    svc.unbind(h)
    await h.stop()


def p(*texts: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in texts]


async def test_a_batch_reaches_a_subscriber_in_order_in_one_wakeup(hub: EventHub) -> None:
    """A batch over several channels is appended in order and read in one batch."""
    sub = await hub.subscribe(p("c/+"))
    items = [(f"c/{'ab'[i % 3 == 0]}", "t", b"%d" % i) for i in range(20)]
    events = await hub.publish_many([*items, ("other", "t", b"{}")])
    assert [e.seq for e in events] == list(range(1, 22))
    assert [e.offset for e in events if e.channel == "c/b"] == list(range(1, 8))
    batch = await asyncio.wait_for(sub.batch(), 5)
    assert [e.data for e in batch] == [b"%d" % i for i in range(20)]
    assert hub.published == 21
    sub.close()


async def test_a_subscriber_matching_a_batch_twice_gets_it_once(hub: EventHub) -> None:
    """Two patterns of one subscription matching the same run deliver it once."""
    sub = await hub.subscribe(p("c/x", "c/+", "#"))
    await hub.publish_many([("c/x", "t", b"1"), ("c/x", "t", b"2")])
    await hub.publish("c/x", "t", b"3")
    batch = await asyncio.wait_for(sub.batch(), 5)
    assert [e.data for e in batch] == [b"1", b"2", b"3"]
    sub.close()


async def test_a_batch_larger_than_the_buffer_is_caught_up_from_the_log(hub: EventHub) -> None:
    """A batch that overflows a subscriber's buffer loses nothing: the log fills the gap."""
    sub = await hub.subscribe(p("c"), types=frozenset({"keep"}))
    await hub.publish_many([("c", "keep" if i % 2 else "skip", b"%d" % i) for i in range(300)])
    got: list[bytes] = []
    while len(got) < 150:
        got += [e.data for e in await asyncio.wait_for(sub.batch(), 5)]
    assert got == [b"%d" % i for i in range(1, 300, 2)]
    sub.close()


async def test_an_invalid_channel_in_a_batch_publishes_nothing(hub: EventHub) -> None:
    """Channels are checked before the first append."""
    with pytest.raises(InvalidArgument):
        await hub.publish_many([("ok", "t", b"1"), ("bad channel", "t", b"2")])
    assert await hub.log.head() == 0
    assert await hub.publish_many([]) == []


async def test_a_long_poll_wakes_on_a_batch(hub: EventHub) -> None:
    """A held long poll answers when a batch brings a matching event."""
    waiting = asyncio.create_task(hub.poll(p("c"), after="now", wait=5))
    await asyncio.sleep(0.05)
    await hub.publish_many([("d", "t", b"0"), ("c", "t", b"1"), ("c", "t", b"2")])
    result = await asyncio.wait_for(waiting, 5)
    assert [e.data for e in result.events] == [b"1", b"2"]


async def test_taps_see_every_event_of_a_batch(hub: EventHub) -> None:
    """A tap (the webhooks outbox) gets each publish's events as one list, in order."""
    seen: list[list[int]] = []
    hub.add_tap(lambda events: seen.append([e.seq for e in events]))
    await hub.publish_many([("c", "t", b"%d" % i) for i in range(3)] + [("d", "t", b"3")])
    await hub.publish("c", "t", b"4")
    await hub.publish_many([])
    assert seen == [[1, 2, 3, 4], [5]]


async def test_event_type_publish_many_fills_channels_and_encodes(service: Service) -> None:
    """Typed items go to the channels their templates name, encoded as JSON."""
    tick = service.events["ticks.tick"]
    sub = await service.hub.subscribe(p("ticks/#"))
    events = await tick.publish_many(Tick(run="ab"[i % 2], seq=i) for i in range(4))
    assert [e.channel for e in events] == ["ticks/a", "ticks/b", "ticks/a", "ticks/b"]
    assert events[3].data == b'{"run":"b","seq":3}'
    assert [e.seq for e in await asyncio.wait_for(sub.batch(), 5)] == [1, 2, 3, 4]
    sub.close()


async def test_service_publish_many_validates_before_publishing(service: Service) -> None:
    """An invalid item fails the whole batch before anything is appended."""
    tick = service.events["ticks.tick"]
    with pytest.raises(ValidationError):
        await service.publish_many([tick({"run": "a", "seq": 1}), tick({"run": "a", "seq": "x"})])
    assert await service.hub.log.head() == 0
    events = await service.publish_many(
        [tick({"run": "a", "seq": 1}), tick({"run": "b", "seq": 2})]
    )
    assert [e.offset for e in events] == [1, 1]


async def test_an_event_type_validates_and_fills_its_channel_before_publishing(
    service: Service,
) -> None:
    """``publish`` and ``publish_many`` of an event type: validated, lax where pydantic is."""
    tick = service.events["ticks.tick"]
    with pytest.raises(ValidationError):
        await tick.publish_many([{"run": "a", "seq": 1}, {"run": "a", "seq": "x"}])
    with pytest.raises(ValidationError):
        await tick.publish({"run": "a", "seq": "x"})
    assert await service.hub.log.head() == 0
    event = await tick.publish({"run": "a", "seq": "7"})
    assert (event.channel, event.type, event.data) == (
        "ticks/a",
        "ticks.tick",
        b'{"run":"a","seq":7}',
    )
    for bad in ("", "a/b", "+", "#", None):
        assert tick.channel_for({"run": "ok", "seq": 1}) == "ticks/ok"  # remembered...
        with pytest.raises(ContractError, match="cannot fill channel"):
            tick.channel_for({"run": bad, "seq": 1})  # ...which lets nothing through
    assert tick.channel_for({"run": 5, "seq": 1}) == "ticks/5"  # not a string: str() of it
    run = "".join(["z", "z"])
    assert [tick.channel_for(Tick(run=r, seq=1)) for r in (run, run, "y", run)] == [
        "ticks/zz",
        "ticks/zz",
        "ticks/y",
        "ticks/zz",
    ]
    events = await tick.publish_many([{"run": "a", "seq": 1}], channel="elsewhere")
    assert events[0].channel == "elsewhere"


async def test_a_batch_gets_each_items_own_channel(service: Service) -> None:
    """``channels_for`` is ``channel_for`` per item, a bad value anywhere fails the batch."""
    tick = service.events["ticks.tick"]
    run = "".join(["r", "1"])  # equal to "r1", another object
    items: list[object] = [
        {"run": "r1", "seq": 1},
        {"run": "r1", "seq": 2},
        Tick(run=run, seq=3),
        {"run": 5, "seq": 4},
        {"run": "r2", "seq": 5},
        {"run": "r1", "seq": 6},
    ]
    assert tick.channels_for(items) == [tick.channel_for(i) for i in items]
    assert tick.channels_for(items) == [f"ticks/{r}" for r in ("r1", "r1", "r1", 5, "r2", "r1")]
    for bad in ("", "a/b", "#", None):
        with pytest.raises(ContractError, match="cannot fill channel"):
            tick.channels_for([{"run": "r1", "seq": 1}, {"run": bad, "seq": 2}])
        with pytest.raises(ContractError):
            await tick.publish_many([{"run": "r1", "seq": 1}, {"run": bad, "seq": 2}])
    assert await service.hub.log.head() == 0
    events = await tick.publish_many({"run": r, "seq": 1} for r in ("a", "b", "a"))  # any iterable
    assert [e.channel for e in events] == ["ticks/a", "ticks/b", "ticks/a"]


async def test_a_batch_append_makes_the_events_one_by_one_appends_make() -> None:
    """The memory log's ``append_many`` fills every field of ``Event`` as ``append`` does."""
    one, many = MemoryEventLog(), MemoryEventLog()
    items = [("c/a", "t", b"1"), ("c/b", "u", b"2"), ("c/a", "t", b"3")]
    singles = [await one.append(channel, type, data, 5.5) for channel, type, data in items]
    batch = await many.append_many(items, 5.5)
    assert len(batch) == len(singles)
    for a, b in zip(singles, batch, strict=True):
        for name in Event.__slots__:
            if name != "epoch":  # drawn at random per log
                assert getattr(b, name) == getattr(a, name), name
        assert b.wire is not batch[0].wire or b is batch[0]  # each its own
        assert b.to_json().startswith(b'{"id":"' + b.epoch.encode() + b":")


async def test_a_log_without_append_many_gets_one_append_per_event(tmp_path: Path) -> None:
    """On SQLite (no batch append) a batch is appended one by one, the same events."""
    hub = EventHub(SqliteEventLog(tmp_path / "events.db"))
    await hub.start()
    try:
        sub = await hub.subscribe(p("c/#"))
        events = await hub.publish_many(
            [("c/a", "t", b"1"), ("c/b", "t", b"2"), ("c/a", "t", b"3")]
        )
        assert [(e.channel, e.offset, e.seq) for e in events] == [
            ("c/a", 1, 1),
            ("c/b", 1, 2),
            ("c/a", 2, 3),
        ]
        batch = await asyncio.wait_for(sub.batch(), 5)
        assert [e.data for e in batch] == [b"1", b"2", b"3"]
        read = await hub.log.read(p("c/a"), 0, 10)
        assert [e.data for e in read.events] == [b"1", b"3"]
        sub.close()
    finally:
        await hub.stop()


class Named(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def strip(cls, value: str) -> str:
        return value.strip()


class Checked(Named):
    model_config = ConfigDict(revalidate_instances="always")


@pytest.mark.parametrize("model", [Named, Checked])
def test_the_encoder_validates_as_the_adapter_does(model: type[Named]) -> None:
    """An instance of the model itself is encoded as validation would leave it, and so are
    dicts, subclasses and models that ask to be validated again (the encoder's short cut
    for the model's own instances changes no output)."""
    svc = Service("names", version=1)
    svc.event("names.named", model, channel="names")
    codec = EventCodec(svc.spec())
    encode, adapter = codec.encoder("names.named"), codec.adapter("names.named")
    changed = model(name=" a ")
    changed.name = " b "  # assigned after validation: kept unless the model revalidates
    sub = type("Sub", (model,), {})
    for data in (model(name=" a "), changed, {"name": " c "}, sub(name=" d ")):
        assert encode(data) == adapter.dump_json(adapter.validate_python(data), by_alias=True)
    assert encode(changed) == (b'{"name":"b"}' if model is Checked else b'{"name":" b "}')
    with pytest.raises(ValidationError):
        encode({"name": 1})
