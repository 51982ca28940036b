"""WebSocket frames, fuzzed, on every WebSocket endpoint of the node.

Frames of any opcode, length, fragmentation and reserved bits, masked or not,
carrying well-formed session frames, JSON-RPC requests, graphql-transport-ws
messages, or noise. The node answers each protocol's own errors, closes with
a protocol close code when it must — never 1011 (internal error) and never an
``INTERNAL`` error — and stays up with bounded memory.
"""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import (
    FUZZ,
    FuzzedNode,
    client_frame,
    read_for_a_moment,
    server_frames,
    websocket,
)

ENDPOINTS = {
    "session": ("/ws", "polyport.v1"),
    "json-rpc": ("/jsonrpc", None),
    "graphql": ("/graphql", "graphql-transport-ws"),
}
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats()
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
SESSION = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["auth", "subscribe", "unsubscribe", "publish", "call", "cancel", "ping", "nope"]
        ),
        "id": st.integers() | st.text(max_size=8) | st.none(),
    },
    optional={
        "channels": st.lists(st.sampled_from(["orders/#", "+", "#", "a//b", "x" * 300]), max_size=3)
        | JSON,
        "after": st.sampled_from(["now", "earliest", "zzzz:1", "x@-1", ""]) | JSON,
        "method": st.sampled_from(["multiply", "get_user", "shop.multiply", "watch", ""]) | JSON,
        "args": st.fixed_dictionaries({}, optional={"a": JSON, "b": JSON, "id": JSON}) | JSON,
        "event": st.sampled_from(["chat.message", "orders.created", "nope"]) | JSON,
        "data": JSON,
        "channel": JSON,
        "subscription": JSON,
        "call": JSON,
        "token": JSON,
    },
)
JSONRPC = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0"]) | JSON},
    optional={
        "method": st.sampled_from(["shop.multiply", "shop.get_user", "rpc.discover"]) | JSON,
        "params": JSON,
        "id": JSON,
    },
)
GRAPHQL = st.fixed_dictionaries(
    {"type": st.sampled_from(["connection_init", "subscribe", "complete", "ping", "pong", "x"])},
    optional={
        "id": JSON,
        "payload": st.fixed_dictionaries(
            {},
            optional={
                "query": st.sampled_from(
                    [
                        "subscription { ordersCreated { id } }",
                        "{ user(id: 1) { name } }",
                        "{ __typename }",
                        "subscription {",
                    ]
                )
                | JSON,
                "variables": JSON,
            },
        )
        | JSON,
    },
)
MESSAGES = {
    "session": SESSION,
    "json-rpc": JSONRPC | st.lists(JSONRPC, max_size=3),
    "graphql": GRAPHQL,
}


@st.composite
def frames(draw: st.DrawFn, endpoint: str) -> bytes:
    kind = draw(st.sampled_from(["message", "message", "noise", "control", "raw"]))
    if kind == "message":
        if endpoint == "graphql" and draw(st.booleans()):
            first = client_frame(1, b'{"type":"connection_init"}')
        else:
            first = b""
        # json, not orjson: integers past 64 bits and NaN are part of the fuzz.
        return first + client_frame(1, json.dumps(draw(MESSAGES[endpoint])).encode())
    if kind == "noise":
        return client_frame(
            draw(st.sampled_from([0, 1, 2, 3, 7, 8, 9, 10, 11, 15])),
            draw(st.binary(max_size=200)),
            fin=draw(st.booleans()),
            rsv=draw(st.integers(0, 7)),
        )
    if kind == "control":
        return client_frame(
            draw(st.sampled_from([8, 9, 10])),
            draw(st.binary(max_size=130)),
            fin=draw(st.booleans()),
        )
    return draw(st.binary(min_size=1, max_size=64))


def internal_error(endpoint: str, opcode: int, payload: bytes) -> bool:
    """Whether a server frame reports an internal error (a bug, for any input)."""
    if opcode == 8:
        return payload[:2] == (1011).to_bytes(2, "big")
    if opcode != 1:
        return False
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return True  # the server only sends JSON
    for item in message if isinstance(message, list) else [message]:
        if not isinstance(item, dict):
            continue
        error = item.get("error")
        if isinstance(error, dict) and error.get("code") in ("INTERNAL", -32603):
            return True
        for found in (item.get("payload") or []) if item.get("type") == "error" else []:
            if (found.get("extensions") or {}).get("code") == "INTERNAL":
                return True
    return False


@given(
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    data=st.data(),
)
@FUZZ
def test_frames_get_protocol_answers_never_an_internal_error(
    fuzzed: FuzzedNode, endpoint: str, data: st.DataObject
) -> None:
    """A few fuzzed frames on one connection: protocol errors only; the node stays up."""
    path, protocol = ENDPOINTS[endpoint]
    sent = data.draw(st.lists(frames(endpoint), min_size=1, max_size=4))
    sock, first = websocket(fuzzed.host, fuzzed.port, path, protocol)
    with sock:
        try:
            for frame in sent:
                sock.sendall(frame)
        except OSError:
            pass  # closed on a bad frame; read its close
        answer = first + read_for_a_moment(sock)
    bad = [f for f in server_frames(answer) if internal_error(endpoint, *f)]
    assert not bad, bad
    fuzzed.check()
