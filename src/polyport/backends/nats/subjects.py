"""Channels as NATS subjects, patterns as subject filters, epochs derived per channel.

A channel ``orders/created`` is stored on the subject ``{prefix}.orders.created.$``:
one token per segment, then a final ``$``. The final token is what lets one
NATS filter say what an MQTT pattern says: ``orders/#`` also matches the
parent channel ``orders``, and the filter ``{prefix}.orders.>`` matches both
``{prefix}.orders.$`` and ``{prefix}.orders.created.$``; ``orders/+`` becomes
``{prefix}.orders.*.$``, which ``orders`` (one token short) cannot match.

Segments may hold ``.`` (the subject separator) and ``:~@=``; every character
outside ``[A-Za-z0-9_-]`` is written ``=XX`` (its hex code), so a token is
never empty, never ``*``, ``>`` or ``$``, and is also a valid KV key token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from polyport.core.events import Pattern

#: The last token of every event subject (no encoded segment can equal it).
END = "$"
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"=([0-9A-F]{2})")
_EPOCH_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def encode_segment(segment: str) -> str:
    if _PLAIN.fullmatch(segment):
        return segment
    return "".join(c if _PLAIN.fullmatch(c) else f"={ord(c):02X}" for c in segment)


def decode_segment(token: str) -> str:
    if "=" not in token:
        return token
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), token)


def channel_tokens(channel: str) -> str:
    """``a/b.c`` → ``a.b=2Ec``: the channel's segments as subject tokens."""
    return ".".join(encode_segment(s) for s in channel.split("/"))


def tokens_channel(tokens: str) -> str:
    return "/".join(decode_segment(t) for t in tokens.split("."))


class Subjects:
    """The subjects of one log: ``{prefix}.…`` for events."""

    __slots__ = ("_cut", "_names", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._cut = len(prefix) + 1
        self._names: dict[str, str] = {}  # subject → channel, for reads

    @property
    def all(self) -> str:
        return f"{self.prefix}.>"

    def subject(self, channel: str) -> str:
        return f"{self.prefix}.{channel_tokens(channel)}.{END}"

    def channel(self, subject: str) -> str:
        """The channel stored on ``subject`` (a subject of this log)."""
        name = self._names.get(subject)
        if name is None:
            name = tokens_channel(subject[self._cut : -len(END) - 1])
            if len(self._names) >= 65536:
                self._names.clear()
            self._names[subject] = name
        return name

    def filter(self, pattern: Pattern) -> str:
        """One NATS filter subject matching exactly the channels ``pattern`` matches."""
        tokens = []
        for segment in pattern.segments:
            if segment == "+":
                tokens.append("*")
            elif segment == "#":
                tokens.append(">")
            else:
                tokens.append(encode_segment(segment))
        if tokens[-1] != ">":
            tokens.append(END)
        return f"{self.prefix}.{'.'.join(tokens)}"

    def filters(self, patterns: Sequence[Pattern]) -> list[str]:
        """The distinct filters of ``patterns``; only the catch-all if one pattern is ``#``."""
        if any(p.segments == ("#",) for p in patterns):
            return [self.all]
        return list(dict.fromkeys(self.filter(p) for p in patterns))


def channel_epoch(log_epoch: str, channel: str) -> str:
    """A channel's epoch, derived from the log's: every node computes the same one.

    Derived rather than drawn, so two nodes that create a channel at once agree
    without a race, and a new log epoch (a lost stream) changes every channel's.
    """
    digest = hashlib.blake2b(f"{log_epoch}\0{channel}".encode(), digest_size=8).digest()
    number = int.from_bytes(digest, "big") >> 14  # 50 bits, as new_epoch() draws
    chars = []
    for _ in range(10):
        number, index = divmod(number, 32)
        chars.append(_EPOCH_ALPHABET[index])
    return "".join(chars)
