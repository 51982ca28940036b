"""graphql-transport-ws, message by message: a raw `websockets` client against the transport.

The transport runs on polyport's own server (handshake, frames, flow control)
over loopback, driving a scripted runner instead of the GraphQL edge, so every
close code and message order of the protocol is checked on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polyport.core.context import Principal
from polyport.core.errors import NotFound, Unauthenticated
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.transport_ws import SUBPROTOCOL, GraphQLTransportWs
from polyport.http.app import HttpApp
from polyport.http.request import Request
from polyport.server.http1 import HttpConnection, Limits, ServerState
from polyport.server.websocket import WebSocket, WebSocketOptions, accept

from .conftest import masked_text, raw_graphql_socket

TIMEOUT = 10.0


class ScriptedRunner:
    """An OperationRunner whose behaviour the query text chooses; it counts open sources."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.operations = 0
        self.params: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.feed: asyncio.Queue[Any] = asyncio.Queue()
        #: The same result objects for every subscriber (as a runner sharing an event's result).
        self.shared = [{"data": {"shared": i}} for i in range(3)]
        self.batched: Batched | None = None
        self.peers: list[str | None] = []

    async def authenticate(self, params: Any, headers: Any) -> Principal:
        self.params.append(params)
        self.headers.append(dict(headers))
        if params and params.get("slow"):
            await asyncio.sleep(params["slow"])
        if params and params.get("token") == "wrong":
            raise Unauthenticated("unknown token")
        return Principal("tester", frozenset({"*"}))

    async def execute(
        self, payload: Any, principal: Principal, *, peer: str | None = None
    ) -> dict[str, Any]:
        return {"data": {"hello": "world"}}

    async def subscribe(
        self, payload: Any, principal: Principal, *, peer: str | None = None
    ) -> Any:
        self.operations += 1
        self.peers.append(peer)
        query: str = payload["query"]
        variables = payload.get("variables") or {}
        if query.startswith("query"):
            return {"data": {"hello": principal.subject}}
        if query.startswith("mutation"):
            return self._tracked(self._items([{"data": {"done": True}}]))
        if query == "invalid":
            return {"errors": [{"message": "Syntax Error", "extensions": {"code": "PARSE"}}]}
        if query == "boom":
            raise RuntimeError("a secret detail")
        if query == "subscription count":
            n = variables.get("n", 3)
            return self._tracked(self._items([{"data": {"count": i}} for i in range(n)]))
        if query == "subscription feed":
            return self._tracked(self._feed())
        if query == "subscription failing":
            return self._tracked(self._failing())
        if query == "subscription batched":
            bursts = [[{"data": {"b": i}} for i in range(3)], [{"data": {"b": 3}}]]
            self.batched = Batched(self, bursts)
            return self.batched
        if query == "subscription big bursts":
            text = "y" * 1000
            big: list[list[Any]] = [
                [{"data": {"n": b * 100 + i, "t": text}} for i in range(100)] for b in range(3)
            ]
            self.batched = Batched(self, big)
            return self.batched
        if query == "subscription shared":
            return self._tracked(self._items(self.shared))
        if query == "subscription flood":
            return self._tracked(self._flood())
        raise AssertionError(f"unscripted query {query!r}")

    async def _tracked(self, source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        self.opened += 1
        try:
            async for item in source:
                yield item
        finally:
            self.closed += 1

    async def _items(self, items: list[Any]) -> AsyncIterator[Any]:
        for item in items:
            yield item

    async def _feed(self) -> AsyncIterator[Any]:
        while True:
            item = await self.feed.get()
            if item is None:
                return
            yield {"data": {"feed": item}}

    async def _failing(self) -> AsyncIterator[Any]:
        yield {"data": {"failing": 1}}
        raise NotFound("the channel is gone")

    async def _flood(self) -> AsyncIterator[Any]:
        text = "x" * 16_000
        i = 0
        while True:
            i += 1
            yield {"data": {"flood": {"n": i, "text": text}}}
            await asyncio.sleep(0)


class Batched:
    """A source with ``batch()``: the transport reads it a burst at a time."""

    def __init__(self, runner: ScriptedRunner, bursts: list[list[Any]]) -> None:
        self.runner = runner
        self.bursts = bursts
        self.read_one_by_one = False
        runner.opened += 1

    async def batch(self) -> list[Any]:
        return self.bursts.pop(0) if self.bursts else []

    def __aiter__(self) -> Batched:
        return self

    async def __anext__(self) -> Any:
        self.read_one_by_one = True
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.runner.closed += 1


@dataclass
class Served:
    url: str
    host: str
    port: int
    runner: ScriptedRunner
    transport: GraphQLTransportWs
    #: The close code the server sent on each finished socket.
    sent_closes: list[int | None] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serving(
    *, stall_timeout: float = 5.0, send_buffer: int = 256 * 1024, **config: Any
) -> AsyncIterator[Served]:
    """The transport on polyport's server, on a free loopback port of this test's loop."""
    runner = ScriptedRunner()
    settings = GraphQLConfig.model_validate({"connection_init_timeout": 3.0, **config})
    transport = GraphQLTransportWs(runner, settings)
    closes: list[int | None] = []

    class Endpoint:
        subprotocols = transport.subprotocols

        async def __call__(self, ws: WebSocket, request: Request) -> None:
            try:
                await transport(ws, request)
            finally:
                sent = ws.protocol.close_sent
                closes.append(sent.code if sent is not None else None)

    app = HttpApp([], max_body=1024 * 1024, websocket={"/graphql": Endpoint()})
    state = ServerState(app, Limits())
    options = WebSocketOptions(stall_timeout=stall_timeout, send_buffer=send_buffer)

    def upgrade(connection: Any, request: Request, rest: bytes) -> None:
        accept(connection, request, rest, app.websocket[request.path], options)

    state.upgrade = upgrade
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(state), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    served = Served(f"ws://{host}:{port}/graphql", host, port, runner, transport, closes)
    try:
        yield served
    finally:
        server.close()
        for connection in list(state.connections):
            connection.cancel()
        await server.wait_closed()


def connect(served: Served, subprotocols: list[str] | None = None) -> Any:
    offered = [SUBPROTOCOL] if subprotocols is None else subprotocols
    return websockets.connect(
        served.url,
        subprotocols=offered or None,  # type: ignore[arg-type]
        open_timeout=TIMEOUT,
        max_size=None,
    )


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        return orjson.loads(await ws.recv())  # type: ignore[no-any-return]


async def acknowledged(ws: ClientConnection, payload: Any = None) -> None:
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await send(ws, message)
    assert await receive(ws) == {"type": "connection_ack"}


async def closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; the close code and reason it sent."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def settled(served: Served) -> None:
    """Wait until every connection is gone; then no operation task may be left."""
    async with asyncio.timeout(TIMEOUT):
        while served.transport.connections:
            await asyncio.sleep(0.01)
    assert served.transport.operations() == 0
    leftover = [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("graphql-transport-ws") and not t.done()
    ]
    assert leftover == []
    assert served.runner.opened == served.runner.closed


# -- the connection ----------------------------------------------------------------------


async def test_handshake_selects_the_subprotocol_among_others() -> None:
    """A client offering several subprotocols (as gql does) gets graphql-transport-ws."""
    async with serving() as served, connect(served, ["graphql-ws", SUBPROTOCOL]) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        await acknowledged(ws)


async def test_without_the_subprotocol_the_socket_closes_4406() -> None:
    """No graphql-transport-ws offered: 4406, before any message."""
    async with serving() as served:
        async with connect(served, []) as ws:
            assert ws.subprotocol is None
            assert await closed(ws) == (4406, "Subprotocol not acceptable")
        async with connect(served, ["polyport.v1"]) as ws:
            assert await closed(ws) == (4406, "Subprotocol not acceptable")


async def test_connection_init_payload_and_headers_reach_authenticate() -> None:
    """The connection_init payload is the connection params; headers come lower-cased."""
    async with serving() as served:
        async with websockets.connect(
            served.url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers={"X-Api-Key": "k1"},
        ) as ws:
            await acknowledged(ws, {"Authorization": "Bearer t0k"})
        assert served.runner.params == [{"Authorization": "Bearer t0k"}]
        assert served.runner.headers[0]["x-api-key"] == "k1"


async def test_no_connection_init_in_time_closes_4408() -> None:
    """Silence after the handshake: 4408 once connection_init_timeout has passed."""
    async with serving(connection_init_timeout=0.3) as served, connect(served) as ws:
        assert await closed(ws) == (4408, "Connection initialisation timeout")


async def test_an_acknowledged_connection_outlives_the_init_timeout() -> None:
    """The timeout only concerns connection_init: an acknowledged client stays."""
    async with serving(connection_init_timeout=0.5) as served, connect(served) as ws:
        await acknowledged(ws)
        await asyncio.sleep(1.0)
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_the_timeout_is_for_connection_init_not_for_the_ack() -> None:
    """connection_init in time, authentication slower than the timeout: acknowledged, no 4408."""
    async with serving(connection_init_timeout=0.5) as served, connect(served) as ws:
        await acknowledged(ws, {"slow": 1.0})
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}


