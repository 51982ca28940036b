"""The neutral type graph and the analysed contract."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from polyport import Context, ContractError, MethodKind, Page, Service
from polyport.core.jsonschema import JsonSchemas
from polyport.core.typegraph import TypeGraph
from polyport.core.types import (
    MISSING,
    DictOf,
    EnumRef,
    ListOf,
    LiteralOf,
    ModelRef,
    Nullable,
    Scalar,
    UnionOf,
    Unit,
)


class Color(StrEnum):
    """A color."""

    RED = "red"
    BLUE = "blue"


class Level(Enum):
    LOW = 1
    HIGH = 2


class Tag(BaseModel):
    name: str


class Node(BaseModel):
    """A tree node."""

    label: str
    children: list[Node] = []


class Everything(BaseModel):
    """Every kind of type the graph knows."""

    i: int
    f: float
    b: bool
    s: Annotated[str, Field(min_length=1, max_length=5, description="short")]
    raw: bytes
    at: dt.datetime
    day: dt.date
    moment: dt.time
    uid: uuid.UUID
    price: Decimal
    color: Color
    level: Level
    maybe: int | None = None
    tags: list[Tag]
    unique: set[int] = set()
    scores: dict[str, float]
    either: int | str
    nested: Node
    kind: Literal["a", "b"] = "a"
    anything: Any = None
    aliased: int = Field(default=0, alias="wireName")
    bounded: Annotated[int, Field(ge=1, le=10)] = 5


def test_every_supported_type_has_a_node() -> None:
    """Scalars, enums, optionals, lists, sets, dicts, unions, models, literals, defaults."""
    graph = TypeGraph()
    assert graph.node(Everything) == ModelRef("Everything")
    model = graph.models["Everything"]
    assert model.description == "Every kind of type the graph knows."
    f = {spec.name: spec for spec in model.fields}
    assert f["i"].type == Scalar("int")
    assert f["f"].type == Scalar("float")
    assert f["b"].type == Scalar("bool")
    assert f["s"].type.constraints.max_length == 5  # type: ignore[union-attr]
    assert f["s"].description == "short"
    assert [f[n].type for n in ("raw", "at", "day", "moment", "uid", "price")] == [
        Scalar("bytes"),
        Scalar("datetime"),
        Scalar("date"),
        Scalar("time"),
        Scalar("uuid"),
        Scalar("decimal"),
    ]
    assert f["color"].type == EnumRef("Color")
    assert graph.enums["Color"].members == (("RED", "red"), ("BLUE", "blue"))
    assert graph.enums["Level"].value_kind == "int"
    assert f["maybe"].type == Nullable(Scalar("int"))
    assert f["maybe"].default is None and not f["maybe"].required
    assert f["tags"].type == ListOf(ModelRef("Tag"))
    assert f["unique"].type == ListOf(Scalar("int"), unique=True)
    assert f["scores"].type == DictOf(Scalar("str"), Scalar("float"))
    assert f["either"].type == UnionOf((Scalar("int"), Scalar("str")))
    assert f["nested"].type == ModelRef("Node")
    assert graph.models["Node"].fields[1].type == ListOf(ModelRef("Node"))  # recursion ends
    assert f["kind"].type == LiteralOf(("a", "b"))
    assert f["anything"].type == Scalar("any")
    assert f["aliased"].wire_name == "wireName"
    assert f["bounded"].type.constraints.ge == 1  # type: ignore[union-attr]
    assert f["i"].default is MISSING and f["i"].required


def test_json_schema_follows_the_graph() -> None:
    """JSON Schema is written from the graph: refs, nullability, constraints, enums."""
    graph = TypeGraph()
    graph.node(Everything)
    defs = JsonSchemas(graph, "#/defs/").definitions()
    props = defs["Everything"]["properties"]
    assert props["maybe"] == {
        "anyOf": [{"type": "integer", "format": "int64"}, {"type": "null"}],
        "default": None,
    }
    assert props["s"]["maxLength"] == 5
    assert props["color"] == {"$ref": "#/defs/Color"}
    assert defs["Color"]["enum"] == ["red", "blue"]
    assert "wireName" in props
    assert props["bounded"]["minimum"] == 1
    assert "i" in defs["Everything"]["required"]


def test_unsupported_types_are_contract_errors() -> None:
    """What no protocol can carry is refused at start-up, with the place named."""
    graph = TypeGraph()
    with pytest.raises(ContractError, match="fixed-length tuples"):
        graph.node(tuple[int, str], where="m")
    with pytest.raises(ContractError, match="dict keys"):
        graph.node(dict[float, int])
    with pytest.raises(ContractError, match="unsupported type"):
        graph.node(complex)


class User(BaseModel):
    id: int
    name: str


def make_service() -> Service:
    svc = Service("svc")
    users = svc.resource("users", User)

    @users.get
    async def get_user(id: int) -> User:
        """Read a user.

        Longer description.

        Args:
            id: The user's id.
        """
        return User(id=id, name="x")

    @users.list
    async def list_users(limit: int = 10, cursor: str | None = None) -> Page[User]:
        return Page(items=[])

    @svc.method
    async def add(ctx: Context, a: int, b: int = 2) -> int:
        return a + b

    @svc.method
    async def nothing() -> None:
        return None

    @svc.stream
    async def ticks(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @svc.method
    async def upload(chunks: AsyncIterator[bytes]) -> int:
        return 0

    @svc.method
    async def chat(messages: AsyncIterator[str]) -> AsyncIterator[str]:
        async for m in messages:
            yield m

    svc.event("things.happened", Tag)
    return svc


def test_signatures_become_method_specs() -> None:
    """Params, defaults, docs, context, kinds, paging: read once from the signatures."""
    spec = make_service().spec()
    get = spec.methods["get_user"]
    assert get.summary == "Read a user."
    assert get.description == "Longer description."
    assert get.param("id").description == "The user's id."
    assert get.returns == ModelRef("User")
    add = spec.methods["add"]
    assert add.context_param == "ctx"
    assert [p.name for p in add.params] == ["a", "b"]
    assert add.param("b").default == 2
    assert spec.methods["nothing"].returns == Unit
    assert spec.methods["ticks"].kind is MethodKind.SERVER_STREAM
    assert spec.methods["ticks"].returns == Scalar("int")
    assert spec.methods["upload"].kind is MethodKind.CLIENT_STREAM
    assert spec.methods["upload"].stream_item == Scalar("bytes")
    assert spec.methods["chat"].kind is MethodKind.BIDI_STREAM
    listing = spec.methods["list_users"]
    assert listing.paged and listing.returns == ListOf(ModelRef("User"))
    assert listing.param("limit").type.constraints.le == 1000  # type: ignore[union-attr]
    # Events come with the operations that publish them: get and list publish none
    # (tests/core/test_resource_events.py covers the others).
    assert set(spec.events) == {"things.happened"}
    assert spec.resources["users"].key.name == "id"


def test_contract_mistakes_are_reported_clearly() -> None:
    """Wrong declarations fail at start-up with a message naming the method."""
    svc = Service("bad")

    @svc.method
    async def untyped(a) -> int:  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(ContractError, match=r"untyped.*'a' needs a type annotation"):
        svc.spec()

    svc = Service("bad")
    users = svc.resource("users", User)

    @users.get
    async def get_user(key: int) -> User:
        return User(id=1, name="")

    with pytest.raises(ContractError, match="takes the key 'id' first"):
        svc.spec()

    svc = Service("bad")
    with pytest.raises(ContractError, match="has no field"):
        svc.resource("users", User, key="nope")
    with pytest.raises(ContractError, match="must match"):
        Service("Bad Name")

    svc = Service("bad")

    @svc.method
    async def twice() -> int:
        return 1

    with pytest.raises(ContractError, match="declared twice"):
        svc.method(twice)
    svc.spec()
    with pytest.raises(ContractError, match="already being served"):
        svc.event("late", Tag)


def test_event_channels_from_templates() -> None:
    """Channel templates fill from event data; placeholders cannot smuggle wildcards."""
    svc = Service("chat")
    message = svc.event("chat.message", Tag, channel="chat/{name}")
    assert message(Tag(name="lobby")).channel == "chat/lobby"
    assert message.channel_pattern == "chat/+"
    with pytest.raises(ContractError):
        message(Tag(name="a/b"))
    with pytest.raises(ContractError):
        message(Tag(name="#"))


async def test_a_service_may_be_served_by_several_nodes_at_a_time(tmp_path: object) -> None:
    """A second node for the same Service object starts too; each publishes as itself.

    Outside a call, with both serving, the service cannot know which node is
    meant and says how to choose; with one left, that one is.
    """
    from polyport import Settings
    from polyport.node import Node

    svc = Service("single")
    svc.event("things.done", Tag)
    # gRPC on any free port: the default one may be another node's.
    settings = Settings(database=":memory:", event_log="memory", grpc={"port": 0})
    first = Node(svc, settings)
    second = Node(svc, settings)
    async with first.running():
        assert svc.hub is first.runtime.hub
        async with second.running():
            with pytest.raises(RuntimeError, match=r"served by 2 nodes.*node\.publishing"):
                svc.hub  # noqa: B018  (the property is what is tested)
            with second.publishing():
                assert svc.hub is second.runtime.hub
            with first.publishing():
                assert svc.hub is first.runtime.hub
        assert svc.hub is first.runtime.hub
    async with second.running():
        assert svc.hub is second.runtime.hub
