"""Events, channels, wildcard patterns and resume cursors.

An event's envelope is ``{id, channel, offset, epoch, type, time, data}``.
``offset`` counts from 1 per channel; ``epoch`` is drawn at random when a
channel's history begins, so it changes whenever that history is lost, and
``id = "{epoch}:{offset}"`` is unique across channels.

A **cursor** says where a reader resumes. It is either an event id (resume
after that event) or a position ``"{log epoch}@{seq}"`` — what polling answers
as ``next`` even when no event was delivered. Every event also carries ``seq``,
its place in the whole log, so one cursor resumes a subscription to any number
of channels and wildcard patterns.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from polyport.core.errors import InvalidArgument

_SEGMENT = r"[A-Za-z0-9_\-.:~@=]+"
_CHANNEL = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})*$")
_PATTERN_SEGMENT = re.compile(rf"^(\+|#|{_SEGMENT})$")
_EVENT_ID = re.compile(r"^([a-z0-9]{1,32}):([0-9]{1,19})$")
_POSITION = re.compile(r"^([a-z0-9]{1,32})@([0-9]{1,19})$")

MAX_CHANNEL_LENGTH = 255
#: At most this many patterns in one subscription, counted as given.
MAX_PATTERNS = 64

#: A whole subscription pattern as :meth:`Pattern.parse` accepts it, for documents.
PATTERN_EXPRESSION = rf"^(?:(?:\+|{_SEGMENT})(?:/(?:\+|{_SEGMENT}))*(?:/#)?|#)$"
#: A resume cursor as :meth:`Cursor.parse` reads it, or a word the readers know.
CURSOR_EXPRESSION = r"^(?:now|earliest|[a-z0-9]{1,32}[:@][0-9]{1,19})$"


def new_epoch() -> str:
    """A fresh random epoch: 10 lowercase base-32 characters (50 bits)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is a valid concrete channel name, else raise."""
    if len(channel) > MAX_CHANNEL_LENGTH or not _CHANNEL.fullmatch(channel):
        raise InvalidArgument(
            f"invalid channel {channel[:80]!r}: use '/'-separated names of letters, digits "
            "and _-.:~@= (wildcards + and # only in subscriptions)"
        )
    return channel


@dataclass(frozen=True, slots=True)
class Pattern:
    """A channel name or an MQTT-style pattern: ``+`` one segment, ``#`` the rest."""

    text: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        segments = tuple(text.split("/"))
        if len(text) > MAX_CHANNEL_LENGTH or not all(
            _PATTERN_SEGMENT.fullmatch(s) for s in segments
        ):
            raise InvalidArgument(f"invalid channel pattern {text[:80]!r}")
        if "#" in segments[:-1]:
            raise InvalidArgument(f"'#' must be the last segment of a pattern: {text[:80]!r}")
        return cls(text, segments)

    @property
    def is_exact(self) -> bool:
        return "+" not in self.segments and "#" not in self.segments

    def matches(self, channel: str) -> bool:
        parts = channel.split("/")
        for i, segment in enumerate(self.segments):
            if segment == "#":
                return True  # '#' also matches the parent level itself, as in MQTT
            if i >= len(parts) or (segment != "+" and segment != parts[i]):
                return False
        return len(parts) == len(self.segments)

    def overlaps(self, other: Pattern) -> bool:
        """Whether some channel matches both patterns."""
        a, b = self.segments, other.segments
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else None
            y = b[i] if i < len(b) else None
            if x == "#" or y == "#":
                return True
            if x is None or y is None:
                return False
            if x != "+" and y != "+" and x != y:
                return False
        return True


def parse_patterns(texts: Iterable[str], *, limit: int = MAX_PATTERNS) -> tuple[Pattern, ...]:
    texts = list(texts)
    if len(texts) > limit:  # counted as given, as documents state it (maxItems)
        raise InvalidArgument(f"at most {limit} channels per subscription")
    patterns = tuple(dict.fromkeys(Pattern.parse(t) for t in texts))
    if not patterns:
        raise InvalidArgument("at least one channel is required")
    return patterns


@dataclass(frozen=True, slots=True)
class Cursor:
    """A parsed resume cursor: an event id or a log position."""

    epoch: str
    number: int
    is_position: bool

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _EVENT_ID.fullmatch(text)
        if match:
            return cls(match.group(1), int(match.group(2)), False)
        match = _POSITION.fullmatch(text)
        if match:
            return cls(match.group(1), int(match.group(2)), True)
        raise InvalidArgument(
            f"malformed cursor {text[:80]!r}: expected an event id 'epoch:offset', "
            "a position 'epoch@seq', 'now' or 'earliest'"
        )

    def __str__(self) -> str:
        return f"{self.epoch}{'@' if self.is_position else ':'}{self.number}"