async def test_a_second_connection_init_closes_4429() -> None:
    """connection_init twice: 4429 Too many initialisation requests."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"type": "connection_init"})
        assert await closed(ws) == (4429, "Too many initialisation requests")


async def test_subscribe_before_the_ack_closes_4401() -> None:
    """An operation before connection_init was acknowledged: 4401 Unauthorized."""
    async with serving() as served, connect(served) as ws:
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": "query { a }"}})
        assert await closed(ws) == (4401, "Unauthorized")
    assert served.runner.operations == 0


async def test_refused_credentials_close_4403() -> None:
    """authenticate refuses the connection params: 4403 Forbidden, no ack."""
    async with serving() as served, connect(served) as ws:
        await send(ws, {"type": "connection_init", "payload": {"token": "wrong"}})
        assert await closed(ws) == (4403, "Forbidden")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "Invalid message received: not JSON"),
        ("[1, 2]", "Message is expected to be an object, but got array"),
        ("{}", "Message is missing the 'type' property"),
        ('{"type": 7}', "Message is missing the 'type' property"),
        ('{"type": "hello"}', "Invalid message 'type' property 'hello'"),
        ('{"type": "connection_init", "payload": [1]}', "'payload' to be an object"),
        ('{"type": "ping", "payload": "x"}', "'payload' to be an object"),
        ('{"type": "next", "id": "1", "payload": {}}', "Unexpected message of type next"),
        ('{"type": "connection_ack"}', "Unexpected message of type connection_ack"),
        ('{"type": "subscribe", "payload": {"query": "q"}}', "non-empty string 'id'"),
        ('{"type": "subscribe", "id": "", "payload": {"query": "q"}}', "non-empty string 'id'"),
        ('{"type": "subscribe", "id": 1, "payload": {"query": "q"}}', "non-empty string 'id'"),
        ('{"type": "subscribe", "id": "1"}', "'payload' to be an object"),
        ('{"type": "subscribe", "id": "1", "payload": {"query": 5}}', "a string 'query'"),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "q", "variables": [1]}}',
            "'variables' to be an object or null",
        ),
        (
            '{"type": "subscribe", "id": "1", "payload": {"query": "q", "operationName": 3}}',
            "'operationName' to be a string or null",
        ),
        ('{"type": "complete"}', "non-empty string 'id'"),
    ],
)
async def test_invalid_messages_close_4400_with_the_reason(message: str, reason: str) -> None:
    """Anything the protocol does not define closes the socket with 4400 and says why."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await ws.send(message)
        code, said = await closed(ws)
        assert code == 4400
        assert said is not None and reason in said


