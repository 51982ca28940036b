"""Announcements on the wire: the ``(channel, seq)`` pairs one bus message carries.

A message is a JSON array in ASCII: a channel as a JSON string, then the seqs
announced for it, then the next channel and its seqs::

    ["orders/created",7,9,"chat/room 1",8]

A channel is written once per message however many seqs follow it, any
character survives (a channel name is a JSON string, escaped), and the bytes
are ASCII with no NUL, so the same message is a valid Redis or NATS payload and
a valid PostgreSQL ``NOTIFY`` text in any server encoding.

:func:`encode` splits the pairs over as few messages as fit a size bound (the
engine's: ``NOTIFY`` payloads are shorter than 8000 bytes); :func:`decode`
reads one message defensively: anything but a non-empty array of channels each
followed by at least one seq (a non-negative integer) is malformed, and the
whole message is refused — its sender is not polyport, or not this version.

:func:`pack` is :func:`encode` for a sender that learns the seqs only as it
sends: PostgreSQL's event log writes its own ``NOTIFY`` in the statement that
assigns them. It groups channels (one seq each) into messages that fit the
bound whatever seq follows each channel, and leaves the seqs to the sender.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import orjson

#: Larger messages are refused unread: no sender of this format makes them.
MAX_MESSAGE = 1 << 20
#: The largest seq a message carries (seqs are 64-bit signed in every engine).
MAX_SEQ = (1 << 63) - 1
_SEQ_DIGITS = len(str(MAX_SEQ))


def _name(channel: str) -> bytes | None:
    """``channel`` as an ASCII JSON string, or None if it is not text (a lone surrogate)."""
    try:
        if channel.isascii():
            return orjson.dumps(channel)  # escapes control characters, NUL included
        channel.encode()  # refuses lone surrogates, which json.dumps would escape
        return json.dumps(channel).encode()  # ensure_ascii: \uXXXX escapes
    except (UnicodeEncodeError, TypeError, orjson.JSONEncodeError):
        return None


def encode(pairs: Iterable[tuple[str, int]], limit: int) -> tuple[list[bytes], int]:
    """``pairs`` as messages of at most ``limit`` bytes, and how many pairs were left out.

    Pairs are grouped by channel (in the order channels first appear); a pair
    given twice is sent once. A pair is left out only when it cannot be
    written at all: a channel that is not text or that alone overflows
    ``limit``, or a seq that is not an integer in ``0..MAX_SEQ``.
    """
    groups: dict[str, dict[int, None]] = {}
    left_out = 0
    for channel, seq in pairs:
        if type(channel) is not str or type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            left_out += 1
            continue
        groups.setdefault(channel, {})[seq] = None
    messages: list[bytes] = []
    parts: list[bytes] = []
    # Bytes of the message so far when closed: "[" and each part with the "," or "]" after it.
    size = 1
    for channel, seqs in groups.items():
        name = _name(channel)
        if name is None or 1 + len(name) + 1 + _SEQ_DIGITS + 1 > limit:
            left_out += len(seqs)
            continue
        named = False
        for seq in seqs:
            number = b"%d" % seq
            cost = len(number) + 1 + (0 if named else len(name) + 1)
            if size + cost > limit:
                messages.append(b"[" + b",".join(parts) + b"]")
                parts, size, named = [], 1, False
                cost = len(number) + 1 + len(name) + 1
            if not named:
                parts.append(name)
                named = True
            parts.append(number)
            size += cost
    if parts:
        messages.append(b"[" + b",".join(parts) + b"]")
    return messages, left_out


def pack(channels: Iterable[tuple[str, int]], limit: int) -> tuple[list[tuple[str, int, int]], int]:
    """``(channel, n)`` pairs, each channel to be followed by one seq, grouped into
    messages of at most ``limit`` bytes: each as ``(name, n, message)`` — the
    channel's name as a message writes it (a JSON string, ASCII), ``n`` as given,
    and the number of its message (0, 1, …) — in order, and how many were left out.

    Each channel is given room for the longest seq (``MAX_SEQ``'s digits), so a
    message written as :func:`encode` writes one — ``[name,seq,name,seq]`` —
    fits ``limit`` whatever the seqs. A channel is left out as :func:`encode`
    leaves it out: it is not text, or it alone overflows ``limit``.
    """
    packed: list[tuple[str, int, int]] = []
    left_out = 0
    message = 0
    size = 1  # as in encode: "[" and each part with the "," or "]" after it
    for channel, n in channels:
        name = _name(channel) if type(channel) is str else None
        cost = 0 if name is None else len(name) + 1 + _SEQ_DIGITS + 1
        if name is None or 1 + cost > limit:
            left_out += 1
            continue
        if size + cost > limit:
            message, size = message + 1, 1
        packed.append((name.decode("ascii"), n, message))
        size += cost
    return packed, left_out


def decode(message: bytes | str) -> list[tuple[str, int]] | None:
    """The pairs of one message, or None if it is not a message of this format."""
    if len(message) > MAX_MESSAGE:
        return None
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not list or not value or type(value[0]) is not str:
        return None
    pairs: list[tuple[str, int]] = []
    channel = ""
    told = True  # whether the current channel has a seq yet
    for item in value:
        kind = type(item)
        if kind is str:
            if not told:
                return None
            channel, told = item, False
        elif kind is int and 0 <= item <= MAX_SEQ:  # bool is not int here: type() is exact
            pairs.append((channel, item))
            told = True
        else:
            return None
    return pairs if told else None


__all__ = ["MAX_MESSAGE", "MAX_SEQ", "decode", "encode", "pack"]
