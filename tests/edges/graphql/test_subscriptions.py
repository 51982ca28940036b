"""GraphQL subscriptions end to end: the `gql` library's graphql-transport-ws client on a node.

Events published through REST arrive in order, resume with ``after`` leaves
no gap, ``@service.stream`` methods stream, and queries, mutations and
authentication work over the socket the same way as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

from .conftest import masked_text, raw_graphql_socket

TIMEOUT = 15.0


def ws_url(node: RunningNode) -> str:
    return node.url.replace("http://", "ws://") + "/graphql"


def transport(node: RunningNode, init_payload: dict[str, Any] | None = None) -> Any:
    return WebsocketsTransport(
        url=ws_url(node),
        init_payload=init_payload or {},
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=2,
    )


async def refused(session: Any, request: GraphQLRequest) -> list[dict[str, Any]]:
    """The GraphQL errors of the ``error`` message refusing an operation."""
    async with asyncio.timeout(TIMEOUT):
        try:
            async for _ in session.subscribe(request):
                pass
        except TransportQueryError as exc:
            return exc.errors or []
    raise AssertionError("the operation was not refused")


async def no_subscription_left(node: RunningNode) -> None:
    """Every event-log subscription the GraphQL clients opened is closed again."""
    hub = node.node.runtime.hub
    async with asyncio.timeout(TIMEOUT):
        while hub.subscriber_count:
            await asyncio.sleep(0.02)


# -- the demo shop: orders created through REST ------------------------------------------


@pytest.fixture
def shop_node(tmp_path: Any) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "shop.sqlite3"),
            "rate_limit": {"enabled": False},
            "history": {"max_events": 5},
        }
    )
    with serve_in_thread(shop, settings, edges=["rest", "graphql"]) as node:
        yield node


ORDERS = """
subscription Orders($after: String) {
  ordersCreated(after: $after) {
    id
    offset
    data { id userId total items { productId quantity } }
  }
}
"""


async def place_order(http: httpx.AsyncClient, product_id: int, quantity: int) -> dict[str, Any]:
    response = await http.post(
        "/v1/orders",
        json={"user_id": 1, "items": [{"product_id": product_id, "quantity": quantity}]},
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_orders_created_through_rest_arrive_in_order(shop_node: RunningNode) -> None:
    """A subscription gets every order REST creates, in order, with the order's fields."""
    async with (
        httpx.AsyncClient(base_url=shop_node.url, timeout=TIMEOUT) as http,
        Client(transport=transport(shop_node)) as session,
    ):
        first = await place_order(http, 1, 1)
        events = session.subscribe(GraphQLRequest(ORDERS, variable_values={"after": "earliest"}))
        async with asyncio.timeout(TIMEOUT):
            # The first order is in the history: once it arrives the subscription is live.
            received = [(await anext(events))["ordersCreated"]]
            placed = [first] + [await place_order(http, p, 1) for p in (2, 3, 1)]
            while len(received) < len(placed):
                received.append((await anext(events))["ordersCreated"])
        await events.aclose()
    assert [e["data"]["id"] for e in received] == [o["id"] for o in placed]
    assert [e["data"]["total"] for e in received] == [o["total"] for o in placed]
    assert received[1]["data"]["items"] == [{"productId": 2, "quantity": 1}]
    offsets = [e["offset"] for e in received]
    assert offsets == list(range(offsets[0], offsets[0] + len(placed)))
    assert all(e["id"].endswith(f":{e['offset']}") for e in received)
    await no_subscription_left(shop_node)


