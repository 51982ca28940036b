"""A burst of events shared by the subscribers of one document: projected once, framed once."""

from __future__ import annotations

from typing import Any, cast

import orjson

from polyport.core.events import Event
from polyport.edges.graphql.plan import FieldPlan
from polyport.edges.graphql.subscriptions import Subscriptions
from polyport.edges.graphql.ws_messages import EncodedResults, next_frame, next_prefix


class CountingRunner:
    """The part of the runner ``Subscriptions.result`` uses; it counts projections."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.projected = 0
        self.failing = failing

    async def result_of(self, value: Any, field: Any, request: Any) -> dict[str, Any]:
        self.projected += 1
        result: dict[str, Any] = {"data": {"tick": value["offset"]}}
        if value["offset"] in self.failing:
            result["errors"] = [{"message": "no", "extensions": {"code": "INTERNAL"}}]
        return result


def _events(count: int) -> list[Event]:
    return [Event("bench/a", i, "e", i + 1, "bench.tick", 0.0, b"{}") for i in range(count)]


def _field(sync: bool = True) -> FieldPlan:
    return FieldPlan(key="tick", name="tick", kind=0, node=cast(Any, None), sync=sync)


def _subscriptions(runner: CountingRunner) -> Subscriptions:
    return Subscriptions(cast(Any, runner))


def _frames(pieces: list[bytes]) -> list[bytes]:
    """Split joined server frames (unmasked, short or 16-bit lengths) back into frames."""
    frames = []
    for piece in pieces:
        at = 0
        while at < len(piece):
            size, head = piece[at + 1], 2
            if size == 126:
                size, head = int.from_bytes(piece[at + 2 : at + 4], "big"), 4
            frames.append(piece[at : at + head + size])
            at += head + size
        assert at == len(piece)  # a piece holds whole frames only
    return frames


async def test_subscribers_reading_the_same_burst_get_one_list_projected_once() -> None:
    """The second subscriber of the same burst gets the very list the first built."""
    runner = CountingRunner()
    subscriptions = _subscriptions(runner)
    field, events = _field(), _events(5)
    first = await subscriptions.results(events, field, cast(Any, None))
    second = await subscriptions.results(list(events), field, cast(Any, None))
    assert second is first
    assert [r["data"]["tick"] for r in first] == [0, 1, 2, 3, 4]
    assert runner.projected == 5


async def test_a_different_burst_is_not_mistaken_for_a_shared_one() -> None:
    """Same first event and length but another event inside: its own results."""
    runner = CountingRunner()
    subscriptions = _subscriptions(runner)
    field, events = _field(), _events(3)
    other = [events[0], Event("bench/a", 9, "e", 10, "bench.tick", 0.0, b"{}"), events[2]]
    first = await subscriptions.results(events, field, cast(Any, None))
    second = await subscriptions.results(other, field, cast(Any, None))
    assert second is not first
    assert [r["data"]["tick"] for r in second] == [0, 9, 2]


async def test_bursts_are_not_shared_when_the_results_depend_on_the_subscriber() -> None:
    """A relation below (not sync) or an error in the burst: every subscriber projects its own."""
    runner = CountingRunner()
    subscriptions = _subscriptions(runner)
    events = _events(3)
    unsynced = _field(sync=False)
    a = await subscriptions.results(events, unsynced, cast(Any, None))
    b = await subscriptions.results(events, unsynced, cast(Any, None))
    assert a is not b and a == b
    assert runner.projected == 6

    failing = CountingRunner(failing=frozenset({1}))
    subscriptions = _subscriptions(failing)
    field = _field()
    a = await subscriptions.results(events, field, cast(Any, None))
    b = await subscriptions.results(events, field, cast(Any, None))
    assert a is not b and a == b
    assert "errors" in b[1]


async def test_burst_pieces_are_whole_frames_in_order_of_about_the_chunk_size() -> None:
    """Joined pieces hold every frame whole and in order; all but the last reach the chunk."""
    encoded = EncodedResults()
    results = [{"data": {"tick": i, "pad": "x" * (i * 7)}} for i in range(40)]
    prefix = next_prefix("op")
    pieces = encoded.burst(prefix, results, 500)
    assert len(pieces) > 1
    assert all(len(piece) >= 500 for piece in pieces[:-1])
    expected = [next_frame(prefix, orjson.dumps(r)) for r in results]
    assert _frames(pieces) == expected


async def test_a_burst_handed_to_many_is_joined_once_per_operation_id() -> None:
    """The same results list and id: the same pieces; another id: its own frames."""
    encoded = EncodedResults()
    results = [{"data": {"tick": i}} for i in range(10)]
    one, two = next_prefix("1"), next_prefix("2")
    pieces = encoded.burst(one, results, 64)
    assert encoded.burst(one, results, 64) is pieces
    others = encoded.burst(two, results, 64)
    assert _frames(others) == [next_frame(two, orjson.dumps(r)) for r in results]
    # An equal list that is not the shared one is encoded on its own, to the same bytes.
    copy = [dict(r) for r in results]
    again = encoded.burst(one, copy, 64)
    assert again is not pieces and again == pieces
