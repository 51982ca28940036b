"""The runner behind both transports: subscriptions projected through the plan, resume, errors.

In-process (no socket): the ``graphql-transport-ws`` transport is a driver of
exactly these calls (see ``runner.py``); its wire is tested beside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from polyport.core.context import Principal
from polyport.core.errors import Unauthenticated
from polyport.edges.graphql.binding import GraphQLEdge

ADMIN = Principal("admin", frozenset({"*"}))

PLACE = """mutation P($user: Long!) {
  placeOrder(userId: $user, items: [{productId: 1, quantity: 1}]) { id }
}"""


async def next_of(results: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(results), 5)


async def test_event_subscriptions_project_and_resume(edge: GraphQLEdge) -> None:
    """Each event comes projected through the selection; `after` resumes with no gap."""
    runner = edge.runner
    query = """subscription S($after: String) {
      ordersPlaced(channel: "orders/7", after: $after) {
        id type data { userId items { product { name } } }
      }
    }"""
    results = await runner.subscribe({"query": query}, ADMIN)
    assert not isinstance(results, dict)
    await runner.execute({"query": PLACE, "variables": {"user": 8}}, ADMIN)  # another channel
    await runner.execute({"query": PLACE, "variables": {"user": 7}}, ADMIN)
    first = await next_of(results)
    event = first["data"]["ordersPlaced"]
    assert event["type"] == "orders.placed"
    assert event["data"] == {"userId": 7, "items": [{"product": {"name": "product 1"}}]}
    await results.aclose()  # type: ignore[attr-defined]

    await runner.execute({"query": PLACE, "variables": {"user": 7}}, ADMIN)
    resumed = await runner.subscribe({"query": query, "variables": {"after": event["id"]}}, ADMIN)
    assert not isinstance(resumed, dict)
    again = await next_of(resumed)
    assert again["data"]["ordersPlaced"]["id"] != event["id"]
    await resumed.aclose()  # type: ignore[attr-defined]


async def test_a_stream_method_is_a_subscription(edge: GraphQLEdge) -> None:
    results = await edge.runner.subscribe({"query": "subscription { countTo(n: 3) }"}, ADMIN)
    assert not isinstance(results, dict)
    assert [r async for r in results] == [{"data": {"countTo": i}} for i in (1, 2, 3)]


async def test_invalid_subscriptions_answer_errors(edge: GraphQLEdge) -> None:
    """Bad documents, cursors and channels are one result with errors, never an exception."""
    runner = edge.runner
    bad = await runner.subscribe({"query": "subscription { nope }"}, ADMIN)
    assert isinstance(bad, dict)
    assert bad["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    cursor = await runner.subscribe(
        {"query": 'subscription { ordersPlaced(after: "garbage") { id } }'}, ADMIN
    )
    assert isinstance(cursor, dict)
    assert cursor["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    channel = await runner.subscribe(
        {"query": 'subscription { ordersPlaced(channel: "users/1") { id } }'}, ADMIN
    )
    assert isinstance(channel, dict)
    assert channel["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_queries_over_subscribe_are_one_result(edge: GraphQLEdge) -> None:
    """graphql-transport-ws may carry queries: one result, then the end."""
    results = await edge.runner.subscribe({"query": "{ user(id: 1) { name } }"}, ADMIN)
    assert not isinstance(results, dict)
    assert [r async for r in results] == [{"data": {"user": {"name": "user 1"}}}]
    answer = await edge.runner.execute({"query": "subscription { countTo(n: 1) }"}, ADMIN)
    assert answer["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_authenticate_reads_connection_params_then_headers(edge: GraphQLEdge) -> None:
    """Dev mode: anonymous is allowed; a malformed Authorization is refused."""
    principal = await edge.runner.authenticate(None, {})
    assert principal.anonymous
    with pytest.raises(Unauthenticated):
        await edge.runner.authenticate({"Authorization": "Basic x"}, {})


async def test_subscribers_of_one_document_share_each_result(edge: GraphQLEdge) -> None:
    """Fan-out: the same event through the same selection is one result object, encoded once
    by the transport; a selection with a relation below is projected per subscriber."""
    runner = edge.runner
    plain = {"query": "subscription { ordersPlaced { id data { userId } } }"}
    related = {"query": "subscription { ordersPlaced { data { items { product { id } } } } }"}
    streams = [await runner.subscribe(p, ADMIN) for p in (plain, plain, related, related)]
    waiting = []
    for stream in streams:
        assert not isinstance(stream, dict)
        waiting.append(asyncio.ensure_future(next_of(stream)))
    await asyncio.sleep(0.05)  # every subscriber is waiting, as on a live node
    await runner.execute({"query": PLACE, "variables": {"user": 3}}, ADMIN)
    results = await asyncio.gather(*waiting)
    for stream in streams:
        await stream.aclose()  # type: ignore[union-attr]
    assert results[0] is results[1]
    assert results[2] == results[3] and results[2] is not results[3]


async def test_event_results_come_a_burst_at_a_time(edge: GraphQLEdge) -> None:
    """batch() hands over every event already there (one wake-up per burst); iteration too."""
    runner = edge.runner
    results = await runner.subscribe(
        {"query": 'subscription { ordersPlaced(channel: "orders/9") { data { userId } } }'}, ADMIN
    )
    assert not isinstance(results, dict)
    for _ in range(3):
        await runner.execute({"query": PLACE, "variables": {"user": 9}}, ADMIN)
    burst = await asyncio.wait_for(results.batch(), 5)  # type: ignore[attr-defined]
    assert burst == [{"data": {"ordersPlaced": {"data": {"userId": 9}}}}] * 3
    await runner.execute({"query": PLACE, "variables": {"user": 9}}, ADMIN)
    assert (await next_of(results))["data"]["ordersPlaced"]["data"] == {"userId": 9}
    await results.aclose()  # type: ignore[attr-defined]
    assert await results.batch() == []  # type: ignore[attr-defined]
