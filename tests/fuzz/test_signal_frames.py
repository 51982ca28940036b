"""The WebRTC signaling frame decoder, fuzzed: it decodes or refuses, never anything else.

Whatever the message — noise, JSON of any shape, frames near the real ones —
:func:`polyport.edges.webrtc.frames.decode` returns a :class:`Signal` whose
members are what the relay needs, or raises :class:`FrameRefused` with a
service error (never INTERNAL) and the frame's id only when it was a valid id.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.fuzz.harness import FUZZ

pytest.importorskip("aiortc")

from polyport.edges.webrtc.frames import NAME, FrameRefused, Signal, decode

MAX = 4096
SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats()
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from(["r1", "alice", "peer-1", "", "a b", "x" * 65, "é"]) | JSON
FRAMES = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["join", "leave", "offer", "answer", "candidate", "ping", "x"])
        | JSON,
    },
    optional={
        "id": st.integers() | st.text(max_size=70) | JSON,
        "room": NAMES,
        "peer": NAMES,
        "to": NAMES,
        "sdp": st.sampled_from(["v=0\r\n", "v=1", ""]) | st.text(max_size=50) | JSON,
        "candidate": st.fixed_dictionaries(
            {},
            optional={
                "candidate": st.text(max_size=40) | JSON,
                "sdpMid": JSON,
                "sdpMLineIndex": JSON,
                "usernameFragment": JSON,
                "other": JSON,
            },
        )
        | JSON,
    },
)
MESSAGES = (
    FRAMES.map(json.dumps)
    | st.binary(max_size=200)
    | st.text(max_size=200)
    | JSON.map(json.dumps)
    | st.just("x" * (MAX + 1))
)


def check(signal: Signal) -> None:
    assert isinstance(signal.id, str | int) and not isinstance(signal.id, bool)
    if signal.type == "ping":
        return
    assert NAME.fullmatch(signal.room)
    if signal.type in ("offer", "answer"):
        assert signal.sdp.startswith("v=0") and NAME.fullmatch(signal.to)
    if signal.type == "candidate":
        assert NAME.fullmatch(signal.to)
        if signal.candidate is not None:
            assert isinstance(signal.candidate["candidate"], str)
            assert set(signal.candidate) <= {
                "candidate",
                "sdpMid",
                "sdpMLineIndex",
                "usernameFragment",
            }
    if signal.type == "join" and signal.peer is not None:
        assert NAME.fullmatch(signal.peer)


@FUZZ
@given(MESSAGES)
def test_the_decoder_decodes_or_refuses(message: str | bytes) -> None:
    """Every message gives a checked Signal or a FrameRefused with a client-fault error."""
    refused = None
    try:
        signal = decode(message, MAX)
    except FrameRefused as exc:
        refused = exc
    if refused is None:
        check(signal)
        return
    assert refused.error.code in ("INVALID_ARGUMENT", "PAYLOAD_TOO_LARGE")
    frame_id = refused.frame_id
    assert frame_id is None or (isinstance(frame_id, str | int) and frame_id is not True)
    orjson.dumps({"id": frame_id, "message": refused.error.message})  # it can be sent
