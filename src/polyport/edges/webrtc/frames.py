"""The signaling frames of ``/webrtc/signal``: decoded and checked here, nowhere else.

Every client message is one JSON object with an ``id`` (a string of at most
64 characters, or an integer) and a ``type``:

    join       room, optional peer (the name to be known by)   → joined
    leave      room                                             → left
    offer      room, to, sdp                                    → sent
    answer     room, to, sdp                                    → sent
    candidate  room, to, candidate (an RTCIceCandidateInit, or null: end of candidates) → sent
    ping                                                        → pong

:func:`decode` turns a message into a :class:`Signal` or raises
:class:`FrameRefused`, which carries the frame's ``id`` when it could be read
and the error to answer with. It never raises anything else, whatever the
input (``tests/fuzz/test_signal_frames.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from polyport.core.errors import InvalidArgument, PayloadTooLarge, ServiceError

SignalType = Literal["join", "leave", "offer", "answer", "candidate", "ping"]
TYPES: Final = ("join", "leave", "offer", "answer", "candidate", "ping")
#: Room and peer names: what fits in a URL segment and a log line unescaped.
NAME: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_ID_MAX = 64
#: An RTCIceCandidateInit's members; nothing else is relayed.
_CANDIDATE_FIELDS: Final = {
    "candidate": str,
    "sdpMid": str,
    "sdpMLineIndex": int,
    "usernameFragment": str,
}
_CANDIDATE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Signal:
    """One client frame, checked."""

    id: str | int
    type: SignalType
    room: str = ""
    #: join: the name asked for (None: the server picks one).
    peer: str | None = None
    #: offer, answer, candidate: the peer of the room it is for.
    to: str = ""
    sdp: str = ""
    #: candidate: the RTCIceCandidateInit, or None for the end of candidates.
    candidate: dict[str, Any] | None = None


class FrameRefused(Exception):
    """A frame the server cannot act on: answer ``error`` with ``frame_id``."""

    def __init__(self, frame_id: str | int | None, error: ServiceError) -> None:
        super().__init__(error.message)
        self.frame_id = frame_id
        self.error = error


def decode(message: str | bytes, max_message: int) -> Signal:
    """The frame in ``message``, or :class:`FrameRefused` saying what is wrong with it."""
    size = len(message.encode() if isinstance(message, str) else message)
    if size > max_message:
        raise FrameRefused(
            None, PayloadTooLarge(f"a signaling message is at most {max_message} bytes, not {size}")
        )
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise FrameRefused(
            None, InvalidArgument("the frame is not JSON", unparseable=True)
        ) from None
    if not isinstance(frame, dict):
        raise FrameRefused(None, InvalidArgument("a frame is a JSON object"))
    frame_id = frame.get("id")
    if not (
        (isinstance(frame_id, str) and 0 < len(frame_id) <= _ID_MAX)
        or (isinstance(frame_id, int) and not isinstance(frame_id, bool))
    ):
        raise FrameRefused(
            None,
            InvalidArgument(
                "every frame needs an 'id': a string (at most 64 characters) or an integer"
            ),
        )
    try:
        return _signal(frame_id, frame)
    except InvalidArgument as exc:
        raise FrameRefused(frame_id, exc) from None


def _name(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidArgument(
            f"'{key}' is a name of 1 to 64 letters, digits, '.', '_', '~' or '-'",
            details=[{"field": key, "message": "not a name"}],
        )
    return value


def _signal(frame_id: str | int, frame: dict[str, Any]) -> Signal:
    kind = frame.get("type")
    if kind not in TYPES:
        raise InvalidArgument(f"unknown frame type {str(kind)[:40]!r}; known: {', '.join(TYPES)}")
    if kind == "ping":
        return Signal(frame_id, "ping")
    room = _name(frame, "room")
    if kind == "join":
        peer = _name(frame, "peer") if frame.get("peer") is not None else None
        return Signal(frame_id, "join", room, peer=peer)
    if kind == "leave":
        return Signal(frame_id, "leave", room)
    to = _name(frame, "to")
    if kind == "candidate":
        return Signal(frame_id, "candidate", room, to=to, candidate=_candidate(frame))
    sdp = frame.get("sdp")
    # Not parsed here (the peers do that), but it must look like a session description:
    # RFC 8866 makes "v=0" its first line.
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise InvalidArgument(
            "'sdp' is a session description (RFC 8866), beginning with 'v=0'",
            details=[{"field": "sdp", "message": "not a session description"}],
        )
    return Signal(frame_id, "offer" if kind == "offer" else "answer", room, to=to, sdp=sdp)


def _candidate(frame: dict[str, Any]) -> dict[str, Any] | None:
    value = frame.get("candidate")
    if value is None:
        return None  # the end of candidates
    problem = "'candidate' is an RTCIceCandidateInit object, or null"
    if not isinstance(value, dict):
        raise InvalidArgument(problem, details=[{"field": "candidate", "message": problem}])
    checked: dict[str, Any] = {}
    for key, item in value.items():
        kind = _CANDIDATE_FIELDS.get(key)
        if kind is None or item is None:
            continue  # unknown members (and nulls) are not relayed
        if not isinstance(item, kind) or isinstance(item, bool):
            message = f"candidate.{key} is a{'n integer' if kind is int else ' string'}"
            raise InvalidArgument(message, details=[{"field": f"candidate.{key}"}])
        checked[key] = item
    text = checked.get("candidate")
    if not isinstance(text, str) or len(text) > _CANDIDATE_MAX:
        message = f"candidate.candidate is a candidate line of at most {_CANDIDATE_MAX} characters"
        raise InvalidArgument(message, details=[{"field": "candidate.candidate"}])
    return checked
