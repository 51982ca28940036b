"""The server-neutral WebSocket layer: frames encoded once and read back; endpoint subprotocols."""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from polyport.http.request import Request
from polyport.http.websocket import (
    SUBPROTOCOL,
    WebSocket,
    endpoint_subprotocols,
    frame_messages,
    join_frames,
    text_frame,
)

# Each length field's edges (RFC 6455, 5.2): 7 bits, 16 bits, 64 bits.
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def client_reads(data: bytes) -> list[Frame]:
    """What a real client (the ``websockets`` library's own parser) reads from ``data``."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN, max_size=None)
    client.receive_data(data)
    frames = [event for event in client.events_received() if isinstance(event, Frame)]
    assert client.state is State.OPEN, "the client failed the connection"
    return frames


@pytest.mark.parametrize("size", SIZES)
def test_a_text_frame_is_read_by_a_client_as_its_payload(size: int) -> None:
    """One encoded frame is one final, unmasked text message carrying the payload as given."""
    payload = b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'
    [frame] = client_reads(text_frame(payload))
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.TEXT, True, payload)


def test_joined_frames_are_read_in_order_and_given_back_to_a_message_sender() -> None:
    """join_frames makes one write of several messages; frame_messages reads them back."""
    payloads = [("é" * (size // 2)).encode() + b"." for size in SIZES]
    joined = join_frames([text_frame(p) for p in payloads])
    assert [bytes(f.data) for f in client_reads(joined)] == payloads
    assert frame_messages(joined) == payloads
    assert frame_messages(join_frames([])) == []


def test_an_endpoint_names_its_subprotocols_or_gets_the_session_protocol() -> None:
    """Without a ``subprotocols`` attribute an endpoint speaks polyport.v1 only."""

    async def plain(ws: WebSocket, request: Request) -> None:
        return None

    class Graph:
        subprotocols = ("graphql-transport-ws",)

        async def __call__(self, ws: WebSocket, request: Request) -> None:
            return None

    assert list(endpoint_subprotocols(plain)) == [SUBPROTOCOL] == ["polyport.v1"]
    assert list(endpoint_subprotocols(Graph())) == ["graphql-transport-ws"]