async def test_binary_messages_close_4400() -> None:
    """The protocol's messages are JSON text; a binary message is invalid."""
    async with serving() as served, connect(served) as ws:
        await ws.send(b'{"type": "connection_init"}')
        assert (await closed(ws))[0] == 4400


async def test_an_oversized_message_closes_1009() -> None:
    """Over the WebSocket message limit (64 KiB by default): 1009, as on /ws."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        query = "query { " + "a " * 40_000 + "}"
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": query}})
        assert (await closed(ws))[0] == 1009
    assert served.runner.operations == 0


async def test_long_close_reasons_fit_the_close_frame() -> None:
    """A reason quoting a huge id is cut to the 123 bytes a close frame can carry."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"type": "é" * 200})
        code, reason = await closed(ws)
        assert code == 4400 and reason is not None
        assert len(reason.encode()) <= 123


# -- ping and pong -----------------------------------------------------------------------


async def test_ping_is_answered_with_pong_echoing_the_payload() -> None:
    """ping → pong with the same payload (or none), before and after the ack; pong is ignored."""
    async with serving() as served, connect(served) as ws:
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
        await acknowledged(ws)
        await send(ws, {"type": "ping", "payload": {"at": 12, "nested": {"x": [1]}}})
        assert await receive(ws) == {"type": "pong", "payload": {"at": 12, "nested": {"x": [1]}}}
        await send(ws, {"type": "pong", "payload": {"unsolicited": True}})
        await send(ws, {"type": "ping", "payload": {"n": 2}})
        assert await receive(ws) == {"type": "pong", "payload": {"n": 2}}


