"""gRPC messages and resume ids, fuzzed.

Any bytes as the request message of any gRPC method (unary and the event
stream) get a status that says what was wrong — never INTERNAL or UNKNOWN.
Any text as a resume id, on every edge that takes one (SSE's Last-Event-ID
and ``?after=``, polling's ``after``, the WebSocket ``subscribe`` frame, the
gRPC stream's cursor), gets the edge's client error or recovery-failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import (
    FUZZ,
    FuzzedNode,
    client_frame,
    exchange,
    read_for_a_moment,
    server_frames,
    statuses,
    websocket,
)

METHODS = [
    "/polyport.shop.v1.ShopService/" + name
    for name in (
        "GetUser",
        "ListUsers",
        "CreateUser",
        "UpdateUser",
        "DeleteUser",
        "CreateOrder",
        "UpdateOrder",
        "ListOrders",
        "Multiply",
        "SalesReport",
        "AdjustStock",
    )
]
STREAM = "/polyport.events.v1.Events/Subscribe"
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Protobuf-shaped bytes (fields of every wire type, some lying about lengths) or noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        number = draw(st.integers(1, 3) | st.integers(1, 20) | st.integers(0, 2**29))
        wire = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
        out += varint(number << 3 | wire)
        if wire == 0:
            out += varint(draw(st.integers(0, 2**64 - 1)))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 2:
            payload = draw(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
            out += varint(draw(st.sampled_from([len(payload), len(payload) + 5, 2**31]))) + payload
        elif wire == 5:
            out += draw(st.binary(min_size=4, max_size=4))
    return out


def status(call: Callable[[], object]) -> grpc.StatusCode:
    """The status a call ended with (reading a stream to its end)."""
    try:
        result = call()
        if isinstance(result, grpc.Call):
            for _ in result:  # type: ignore[attr-defined]
                pass
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(fuzzed: FuzzedNode) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzzed.grpc_port}") as open_channel:
        yield open_channel


@given(method=st.sampled_from(METHODS), message=messages())
@FUZZ
def test_grpc_messages_get_a_status_that_says_what_was_wrong(
    fuzzed: FuzzedNode, channel: grpc.Channel, method: str, message: bytes
) -> None:
    """Unary calls with any request bytes: OK or a precise status, never INTERNAL or UNKNOWN."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    assert status(lambda: call(message, timeout=5)) not in BAD
    fuzzed.check()


@given(message=messages())
@FUZZ
def test_the_grpc_event_stream_takes_any_request_bytes(
    fuzzed: FuzzedNode, channel: grpc.Channel, message: bytes
) -> None:
    """The event stream's request, fuzzed: it starts, or ends with a precise status."""
    call = channel.unary_stream(STREAM, request_serializer=None, response_deserializer=None)
    assert status(lambda: call(message, timeout=0.5)) not in BAD
    fuzzed.check()


IDS = (
    st.text(max_size=40)
    | st.sampled_from(["earliest", "now", "", "0", "-1", "x@0", "abcdefghij:1", "a:b:c"])
    | st.builds(
        lambda e, n, sep: f"{e}{sep}{n}",
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
        st.integers(min_value=-5, max_value=2**70),
        st.sampled_from([":", "@"]),
    )
)
CHANNELS = st.sampled_from(["orders/#", "+", "#", "orders/created", "a//b", "", "x" * 300]) | (
    st.text(max_size=20)
)


@given(resume=IDS, channel_name=CHANNELS, where=st.sampled_from(["header", "query", "poll"]))
@FUZZ
def test_resume_ids_over_http_get_client_errors(
    fuzzed: FuzzedNode, resume: str, channel_name: str, where: str
) -> None:
    """SSE's Last-Event-ID and ?after=, and polling's after: never a 500."""
    if where == "poll":
        answer = httpx.get(
            f"{fuzzed.url}/v1/events",
            params={"channel": channel_name, "after": resume},
            timeout=5,
        )
        assert answer.status_code < 500, answer.text
    else:
        query = httpx.QueryParams({"channel": channel_name})
        if where == "query":
            query = query.set("after", resume)
        header = f"last-event-id: {resume}\r\n".encode("utf-8", "surrogatepass")
        request = (
            f"GET /v1/events/stream?{query} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode()
            + (header if where == "header" else b"")
            + b"\r\n"
        )
        assert 500 not in statuses(exchange(fuzzed.host, fuzzed.port, [request]))
    fuzzed.check()


@given(resume=IDS | st.integers() | st.none(), channel_name=CHANNELS)
@FUZZ
def test_resume_ids_over_websocket_and_grpc_get_client_errors(
    fuzzed: FuzzedNode, channel: grpc.Channel, resume: object, channel_name: str
) -> None:
    """The WebSocket subscribe frame's and the gRPC stream's cursors: never an internal error."""
    sock, first = websocket(fuzzed.host, fuzzed.port, "/ws", "polyport.v1")
    with sock:
        frame = {"type": "subscribe", "id": 1, "channels": [channel_name], "after": resume}
        sock.sendall(client_frame(1, json.dumps(frame).encode("utf-8", "surrogatepass")))
        answer = first + read_for_a_moment(sock)
    for opcode, payload in server_frames(answer):
        assert opcode != 8 or payload[:2] != (1011).to_bytes(2, "big")
        assert b'"INTERNAL"' not in payload, payload
    if isinstance(resume, str):
        text = resume.encode("utf-8", "surrogatepass")
        request = (
            b"\x0a"
            + varint(len(channel_name.encode()))
            + channel_name.encode()
            + b"\x12"
            + varint(len(text))
            + text
        )
        call = channel.unary_stream(STREAM, request_serializer=None, response_deserializer=None)
        assert status(lambda: call(request, timeout=0.3)) not in BAD
    fuzzed.check()
