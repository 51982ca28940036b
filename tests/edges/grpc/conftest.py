"""A service like the guide's UserService, with every type of the mapping, served for real.

Clients here are grpcio's own: a plain channel with messages built from the
descriptors that the **reflection client** fetched from the server, so no
generated code is involved (the `.proto` export test compiles stubs itself).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import types
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from pydantic import BaseModel, Field, computed_field, field_serializer

from polyport import Context, Service, Settings
from polyport.core.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from polyport.testing import RunningNode, serve_in_thread

PACKAGE = "polyport.usersvc.v1"
SERVICE = f"{PACKAGE}.UsersvcService"


class Role(enum.StrEnum):
    """What a user may do."""

    ADMIN = "admin"
    MEMBER = "member"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 5


class Switch(enum.IntEnum):
    OFF = 0
    ON = 1


class Address(BaseModel):
    street: str
    zip: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Everything(BaseModel):
    """One field per kind of the type mapping."""

    i: int
    f: float
    b: bool
    s: str
    raw: bytes
    dec: Decimal
    uid: UUID
    at: dt.datetime
    day: dt.date
    clock: dt.time
    role: Role
    level: Level
    switch: Switch
    mode: Literal["fast", "slow"]
    small: Literal[1, 2, 3]
    anything: Any
    address: Address
    pet: Cat | Dog
    num_or_text: int | str
    tags: list[str]
    addresses: list[Address]
    grid: list[list[int]]
    sparse: list[int | None]
    counts: dict[str, int]
    by_id: dict[int, Address]
    nested_map: dict[str, list[str]]
    times: list[dt.datetime]
    time_map: dict[str, dt.datetime]
    maybe_int: int | None = None
    maybe_str: str | None = None
    maybe_role: Role | None = None
    maybe_address: Address | None = None
    maybe_list: list[int] | None = None
    maybe_union: int | str | None = None
    with_default: int = 7


class User(BaseModel):
    """A user of the guide's UserService."""

    id: int
    name: str
    email: str
    role: Role = Role.MEMBER


class UserData(BaseModel):
    name: Annotated[str, Field(min_length=1)]
    email: str


class Message(BaseModel):
    user: str
    text: str


class Note(BaseModel):
    topic: str
    text: str


class Stats(BaseModel):
    """A computed field: not part of the contract's type graph, so not on the wire."""

    n: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.n * 2


class Shout(BaseModel):
    """A field serializer: what the wire carries is what it returns."""

    text: str
    size: int = Field(alias="length")

    @field_serializer("text")
    def _loud(self, value: str) -> str:
        return value.upper()


svc = Service("usersvc", description="The guide's UserService, and every type of the mapping.")
NoteEvent = svc.event("notes.posted", Note, channel="notes/{topic}", public=True)

USERS: dict[int, User] = {1: User(id=1, name="Ada", email="ada@example.com", role=Role.ADMIN)}
#: What handlers saw, for the tests to inspect (the node runs in another thread).
SEEN: dict[str, Any] = {}


@svc.method
async def get_user(id: Annotated[int, Field(ge=1)]) -> User:
    """Read one user.

    Args:
        id: The user's id.
    """
    try:
        return USERS[id]
    except KeyError:
        raise NotFound(f"no user {id}") from None


@svc.stream
async def list_users(limit: int = 10, role: Role | None = None) -> AsyncIterator[User]:
    """Stream users, one message each."""
    for user in list(USERS.values())[:limit]:
        if role is None or user.role == role:
            yield user


@svc.client_stream
async def create_user(users: AsyncIterator[UserData]) -> User:
    """Create a user per message; answer with the last one created."""
    last = None
    async for data in users:
        last = User(id=max(USERS) + 1, name=data.name, email=data.email)
        USERS[last.id] = last
    if last is None:
        raise InvalidArgument("send at least one user")
    return last


@svc.bidi_stream
async def chat_stream(messages: AsyncIterator[Message]) -> AsyncIterator[Message]:
    """Answer every message as it arrives."""
    async for message in messages:
        yield Message(user="bot", text=message.text.upper())


@svc.stream
async def countdown(start: int) -> AsyncIterator[int]:
    """Count down to 1; a start above 5 is refused; 0 breaks after the first item."""
    if start > 5:
        raise InvalidArgument("at most 5", details=[{"field": "start", "message": "≤ 5"}])
    yield start or 1
    if start == 0:
        raise RuntimeError("the countdown broke (an internal detail)")
    for n in range(start - 1, 0, -1):
        yield n