# -- operations --------------------------------------------------------------------------


async def test_a_query_gives_one_next_then_complete() -> None:
    """Queries and mutations over subscribe: next, then complete, with the operation's id."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"id": "q1", "type": "subscribe", "payload": {"query": "query { hello }"}})
        assert await receive(ws) == {
            "id": "q1",
            "type": "next",
            "payload": {"data": {"hello": "tester"}},
        }
        assert await receive(ws) == {"id": "q1", "type": "complete"}
        assert served.runner.peers == ["127.0.0.1"]  # the client's own rate-limit bucket
        await send(ws, {"id": "m1", "type": "subscribe", "payload": {"query": "mutation { x }"}})
        assert await receive(ws) == {
            "id": "m1",
            "type": "next",
            "payload": {"data": {"done": True}},
        }
        assert await receive(ws) == {"id": "m1", "type": "complete"}
    await settled(served)


async def test_a_subscription_streams_in_order_then_completes() -> None:
    """Every result of the source as next, in order, then complete; the id is free again."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        payload = {"query": "subscription count", "variables": {"n": 50}}
        await send(ws, {"id": "s", "type": "subscribe", "payload": payload})
        for i in range(50):
            assert await receive(ws) == {
                "id": "s",
                "type": "next",
                "payload": {"data": {"count": i}},
            }
        assert await receive(ws) == {"id": "s", "type": "complete"}
        await send(ws, {"id": "s", "type": "subscribe", "payload": payload})
        again = [await receive(ws) for _ in range(51)]
        assert [m["payload"]["data"]["count"] for m in again[:50]] == list(range(50))
        assert again[50] == {"id": "s", "type": "complete"}
    await settled(served)


