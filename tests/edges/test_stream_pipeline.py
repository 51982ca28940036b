"""A streaming method gets the same deadline, checks, errors and metrics on every edge.

GraphQL subscriptions, SSE, the WebSocket session and gRPC server streams all
read a stream from ``Dispatcher.open_stream``: the method's ``timeout=`` ends
it with DEADLINE_EXCEEDED, the handler's ``Context`` sees that deadline, an
item its type cannot hold is OUT_OF_RANGE, a refusal is counted, and
``polyport_calls_total`` / ``polyport_call_seconds`` count each stream once,
with its code and its time, when it ends. Each edge with a client it did not
write: ``gql``, httpx, ``websockets``, grpcio with reflection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
import websockets
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from pydantic import BaseModel

from polyport import Context, Service, Settings
from polyport.testing import RunningNode, serve_in_thread

TIMEOUT = 15.0
#: The deadline of ``slow_ticks``: its stream ends this long after it was opened.
DEADLINE = 0.3

svc = Service("paced")


class Tick(BaseModel):
    n: int
    left: float | None = None


@svc.method(public=True, timeout=DEADLINE)
async def slow_ticks() -> AsyncIterator[Tick]:
    """One tick, then a wait the deadline cuts short."""
    yield Tick(n=1)
    await asyncio.sleep(30)
    yield Tick(n=2)


@svc.method(public=True, timeout=5.0)
async def deadline_left(ctx: Context) -> AsyncIterator[Tick]:
    """The seconds the handler's context says are left."""
    yield Tick(n=1, left=ctx.remaining())


@svc.stream(public=True)
async def count_to(n: int) -> AsyncIterator[Tick]:
    """1 … n, 50 ms apart."""
    for i in range(1, n + 1):
        if i > 1:
            await asyncio.sleep(0.05)
        yield Tick(n=i)


@svc.stream(public=True)
async def beyond_int64() -> AsyncIterator[int]:
    """An item no wire's int64 holds."""
    yield 2**64


@svc.stream(scopes=["ticks"])
async def scoped() -> AsyncIterator[Tick]:
    yield Tick(n=1)


READER = "reader-key-0123456789"
PLAIN = "plain-key-0123456789"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("pipeline") / "db.sqlite3"
    settings = Settings.model_validate(
        {
            "database": str(db),
            "rate_limit": {"enabled": False},
            "grpc": {"port": 0},
            "auth": {
                "api_keys": [
                    {"key": READER, "subject": "reader", "scopes": ["ticks", "metrics"]},
                    {"key": PLAIN, "subject": "plain", "scopes": ["metrics"]},
                ]
            },
        }
    )
    with serve_in_thread(svc, settings, edges=["sse", "ws", "graphql", "grpc"]) as running:
        yield running


# -- one client per edge: (items, the error's core code or None) ----------------------------

Outcome = tuple[list[dict[str, Any]], str | None]

#: extensions.code → the core's code (GraphQL's are coarser: OUT_OF_RANGE is BAD_USER_INPUT).
GRAPHQL_CODES = {"BAD_USER_INPUT": "INVALID_ARGUMENT", "FORBIDDEN": "PERMISSION_DENIED"}


#: Streams of plain values, not of Ticks: no selection set.
SCALAR_STREAMS = {"beyond_int64"}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def over_graphql(node: RunningNode, method: str, args: dict[str, int], key: str) -> Outcome:
    arguments = ", ".join(f"{k}: {v}" for k, v in args.items())
    field = camel(method) + (f"({arguments})" if arguments else "")
    transport = WebsocketsTransport(
        url=node.url.replace("http://", "ws://") + "/graphql",
        init_payload={"X-API-Key": key} if key else {},
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=2,
    )
    items: list[dict[str, Any]] = []
    selection = "" if method in SCALAR_STREAMS else "{ n left }"
    async with Client(transport=transport) as session:
        try:
            async for result in session.subscribe(gql(f"subscription {{ {field} {selection} }}")):
                items.append(result[camel(method)])
        except TransportQueryError as exc:
            code = (exc.errors or [{}])[0]["extensions"]["code"]
            return items, GRAPHQL_CODES.get(code, code)
    return items, None