@svc.client_stream
async def sum_numbers(scale: int, numbers: AsyncIterator[int]) -> int:
    """A client stream with a parameter: it comes with the first message."""
    total = 0
    async for n in numbers:
        total += n
    return total * scale


@svc.method
async def echo(value: Everything) -> Everything:
    """Give back what came in (and remember it)."""
    SEEN["echo"] = value
    return value


@svc.method
async def echo_values(
    grid: list[list[int]], maybe: int | None = None, choice: int | str = 0
) -> list[list[int]]:
    """Plain parameters and a non-model result."""
    SEEN["echo_values"] = {"grid": grid, "maybe": maybe, "choice": choice}
    return grid


@svc.method
async def maybe_user(id: int) -> User | None:
    return USERS.get(id)


@svc.method
async def stats(n: int) -> Stats:
    return Stats(n=n)


@svc.method
async def shout(text: str) -> Shout:
    return Shout(text=text, length=len(text))


@svc.method
async def nothing() -> None:
    SEEN["nothing"] = True


@svc.method
async def fail(kind: str) -> None:
    """Raise one error of the table."""
    errors: dict[str, Exception] = {
        "not_found": NotFound("no such thing"),
        "conflict": Conflict("already there"),
        "denied": PermissionDenied("not yours"),
        "rate": RateLimited("slow down", retry_after=2.5),
        "unavailable": Unavailable("down for maintenance", retry_after=1),
        "internal": RuntimeError("secret database password in this message"),
    }
    raise errors[kind]


@svc.method
async def slow(ctx: Context, seconds: Annotated[float, Field(ge=0, le=5)]) -> float:
    """Sleep, after noting how long the caller said it would wait."""
    SEEN["remaining"] = ctx.remaining()
    await asyncio.sleep(seconds)
    return seconds


@svc.method(public=True)
async def post_note(topic: str, text: str, count: int = 1) -> int:
    """Publish ``count`` note events (``text``, or ``text-{i}`` for several)."""
    for i in range(count):
        await NoteEvent.publish(Note(topic=topic, text=text if count == 1 else f"{text}-{i}"))
    return count


def settings(**extra: Any) -> Settings:
    base: dict[str, Any] = {
        "dev": True,
        "database": ":memory:",
        "event_log": "memory",
        "rate_limit": {"enabled": False},
        "grpc": {"port": 0},
    }
    base.update(extra)
    return Settings.model_validate(base)


def grpc_edge(node: RunningNode) -> Any:
    return next(edge for edge in node.node.edges if edge.name == "grpc")


@pytest.fixture(scope="module")
def node() -> Iterator[RunningNode]:
    with serve_in_thread(svc, settings()) as server:
        yield server


@pytest.fixture(scope="module")
def target(node: RunningNode) -> str:
    return f"127.0.0.1:{grpc_edge(node).port}"


class Reflected:
    """Calls any method of a server knowing only what its reflection service says."""

    def __init__(self, channel: grpc.Channel, service: str = SERVICE) -> None:
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        self.service = self.pool.FindServiceByName(service)

    def message(self, name: str, /, **fields: Any) -> Any:
        full = name if "." in name else f"{self.service.file.package}.{name}"
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full))(**fields)

    def stub(self, rpc: str) -> Any:
        method = self.service.methods_by_name[rpc]
        output = message_factory.GetMessageClass(method.output_type)
        kinds = {
            (False, False): self.channel.unary_unary,
            (False, True): self.channel.unary_stream,
            (True, False): self.channel.stream_unary,
            (True, True): self.channel.stream_stream,
        }
        make = kinds[(method.client_streaming, method.server_streaming)]
        return make(
            f"/{self.service.full_name}/{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )

    def __call__(self, rpc: str, request: Any = None, **options: Any) -> Any:
        method = self.service.methods_by_name[rpc]
        if request is None or isinstance(request, dict):
            request = message_factory.GetMessageClass(method.input_type)(**(request or {}))
        return self.stub(rpc)(request, **options)


@pytest.fixture(scope="module")
def channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as chan:
        yield chan


@pytest.fixture(scope="module")
def rpc(channel: grpc.Channel) -> Reflected:
    return Reflected(channel)


@pytest.fixture(scope="session")
def usersvc() -> types.SimpleNamespace:
    """This module's models, service and helpers, for the tests (conftest is no package)."""
    return types.SimpleNamespace(**globals())