async def test_a_result_shared_by_subscribers_reaches_each_with_its_own_id() -> None:
    """One result object for several operations: each gets it under its own id, complete."""
    async with serving() as served, connect(served) as a, connect(served) as b:
        await acknowledged(a)
        await acknowledged(b)
        for ws, ids in ((a, ("a1", "a2")), (b, ("a1",))):
            for operation_id in ids:
                payload = {"query": "subscription shared"}
                await send(ws, {"id": operation_id, "type": "subscribe", "payload": payload})
        got_a = [await receive(a) for _ in range(8)]
        got_b = [await receive(b) for _ in range(4)]
    for operation_id, got in (("a1", got_a), ("a2", got_a), ("a1", got_b)):
        mine = [m for m in got if m["id"] == operation_id]
        assert mine == [
            {"id": operation_id, "type": "next", "payload": {"data": {"shared": i}}}
            for i in range(3)
        ] + [{"id": operation_id, "type": "complete"}]
    await settled(served)


async def test_a_source_with_batch_is_read_a_burst_at_a_time() -> None:
    """batch(): every result of every burst, in order, then complete; the source is closed."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(
            ws, {"id": "b", "type": "subscribe", "payload": {"query": "subscription batched"}}
        )
        got = [await receive(ws) for _ in range(5)]
    assert got == [{"id": "b", "type": "next", "payload": {"data": {"b": i}}} for i in range(4)] + [
        {"id": "b", "type": "complete"}
    ]
    assert served.runner.batched is not None and not served.runner.batched.read_one_by_one
    await settled(served)


async def test_bursts_larger_than_a_write_arrive_whole_and_in_order() -> None:
    """Bursts of ~100 KB (over one write's worth): every result, in order, then complete."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        payload = {"query": "subscription big bursts"}
        await send(ws, {"id": "big", "type": "subscribe", "payload": payload})
        got = [await receive(ws) for _ in range(301)]
    assert [m["payload"]["data"]["n"] for m in got[:300]] == list(range(300))
    assert got[300] == {"id": "big", "type": "complete"}
    await settled(served)


async def test_a_duplicate_id_while_active_closes_4409() -> None:
    """A second subscribe with a running operation's id: 4409 Subscriber for <id> already exists."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        feed = {"query": "subscription feed"}
        await send(ws, {"id": "dup", "type": "subscribe", "payload": feed})
        await served.runner.feed.put("one")
        assert (await receive(ws))["payload"] == {"data": {"feed": "one"}}
        await send(ws, {"id": "dup", "type": "subscribe", "payload": feed})
        assert await closed(ws) == (4409, "Subscriber for dup already exists")
    await settled(served)


async def test_client_complete_stops_the_subscription_and_closes_its_source() -> None:
    """complete from the client: no more next for that id, the source is closed, others go on."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"id": "a", "type": "subscribe", "payload": {"query": "subscription feed"}})
        await served.runner.feed.put(1)
        assert (await receive(ws))["id"] == "a"
        await send(ws, {"id": "a", "type": "complete"})
        async with asyncio.timeout(TIMEOUT):
            while served.runner.closed < 1:
                await asyncio.sleep(0.01)
        assert served.transport.operations() == 0
        # Completing an unknown or finished id is harmless.
        await send(ws, {"id": "a", "type": "complete"})
        await send(ws, {"id": "never", "type": "complete"})
        # The id is free again; the new subscription gets what is fed now.
        await send(ws, {"id": "a", "type": "subscribe", "payload": {"query": "subscription feed"}})
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
        await served.runner.feed.put(2)
        assert await receive(ws) == {"id": "a", "type": "next", "payload": {"data": {"feed": 2}}}
    await settled(served)


async def test_an_operation_that_cannot_start_gets_error_and_no_complete() -> None:
    """The runner's errors come back as an error message; the socket stays usable."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"id": "bad", "type": "subscribe", "payload": {"query": "invalid"}})
        assert await receive(ws) == {
            "id": "bad",
            "type": "error",
            "payload": [{"message": "Syntax Error", "extensions": {"code": "PARSE"}}],
        }
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}  # no complete came in between


async def test_a_failing_runner_is_an_internal_error_that_leaks_nothing() -> None:
    """An exception in the runner: error with INTERNAL and a request id, not the message."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"id": "x", "type": "subscribe", "payload": {"query": "boom"}})
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "x"
        [error] = message["payload"]
        assert error["extensions"]["code"] == "INTERNAL"
        assert error["extensions"]["requestId"]
        assert "secret" not in orjson.dumps(message).decode()


async def test_a_source_failing_midway_ends_with_error() -> None:
    """A core error raised by the source after some results: those results, then error."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(
            ws, {"id": "f", "type": "subscribe", "payload": {"query": "subscription failing"}}
        )
        assert (await receive(ws))["payload"] == {"data": {"failing": 1}}
        message = await receive(ws)
        assert message["type"] == "error" and message["id"] == "f"
        assert message["payload"][0]["extensions"]["code"] == "NOT_FOUND"
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
    await settled(served)


async def test_operations_per_connection_are_capped() -> None:
    """Over max_subscriptions: that operation gets RATE_LIMITED; finishing one frees a place."""
    async with serving(max_subscriptions=2) as served, connect(served) as ws:
        await acknowledged(ws)
        feed = {"query": "subscription feed"}
        await send(ws, {"id": "1", "type": "subscribe", "payload": feed})
        await send(ws, {"id": "2", "type": "subscribe", "payload": feed})
        await send(ws, {"id": "3", "type": "subscribe", "payload": feed})
        message = await receive(ws)
        assert message["id"] == "3" and message["type"] == "error"
        assert message["payload"][0]["extensions"]["code"] == "RATE_LIMITED"
        await send(ws, {"id": "1", "type": "complete"})
        await send(ws, {"id": "3", "type": "subscribe", "payload": feed})
        await send(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}
        assert served.transport.operations() == 2
    await settled(served)


# -- clean-up and slow consumers ---------------------------------------------------------


async def test_every_source_is_closed_when_the_socket_goes() -> None:
    """Several live subscriptions, then the client vanishes: all sources closed, no task left."""
    async with serving() as served:
        for _ in range(5):
            ws = await connect(served)
            await acknowledged(ws)
            for i in range(3):
                payload = {"query": "subscription feed"}
                await send(ws, {"id": str(i), "type": "subscribe", "payload": payload})
            await send(ws, {"type": "ping"})
            await receive(ws)
            async with asyncio.timeout(TIMEOUT):
                while served.runner.opened < 3:
                    await asyncio.sleep(0.01)
            await ws.close()
            await settled(served)
            assert served.runner.closed == 3
            served.runner.opened = served.runner.closed = 0
        assert served.sent_closes[:1] == [1000]


async def test_shutdown_closes_sockets_with_1001_and_cleans_up() -> None:
    """The node stopping: 1001 going away; the sources are closed."""
    async with serving() as served, connect(served) as ws:
        await acknowledged(ws)
        await send(ws, {"id": "1", "type": "subscribe", "payload": {"query": "subscription feed"}})
        await send(ws, {"type": "ping"})
        await receive(ws)
        served.transport.shutdown()
        assert (await closed(ws))[0] == 1001
        await settled(served)


async def test_a_client_that_stops_reading_is_closed_1013() -> None:
    """Results pile up unread: after stall_timeout the server closes with 1013 and cleans up."""
    async with serving(stall_timeout=0.5, send_buffer=16 * 1024) as served:
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, raw_graphql_socket, served.host, served.port)
        try:
            sock.sendall(masked_text(b'{"type":"connection_init"}'))
            sock.sendall(
                masked_text(
                    b'{"id":"1","type":"subscribe","payload":{"query":"subscription flood"}}'
                )
            )
            async with asyncio.timeout(30):
                while not served.sent_closes:
                    await asyncio.sleep(0.05)
            assert served.sent_closes == [1013]
            await settled(served)
            assert served.runner.opened == served.runner.closed == 1
        finally:
            sock.close()
