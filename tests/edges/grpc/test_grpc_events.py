"""The event log over gRPC: Subscribe streams what REST published, resumes, reports recovery."""

from __future__ import annotations

import time
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from polyport.testing import RunningNode

EVENTS = "polyport.events.v1.Events"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def events(channel: grpc.Channel, usersvc: Any) -> Any:
    return usersvc.Reflected(channel, EVENTS)


def publish(node: RunningNode, topic: str, text: str, count: int = 1) -> None:
    response = httpx.post(
        f"{node.url}/v1/post_note", json={"topic": topic, "text": text, "count": count}
    )
    assert response.status_code == 200, response.text


def collect(stream: Any, count: int) -> list[Any]:
    """Events from a stream until ``count`` have arrived (the call's deadline bounds it)."""
    got: list[Any] = []
    while len(got) < count:
        got.extend(next(stream).events)
    return got


def test_subscribe_streams_what_rest_published(node: RunningNode, events: Any) -> None:
    """The first batch says the stream is live; events published over REST follow."""
    stream = events("Subscribe", {"channels": ["notes/+"]}, timeout=20)
    opening = next(stream)
    assert not opening.events and "@" in opening.cursor
    before = time.time()
    for i in range(3):
        publish(node, "a", f"n{i}")
    got = collect(stream, 3)
    stream.cancel()
    assert [orjson.loads(e.data) for e in got] == [
        {"topic": "a", "text": f"n{i}"} for i in range(3)
    ]
    first = got[0]
    assert first.id == f"{first.epoch}:{first.offset}"
    assert (first.channel, first.type) == ("notes/a", "notes.posted")
    assert [e.offset for e in got] == [first.offset, first.offset + 1, first.offset + 2]
    assert before - 1 < first.time.seconds + first.time.nanos / 1e9 < time.time() + 1


def test_resume_after_an_event_id(node: RunningNode, events: Any) -> None:
    """`after` resumes right after the given event: nothing missed, nothing repeated."""
    publish(node, "resume", "r", count=4)
    stream = events("Subscribe", {"channels": ["notes/resume"], "after": "earliest"}, timeout=20)
    every = collect(stream, 4)
    stream.cancel()
    again = events("Subscribe", {"channels": ["notes/resume"], "after": every[1].id}, timeout=20)
    rest = collect(again, 2)
    again.cancel()
    assert [e.id for e in rest] == [e.id for e in every[2:]]


def test_events_are_batched(node: RunningNode, events: Any) -> None:
    """A burst arrives in few messages, none over max_batch, in log order."""
    stream = events("Subscribe", {"channels": ["notes/burst"], "max_batch": 10}, timeout=20)
    next(stream)
    publish(node, "burst", "b", count=45)
    batches: list[Any] = []
    while sum(len(b.events) for b in batches) < 45:
        batches.append(next(stream))
    stream.cancel()
    sizes = [len(b.events) for b in batches]
    assert max(sizes) <= 10 and len(batches) < 45
    texts = [orjson.loads(e.data)["text"] for b in batches for e in b.events]
    assert texts == [f"b-{i}" for i in range(45)]
    assert all("@" in b.cursor for b in batches)


def test_recovery_failure_is_out_of_range(events: Any) -> None:
    """A cursor history no longer holds ends the call with OUT_OF_RANGE and its details."""
    stream = events("Subscribe", {"channels": ["notes/+"], "after": "aaaaaaaaaa:1"}, timeout=20)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "RECOVERY_FAILED" and "@" in info.metadata["latest"]
    # Resuming from `latest` works: the client chose the gap.
    resumed = events("Subscribe", {"channels": ["notes/+"], "after": info.metadata["latest"]})
    assert not next(resumed).events
    resumed.cancel()


@pytest.mark.parametrize(
    "request_fields",
    [
        {"channels": []},
        {"channels": ["a/#/b"]},
        {"channels": ["notes/+"], "after": "not a cursor"},
        {"channels": ["notes/+"], "max_batch": 100_000},
    ],
)
def test_bad_subscriptions_are_invalid(events: Any, request_fields: dict[str, Any]) -> None:
    """Bad channels, cursors and batch sizes are INVALID_ARGUMENT."""
    stream = events("Subscribe", request_fields, timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_garbage_subscribe_request(channel: grpc.Channel) -> None:
    """Bytes that are no SubscribeRequest get INVALID_ARGUMENT."""
    stream = channel.unary_stream(f"/{EVENTS}/Subscribe")(b"\xff\xff", timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
