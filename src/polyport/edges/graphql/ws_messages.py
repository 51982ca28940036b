"""The messages of ``graphql-transport-ws``: client messages checked, server messages encoded.

Client messages are checked as the ``graphql-ws`` library's
``validateMessage`` checks them; anything else is a :class:`ProtocolViolation`
(4400 with the reason). Server messages are written as WebSocket text frames
built here, and a ``next`` whose result object many subscribers share is
encoded once (:class:`EncodedResults`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Final

import orjson

from polyport.edges.graphql.runner import ExecutionResult

SUBPROTOCOL: Final = "graphql-transport-ws"

# Close codes of the protocol (graphql-ws's ``CloseCode``).
CLOSE_BAD_REQUEST: Final = 4400
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403
CLOSE_SUBPROTOCOL: Final = 4406
CLOSE_INIT_TIMEOUT: Final = 4408
CLOSE_SUBSCRIBER_EXISTS: Final = 4409
CLOSE_TOO_MANY_INITS: Final = 4429
CLOSE_INTERNAL: Final = 4500

#: A close reason is at most 123 bytes of UTF-8 (RFC 6455, 5.5).
MAX_REASON = 123

_SERVER_ONLY = frozenset({"connection_ack", "next", "error"})


class ProtocolViolation(Exception):
    """The client broke the protocol: close the socket with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame."""
    encoded = text.encode()
    if len(encoded) <= MAX_REASON:
        return text
    return encoded[: MAX_REASON - 3].decode(errors="ignore") + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_message(text: str | bytes) -> dict[str, Any]:
    """A client message, checked as graphql-ws's ``validateMessage`` checks it.

    Raises:
        ProtocolViolation: 4400, with the reason.
    """
    if isinstance(text, bytes):
        raise ProtocolViolation(CLOSE_BAD_REQUEST, "Messages are JSON text, not binary")
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolViolation(CLOSE_BAD_REQUEST, "Invalid message received: not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolViolation(
            CLOSE_BAD_REQUEST, f"Message is expected to be an object, but got {_kind(message)}"
        )
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise ProtocolViolation(CLOSE_BAD_REQUEST, "Message is missing the 'type' property")
    if kind in ("connection_init", "ping", "pong"):
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise ProtocolViolation(
                CLOSE_BAD_REQUEST, f"\"{kind}\" message expects the 'payload' to be an object"
            )
        return message
    if kind in ("subscribe", "complete"):
        frame_id = message.get("id")
        if not isinstance(frame_id, str) or not frame_id:
            raise ProtocolViolation(
                CLOSE_BAD_REQUEST, f"\"{kind}\" message requires a non-empty string 'id'"
            )
        if kind == "complete":
            return message
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise ProtocolViolation(
                CLOSE_BAD_REQUEST, "\"subscribe\" message expects the 'payload' to be an object"
            )
        if not isinstance(payload.get("query"), str):
            raise ProtocolViolation(
                CLOSE_BAD_REQUEST, "\"subscribe\" message payload expects a string 'query'"
            )
        for name in ("variables", "extensions"):
            value = payload.get(name)
            if value is not None and not isinstance(value, dict):
                raise ProtocolViolation(
                    CLOSE_BAD_REQUEST,
                    f"\"subscribe\" message payload expects '{name}' to be an object or null",
                )
        operation_name = payload.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise ProtocolViolation(
                CLOSE_BAD_REQUEST,
                "\"subscribe\" message payload expects 'operationName' to be a string or null",
            )
        return message
    if kind in _SERVER_ONLY:
        raise ProtocolViolation(CLOSE_BAD_REQUEST, f"Unexpected message of type {kind} received")
    raise ProtocolViolation(
        CLOSE_BAD_REQUEST, close_reason(f"Invalid message 'type' property {kind!r}")
    )


def frame_head(size: int) -> bytes:
    """The header of an unmasked, final text frame (server to client, no extension)."""
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


def next_prefix(operation_id: str) -> bytes:
    """``{"id":<id>,"type":"next","payload":`` — the same for every result of an operation."""
    return b'{"id":' + orjson.dumps(operation_id) + b',"type":"next","payload":'


def next_frame(prefix: bytes, payload: bytes) -> bytes:
    """The frame of one ``next`` message: the operation's prefix, the result's JSON, ``}``."""
    return b"".join((frame_head(len(prefix) + len(payload) + 1), prefix, payload, b"}"))


class EncodedResults:
    """``next`` frames encoded once, however many subscriptions send the same result.

    A runner that hands the same result object to every subscriber of an event
    (the same document, the same selection) has it serialised once here, and
    the whole frame built once per operation id (clients mostly number their
    operations alike, so most subscribers get the very same bytes). An event
    wakes all its subscribers in the same loop iteration, so the cache lives
    for one iteration: it is keyed by identity, holds its results alive
    meanwhile (an id is never mistaken for a newer object's), and is emptied by
    the next iteration — or at ``size`` entries.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._entries: dict[int, tuple[ExecutionResult, bytes, dict[bytes, bytes]]] = {}
        self._bursts: dict[
            int, tuple[list[ExecutionResult], dict[tuple[bytes, int], list[bytes]]]
        ] = {}

    def next_frame(self, prefix: bytes, result: ExecutionResult) -> bytes:
        """The frame of ``next`` for the operation whose :func:`next_prefix` is ``prefix``."""
        entries = self._entries
        entry = entries.get(id(result))
        if entry is None or entry[0] is not result:
            if not entries:
                asyncio.get_running_loop().call_soon(entries.clear)
            elif len(entries) >= self.size:
                entries.clear()
            entry = entries[id(result)] = (result, orjson.dumps(result), {})
        frames = entry[2]
        frame = frames.get(prefix)
        if frame is None:
            frame = frames[prefix] = next_frame(prefix, entry[1])
        return frame

    def burst(self, prefix: bytes, results: list[ExecutionResult], chunk: int) -> list[bytes]:
        """The ``next`` frames of a burst, joined into pieces of about ``chunk`` bytes.

        Each piece is whole frames, at least ``chunk`` bytes but the last, so
        the transport can write a piece and pace the client in between. A burst
        the runner hands to many subscribers as the very same list is joined
        once per operation id; the pieces live for the loop iteration, as the
        frames do.
        """
        bursts = self._bursts
        entry = bursts.get(id(results))
        if entry is None or entry[0] is not results:
            if not bursts:
                asyncio.get_running_loop().call_soon(bursts.clear)
            elif len(bursts) >= self.size:
                bursts.clear()
            entry = bursts[id(results)] = (results, {})
        pieces = entry[1].get((prefix, chunk))
        if pieces is None:
            pieces = entry[1][prefix, chunk] = _pieces(
                [self.next_frame(prefix, result) for result in results], chunk
            )
        return pieces


def _pieces(frames: list[bytes], chunk: int) -> list[bytes]:
    pieces: list[bytes] = []
    start, size = 0, 0
    for end, frame in enumerate(frames, 1):
        size += len(frame)
        if size >= chunk:
            pieces.append(b"".join(frames[start:end]))
            start, size = end, 0
    if start < len(frames):
        pieces.append(b"".join(frames[start:]))
    return pieces


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EncodedResults] = (
    weakref.WeakKeyDictionary()
)


def loop_results() -> EncodedResults:
    """The cache every connection served by this event loop (one node) shares."""
    loop = asyncio.get_running_loop()
    encoded = _PER_LOOP.get(loop)
    if encoded is None:
        encoded = _PER_LOOP[loop] = EncodedResults()
    return encoded


__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_FORBIDDEN",
    "CLOSE_INIT_TIMEOUT",
    "CLOSE_INTERNAL",
    "CLOSE_SUBPROTOCOL",
    "CLOSE_SUBSCRIBER_EXISTS",
    "CLOSE_TOO_MANY_INITS",
    "CLOSE_UNAUTHORIZED",
    "SUBPROTOCOL",
    "EncodedResults",
    "ProtocolViolation",
    "close_reason",
    "frame_head",
    "loop_results",
    "next_frame",
    "next_prefix",
    "parse_message",
]