async def over_sse(node: RunningNode, method: str, args: dict[str, int], key: str) -> Outcome:
    headers = {"x-api-key": key} if key else {}
    async with (
        httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as http,
        http.stream("GET", f"/v1/{method}/stream", params=args, headers=headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            return [], str(response.json()["code"])
        items: list[dict[str, Any]] = []
        message: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                message[name] = value
                continue
            event = message.get("event")
            if event == "item":
                items.append(orjson.loads(message["data"]))
            elif event == "end":
                return items, None
            elif event == "error":
                return items, str(orjson.loads(message["data"])["code"])
            message = {}
    raise AssertionError("the stream ended without end or error")


async def over_websocket(node: RunningNode, method: str, args: dict[str, int], key: str) -> Outcome:
    url = node.url.replace("http://", "ws://") + "/ws"
    headers = {"x-api-key": key} if key else {}
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        await ws.send(orjson.dumps({"id": 1, "type": "call", "method": method, "args": args}))
        items: list[dict[str, Any]] = []
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("id") != 1:
                continue
            if frame["type"] == "item":
                items.append(frame["item"])
            elif frame["type"] == "end":
                return items, None
            elif frame["type"] == "error":
                return items, str(frame["error"]["code"])


def _grpc_stream(node: RunningNode, method: str, args: dict[str, int], key: str) -> Outcome:
    from google.protobuf import descriptor_pool, message_factory
    from google.rpc import error_details_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    from grpc_status import rpc_status

    edge = next(e for e in node.node.edges if e.name == "grpc")
    with grpc.insecure_channel(f"{node.host}:{edge.port}") as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("polyport.paced.v1.PacedService")
        rpc = service.methods_by_name["".join(p.title() for p in method.split("_"))]
        request = message_factory.GetMessageClass(rpc.input_type)(**args)
        output = message_factory.GetMessageClass(rpc.output_type)
        call = channel.unary_stream(
            f"/{service.full_name}/{rpc.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )
        items: list[dict[str, Any]] = []
        try:
            metadata = [("x-api-key", key)] if key else None
            for message in call(request, timeout=TIMEOUT, metadata=metadata):
                left = message.left if message.HasField("left") else None
                items.append({"n": message.n, "left": left})
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
            return items, info.reason
    return items, None


async def over_grpc(node: RunningNode, method: str, args: dict[str, int], key: str) -> Outcome:
    return await asyncio.to_thread(_grpc_stream, node, method, args, key)


Stream = Callable[[RunningNode, str, dict[str, int], str], Awaitable[Outcome]]
EDGES: dict[str, Stream] = {
    "graphql": over_graphql,
    "sse": over_sse,
    "ws": over_websocket,
    "grpc": over_grpc,
}


@pytest.fixture(params=list(EDGES))
def edge(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def stream(node: RunningNode, edge: str, method: str, key: str = "", **args: int) -> Outcome:
    async with asyncio.timeout(TIMEOUT):
        return await EDGES[edge](node, method, args, key)


# -- the metrics, as Prometheus reads them ----------------------------------------------------


async def metrics(node: RunningNode) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as http:
        text = (await http.get("/metrics", headers={"x-api-key": READER})).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def calls(edge: str, method: str, code: str) -> str:
    return f'polyport_calls_total{{edge="{edge}",method="{method}",code="{code}"}}'


def seconds(edge: str, method: str, part: str = "sum") -> str:
    return f'polyport_call_seconds_{part}{{edge="{edge}",method="{method}"}}'


async def grown(
    node: RunningNode, before: dict[str, float], name: str, by: float = 1.0
) -> dict[str, float]:
    """The metrics once ``name`` has grown by ``by`` (the edge may count a moment later)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            after = await metrics(node)
            if after.get(name, 0.0) - before.get(name, 0.0) >= by:
                return after
            await asyncio.sleep(0.02)


# -- the tests --------------------------------------------------------------------------------


async def test_the_methods_timeout_ends_the_stream(node: RunningNode, edge: str) -> None:
    """timeout=0.3 on a stream: its items, then DEADLINE_EXCEEDED, counted with its time."""
    before = await metrics(node)
    items, code = await stream(node, edge, "slow_ticks")
    assert [item["n"] for item in items] == [1]
    assert code == "DEADLINE_EXCEEDED"
    after = await grown(node, before, calls(edge, "slow_ticks", "DEADLINE_EXCEEDED"))
    spent = after[seconds(edge, "slow_ticks")] - before.get(seconds(edge, "slow_ticks"), 0.0)
    assert spent >= DEADLINE


async def test_the_handler_sees_the_deadline(node: RunningNode, edge: str) -> None:
    """A stream's Context counts down to the method's timeout, whichever edge opened it."""
    items, code = await stream(node, edge, "deadline_left")
    assert code is None
    assert 0 < items[0]["left"] <= 5.0


async def test_a_finished_stream_is_counted_once_with_its_time(
    node: RunningNode, edge: str
) -> None:
    """polyport_calls_total: one OK when the stream ends; polyport_call_seconds: its length."""
    before = await metrics(node)
    items, code = await stream(node, edge, "count_to", n=3)
    assert ([item["n"] for item in items], code) == ([1, 2, 3], None)
    after = await grown(node, before, calls(edge, "count_to", "OK"))
    assert after[calls(edge, "count_to", "OK")] - before.get(calls(edge, "count_to", "OK"), 0) == 1
    count = seconds(edge, "count_to", "count")
    assert after[count] - before.get(count, 0.0) == 1
    spent = after[seconds(edge, "count_to")] - before.get(seconds(edge, "count_to"), 0.0)
    assert spent >= 0.1  # two 50 ms waits between the items


async def test_an_item_beyond_int64_is_out_of_range(node: RunningNode, edge: str) -> None:
    """The item is held to its type, as a unary result is: OUT_OF_RANGE, not INTERNAL
    (GraphQL's codes are coarser: BAD_USER_INPUT, as for any invalid argument)."""
    before = await metrics(node)
    items, code = await stream(node, edge, "beyond_int64")
    assert items == []
    assert code == ("INVALID_ARGUMENT" if edge == "graphql" else "OUT_OF_RANGE")
    await grown(node, before, calls(edge, "beyond_int64", "OUT_OF_RANGE"))


async def test_refusals_are_checked_and_counted(node: RunningNode, edge: str) -> None:
    """Anonymous: UNAUTHENTICATED; a key without the scope: PERMISSION_DENIED; the right
    key reads. Each refusal is counted, as a refused unary call is."""
    before = await metrics(node)
    assert await stream(node, edge, "scoped") == ([], "UNAUTHENTICATED")
    assert await stream(node, edge, "scoped", PLAIN) == ([], "PERMISSION_DENIED")
    items, code = await stream(node, edge, "scoped", READER)
    assert ([item["n"] for item in items], code) == ([1], None)
    after = await grown(node, before, calls(edge, "scoped", "PERMISSION_DENIED"))
    for outcome in ("UNAUTHENTICATED", "PERMISSION_DENIED", "OK"):
        name = calls(edge, "scoped", outcome)
        assert after.get(name, 0.0) - before.get(name, 0.0) == 1, outcome


# -- GraphQL: the request is charged once, not again by the stream ------------------------------


#: A service of its own: a node serves a Service object at a time.
charged = Service("charged")


@charged.stream(public=True)
async def one() -> AsyncIterator[Tick]:
    yield Tick(n=1)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("limited") / "db.sqlite3"
    settings = Settings.model_validate(
        {"dev": True, "database": str(db), "rate_limit": {"rate": 0.001, "burst": 2}}
    )
    with serve_in_thread(charged, settings, edges=["graphql"]) as running:
        yield running


async def test_a_graphql_subscription_is_charged_once(limited: RunningNode) -> None:
    """Two stream subscriptions fit a burst of two (the edge charged each request once;
    the stream path does not charge it again); the third is RATE_LIMITED."""
    for _ in range(2):
        items, code = await stream(limited, "graphql", "one")
        assert ([item["n"] for item in items], code) == ([1], None)
    assert await stream(limited, "graphql", "one") == ([], "RATE_LIMITED")