async def test_resume_after_an_event_id_has_no_gap(shop_node: RunningNode) -> None:
    """after=<id>: what followed that event (nothing before it), then live events."""
    async with httpx.AsyncClient(base_url=shop_node.url, timeout=TIMEOUT) as http:
        placed = [await place_order(http, 1, 1) for _ in range(3)]
        async with Client(transport=transport(shop_node)) as session:
            events = session.subscribe(
                GraphQLRequest(ORDERS, variable_values={"after": "earliest"})
            )
            async with asyncio.timeout(TIMEOUT):
                seen = [(await anext(events))["ordersCreated"] for _ in range(3)]
            await events.aclose()
        assert [e["data"]["id"] for e in seen] == [o["id"] for o in placed]
        # A new connection resumes after the first event it saw.
        async with Client(transport=transport(shop_node)) as session:
            events = session.subscribe(
                GraphQLRequest(ORDERS, variable_values={"after": seen[0]["id"]})
            )
            async with asyncio.timeout(TIMEOUT):
                resumed = [(await anext(events))["ordersCreated"] for _ in range(2)]
                live = await place_order(http, 2, 1)
                resumed.append((await anext(events))["ordersCreated"])
            await events.aclose()
    assert [e["data"]["id"] for e in resumed] == [placed[1]["id"], placed[2]["id"], live["id"]]
    await no_subscription_left(shop_node)
    assert [e["offset"] for e in resumed] == [
        seen[1]["offset"],
        seen[2]["offset"],
        seen[2]["offset"] + 1,
    ]


async def test_resume_from_lost_history_is_an_explicit_error(shop_node: RunningNode) -> None:
    """after= an event the log no longer holds: RECOVERY_FAILED, never a silent gap."""
    async with httpx.AsyncClient(base_url=shop_node.url, timeout=TIMEOUT) as http:
        for _ in range(8):  # history keeps 5 events per channel
            await place_order(http, 3, 1)
    async with Client(transport=transport(shop_node)) as session:
        events = session.subscribe(GraphQLRequest(ORDERS, variable_values={"after": "earliest"}))
        async with asyncio.timeout(TIMEOUT):
            oldest = (await anext(events))["ordersCreated"]
        await events.aclose()
        assert oldest["offset"] > 1
        stale = oldest["id"].rsplit(":", 1)[0] + ":1"
        errors = await refused(session, GraphQLRequest(ORDERS, variable_values={"after": stale}))
    assert errors[0]["extensions"]["code"] == "RECOVERY_FAILED"


async def test_queries_and_mutations_over_the_socket(shop_node: RunningNode) -> None:
    """execute() over graphql-transport-ws: the same data and errors as over HTTP."""
    async with Client(transport=transport(shop_node)) as session:
        user = await session.execute(gql("query { user(id: 1) { id name } }"))
        assert user == {"user": {"id": 1, "name": "Alice"}}
        created = await session.execute(
            GraphQLRequest(
                "mutation($name: String!, $email: String!) {"
                " createUser(name: $name, email: $email) { id name email } }",
                variable_values={"name": "Zoë", "email": "zoe@example.com"},
            )
        )
        assert created["createUser"]["name"] == "Zoë"
        again = await session.execute(
            GraphQLRequest(
                "query($id: Long!) { user(id: $id) { email } }",
                variable_values={"id": created["createUser"]["id"]},
            )
        )
        assert again == {"user": {"email": "zoe@example.com"}}
        with pytest.raises(TransportQueryError) as raised:
            await session.execute(gql("query { user(id: 987654) { id } }"))
        assert raised.value.errors is not None
        assert raised.value.errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_an_invalid_operation_is_refused_and_the_socket_stays(shop_node: RunningNode) -> None:
    """Validation errors come back as an error message; the connection goes on."""
    async with Client(transport=transport(shop_node)) as session:
        errors = await refused(session, gql("subscription { noSuchField }"))
        assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        errors = await refused(session, gql("subscription { ordersCreated(after: 5) { id } }"))
        assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await session.execute(gql("query { user(id: 2) { id } }")) == {"user": {"id": 2}}


# -- stream methods and authentication: a small service of its own -------------------------

ticks = Service("ticks", version=1)
#: How many times a ``forever`` stream has been closed, since the module loaded.
CLOSED_STREAMS: list[int] = []


class Tick(BaseModel):
    n: int
    label: str


class Alarm(BaseModel):
    level: int
    text: str


AlarmRaised = ticks.event("alarms.raised", Alarm, scopes=["alarms"])
Chatter = ticks.event("chatter.said", Alarm, public=True)