def position(log_epoch: str, seq: int) -> str:
    return f"{log_epoch}@{seq}"


def _rfc3339(ts: float) -> str:
    """``2026-11-28T01:48:48.194Z``: UTC, milliseconds."""
    whole = int(ts)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((ts - whole) * 1000):03d}Z"
    )


class Event:
    """One published event. ``data`` is its payload already encoded as JSON.

    The memory log's ``append_many`` sets these fields itself, without
    ``__init__`` (its hot path): a field added here is added there too.
    """

    __slots__ = ("_json", "channel", "data", "epoch", "offset", "seq", "time", "type", "wire")

    def __init__(
        self, channel: str, offset: int, epoch: str, seq: int, type: str, time: float, data: bytes
    ) -> None:
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.seq = seq
        self.type = type
        self.time = time
        self.data = data
        self._json: bytes | None = None
        #: Wire encodings of this event, filled by edges (``"sse"``, ``"ws"``, …)
        #: so a broadcast encodes each event once, not once per subscriber.
        self.wire: dict[str, bytes] = {}

    @property
    def id(self) -> str:
        return f"{self.epoch}:{self.offset}"

    def to_json(self) -> bytes:
        """The envelope as JSON bytes, encoded once however many readers get it."""
        if self._json is None:
            head = orjson.dumps(
                {
                    "id": self.id,
                    "channel": self.channel,
                    "offset": self.offset,
                    "epoch": self.epoch,
                    "type": self.type,
                    "time": _rfc3339(self.time),
                }
            )
            self._json = head[:-1] + b',"data":' + self.data + b"}"
        return self._json

    def to_dict(self) -> dict[str, Any]:
        return orjson.loads(self.to_json())  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Event({self.id} {self.channel} {self.type} seq={self.seq})"


def now() -> float:
    return time.time()


S = TypeVar("S")


class PatternIndex(Generic[S]):
    """Subscribers indexed by pattern: matching a channel walks its segments once.

    Exact channels are a dict lookup; wildcard patterns live in a segment trie,
    so publishing costs O(depth), not O(number of subscribers).
    """

    __slots__ = ("_exact", "_root", "_size")

    def __init__(self) -> None:
        self._exact: dict[str, set[S]] = {}
        self._root = _Node[S]()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: Pattern, item: S) -> None:
        if pattern.is_exact:
            self._exact.setdefault(pattern.text, set()).add(item)
        else:
            node = self._root
            for segment in pattern.segments:
                node = node.children.setdefault(segment, _Node())
            node.items.add(item)
        self._size += 1

    def remove(self, pattern: Pattern, item: S) -> None:
        if pattern.is_exact:
            items = self._exact.get(pattern.text)
            if items and item in items:
                items.discard(item)
                self._size -= 1
                if not items:
                    del self._exact[pattern.text]
            return
        path = [self._root]
        for segment in pattern.segments:
            child = path[-1].children.get(segment)
            if child is None:
                return
            path.append(child)
        if item in path[-1].items:
            path[-1].items.discard(item)
            self._size -= 1
        for depth in range(len(pattern.segments), 0, -1):  # prune empty branches
            node = path[depth]
            if node.items or node.children:
                break
            del path[depth - 1].children[pattern.segments[depth - 1]]

    def match(self, channel: str) -> Iterator[S]:
        """Every item whose pattern matches ``channel`` (an item may come twice)."""
        exact = self._exact.get(channel)
        if exact:
            yield from tuple(exact)
        if self._root.children:
            yield from self._walk(self._root, channel.split("/"), 0)

    def _walk(self, node: _Node[S], parts: list[str], depth: int) -> Iterator[S]:
        hashed = node.children.get("#")
        if hashed is not None:
            yield from tuple(hashed.items)
        if depth == len(parts):
            yield from tuple(node.items)
            return
        for key in (parts[depth], "+"):
            child = node.children.get(key)
            if child is not None:
                yield from self._walk(child, parts, depth + 1)


class _Node(Generic[S]):
    __slots__ = ("children", "items")

    def __init__(self) -> None:
        self.children: dict[str, _Node[S]] = {}
        self.items: set[S] = set()
