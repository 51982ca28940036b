"""The unary fast path: a flat model's message bytes, from one reused message, as a fresh one's."""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, TypeAdapter

from polyport import Service
from polyport.edges.grpc.binding import schema_pool
from polyport.edges.grpc.codec import GrpcCodec
from polyport.edges.grpc.descriptors import build_schema


class Tier(enum.StrEnum):
    FREE = "free"
    PRO = "pro"


class Flat(BaseModel):
    id: int
    name: str
    nickname: str | None = None
    tier: Tier = Tier.FREE
    score: float = 0.0
    active: bool = False
    born: dt.datetime | None = None
    price: Decimal | None = None
    ref: UUID | None = None


def _codec() -> tuple[GrpcCodec, str]:
    service = Service("flat", version=1)

    @service.method(public=True)
    async def get_flat(id: int) -> Flat:
        raise AssertionError("never called")

    schema = build_schema(service.spec())
    name = schema.methods["get_flat"].output
    return GrpcCodec(schema, schema_pool(schema)), name


def test_each_model_encodes_as_a_fresh_message_would() -> None:
    """Nothing of the model before survives: optional fields unset, a zero Timestamp present."""
    codec, name = _codec()
    found = codec.object_encoder(name)
    assert found is not None, "a flat model takes the fast path"
    model, encode = found
    assert model is Flat
    cls: Any = codec.classes[name]
    write = codec.writers[name]
    dump = TypeAdapter(Flat).dump_python
    values = [
        Flat(
            id=1,
            name="full",
            nickname="nick",
            tier=Tier.PRO,
            score=2.5,
            active=True,
            born=dt.datetime(2026, 11, 28, 8, 30, 15, 250_000, tzinfo=dt.UTC),
            price=Decimal("12.50"),
            ref=UUID("12345678-1234-5678-1234-567812345678"),
        ),
        Flat(id=2, name="bare"),  # everything the one before set is unset again
        Flat(id=0, name="", born=dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),  # all zero, present
        Flat(id=-(2**62), name="é" * 300, tier=Tier.FREE, nickname=""),
    ]
    for value in values:
        expected = cls(**write(dump(value, mode="python", by_alias=True)))
        encoded = encode(value)
        assert cls.FromString(encoded) == expected
        assert encoded == expected.SerializeToString()
    epoch = cls.FromString(encode(values[2]))
    assert epoch.HasField("born") and epoch.born.seconds == 0
    assert not cls.FromString(encode(values[1])).HasField("born")


def test_a_page_encodes_as_the_general_path_would() -> None:
    """A page of models, written into one reused message, page after page."""
    from polyport import Settings
    from polyport.core.dispatch import PageResult
    from polyport.edges.grpc.binding import GrpcEdge
    from polyport.node import Node

    service = Service("pages", version=1)
    flats = service.resource("flats", Flat, events=False)

    @flats.list
    async def list_flats(limit: int = 10, cursor: str | None = None) -> list[Flat]:
        raise AssertionError("never called")

    node = Node(service, Settings(dev=True, event_log="memory", database=":memory:"))
    edge = next(e for e in node.edges if e.name == "grpc")
    assert isinstance(edge, GrpcEdge)
    plan = edge.schema.methods["list_flats"]
    binding = node.runtime.dispatcher.bindings["list_flats"]
    respond = edge._responder(plan, binding)
    cls: Any = edge.codec.classes[plan.output]
    write = edge.codec.writers[plan.output]
    items = [
        Flat(id=1, name="a", nickname="n", born=dt.datetime(2026, 1, 2, tzinfo=dt.UTC)),
        Flat(id=2, name="b", tier=Tier.PRO),
    ]
    pages = [
        PageResult(items, "MTox"),
        PageResult(items[1:], None),  # the cursor and the first item are gone again
        PageResult([], None),
    ]
    for page in pages:
        dumped = binding.dump_python(page.items, mode="python")
        expected = cls(**write({"items": dumped, "next_cursor": page.next_cursor}))
        assert respond(page) == expected.SerializeToString()