@ticks.stream(public=True)
async def count_to(n: int) -> AsyncIterator[Tick]:
    """1, 2, … n."""
    for i in range(1, n + 1):
        yield Tick(n=i, label=f"tick {i}")


@ticks.stream(public=True)
async def forever() -> AsyncIterator[Tick]:
    """Ticks until the subscriber goes away."""
    i = 0
    try:
        while True:
            i += 1
            yield Tick(n=i, label="again")
            await asyncio.sleep(0.01)
    finally:
        CLOSED_STREAMS.append(i)


@ticks.method(public=True)
async def ping() -> int:
    return 1


ALARM_KEY = "alarm-key-0123456789"
PLAIN_KEY = "plain-key-0123456789"


@pytest.fixture(scope="module")
def ticks_node() -> Iterator[RunningNode]:
    """Secure mode: one key may read alarms, one may not; streams are public."""
    settings = Settings.model_validate(
        {
            "database": ":memory:",
            "event_log": "memory",
            "rate_limit": {"enabled": False},
            "history": {"max_events": 100_000},
            "websocket": {"send_buffer": 64 * 1024, "stall_timeout": 1.0},
            "auth": {
                "api_keys": [
                    {"key": ALARM_KEY, "subject": "watcher", "scopes": ["alarms"]},
                    {"key": PLAIN_KEY, "subject": "plain"},
                ]
            },
        }
    )
    with serve_in_thread(ticks, settings, edges=["graphql"]) as node:
        yield node


async def test_a_stream_method_is_a_subscription(ticks_node: RunningNode) -> None:
    """@service.stream: one next per item, through the selection, then complete."""
    async with Client(transport=transport(ticks_node)) as session:
        async with asyncio.timeout(TIMEOUT):
            results = [
                r
                async for r in session.subscribe(gql("subscription { countTo(n: 4) { n label } }"))
            ]
    assert results == [{"countTo": {"n": i, "label": f"tick {i}"}} for i in range(1, 5)]


async def test_stopping_a_subscription_closes_the_handlers_stream(ticks_node: RunningNode) -> None:
    """The client stops (complete) or disconnects: the handler's generator is closed."""
    before = len(CLOSED_STREAMS)
    async with Client(transport=transport(ticks_node)) as session:
        events = session.subscribe(gql("subscription { forever { n } }"))
        async with asyncio.timeout(TIMEOUT):
            assert [(await anext(events))["forever"]["n"] for _ in range(3)] == [1, 2, 3]
        await events.aclose()  # gql sends complete
        async with asyncio.timeout(TIMEOUT):
            while len(CLOSED_STREAMS) == before:
                await asyncio.sleep(0.02)
        assert await session.execute(gql("mutation { ping }")) == {"ping": 1}
    # The same when the socket just goes away mid-stream.
    async with websockets.connect(ws_url(ticks_node), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type":"connection_init"}')
        assert orjson.loads(await ws.recv()) == {"type": "connection_ack"}
        await ws.send(
            '{"id":"1","type":"subscribe","payload":{"query":"subscription { forever { n } }"}}'
        )
        assert orjson.loads(await ws.recv())["type"] == "next"
    async with asyncio.timeout(TIMEOUT):
        while len(CLOSED_STREAMS) < before + 2:
            await asyncio.sleep(0.02)


async def test_events_need_the_scope_of_their_type(ticks_node: RunningNode) -> None:
    """An event type with scopes: anonymous and scope-less keys are refused, the right key reads."""
    query = gql("subscription { alarmsRaised { data { level text } } }")
    async with Client(transport=transport(ticks_node)) as session:
        anonymous = await refused(session, query)
    assert anonymous[0]["extensions"]["code"] == "UNAUTHENTICATED"
    async with Client(transport=transport(ticks_node, {"X-API-Key": PLAIN_KEY})) as session:
        plain = await refused(session, query)
    assert plain[0]["extensions"]["code"] == "FORBIDDEN"
    async with Client(transport=transport(ticks_node, {"X-API-Key": ALARM_KEY})) as session:
        events = session.subscribe(
            gql('subscription { alarmsRaised(after: "earliest") { data { level text } } }')
        )
        await asyncio.get_running_loop().run_in_executor(None, _publish_alarm, ticks_node)
        async with asyncio.timeout(TIMEOUT):
            got = await anext(events)
        await events.aclose()
    assert got == {"alarmsRaised": {"data": {"level": 3, "text": "disk full"}}}
    await no_subscription_left(ticks_node)


def _publish_alarm(node: RunningNode) -> None:
    node.call(AlarmRaised.publish(Alarm(level=3, text="disk full")))


async def test_credentials_may_come_with_the_upgrade_request(ticks_node: RunningNode) -> None:
    """An API key header on the handshake, an empty connection_init: the key's scopes apply."""
    async with websockets.connect(
        ws_url(ticks_node),
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"X-API-Key": ALARM_KEY},
    ) as ws:
        await ws.send('{"type":"connection_init"}')
        assert orjson.loads(await ws.recv()) == {"type": "connection_ack"}
        query = "subscription { alarmsRaised { data { text } } }"
        hub = ticks_node.node.runtime.hub
        before = hub.subscriber_count
        await ws.send(
            orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}).decode()
        )
        async with asyncio.timeout(TIMEOUT):
            while hub.subscriber_count <= before:
                await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(None, _publish_alarm, ticks_node)
        async with asyncio.timeout(TIMEOUT):
            message = orjson.loads(await ws.recv())
    assert message == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"alarmsRaised": {"data": {"text": "disk full"}}}},
    }


async def test_unknown_credentials_close_the_socket_4403(ticks_node: RunningNode) -> None:
    """A connection_init carrying an unknown key: closed with 4403 Forbidden, no ack."""
    async with websockets.connect(ws_url(ticks_node), subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send('{"type":"connection_init","payload":{"X-API-Key":"nope"}}')
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(TIMEOUT):
                while True:
                    await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4403, "Forbidden")


def _sockets(node: RunningNode) -> int:
    (edge,) = [e for e in node.node.edges if e.name == "graphql"]
    return len(edge.socket.connections)  # type: ignore[attr-defined]


async def test_a_slow_subscriber_is_cut_off_while_others_get_everything(
    ticks_node: RunningNode,
) -> None:
    """A client that stops reading is closed (1013); a reading one gets every event, in order."""
    count, text = 3000, "x" * 1500  # ~4.5 MB: more than the socket buffers hold
    loop = asyncio.get_running_loop()
    hub = ticks_node.node.runtime.hub
    subscribed = hub.subscriber_count
    slow = await loop.run_in_executor(None, raw_graphql_socket, ticks_node.host, ticks_node.port)
    try:
        slow.sendall(masked_text(b'{"type":"connection_init"}'))
        slow.sendall(
            masked_text(
                b'{"id":"s","type":"subscribe","payload":{"query":"subscription'
                b' { chatterSaid { data { text } } }"}}'
            )
        )
        query = gql("subscription { chatterSaid { data { level text } } }")
        async with Client(transport=transport(ticks_node)) as session:
            events = session.subscribe(query)
            first = asyncio.ensure_future(anext(events))
            async with asyncio.timeout(TIMEOUT):
                while hub.subscriber_count < subscribed + 2:
                    await asyncio.sleep(0.02)
            before = _sockets(ticks_node)

            def flood() -> None:
                async def publish() -> None:
                    for i in range(count):
                        await Chatter.publish(Alarm(level=i, text=text))

                ticks_node.call(publish(), timeout=60)

            flooding = loop.run_in_executor(None, flood)
            async with asyncio.timeout(60):
                levels = [(await first)["chatterSaid"]["data"]["level"]]
                while len(levels) < count:
                    levels.append((await anext(events))["chatterSaid"]["data"]["level"])
                await flooding
            await events.aclose()
            assert levels == list(range(count))
            async with asyncio.timeout(TIMEOUT):
                while _sockets(ticks_node) > before - 1:
                    await asyncio.sleep(0.05)
    finally:
        slow.close()
    await no_subscription_left(ticks_node)
