"""Topics are channels: MQTT topic names and filters, checked, and a topic's event types.

A topic filter is a channel pattern (``/``, ``+``, ``#`` mean the same in
both); a PUBLISH topic names the channel of an event whose type's channel
template it fits (``sensors/{sensor}/temperature`` ← ``sensors/s1/temperature``).

Untyped topics (an untyped event type, ``mqtt.open_topics``) take any topic
MQTT allows, and a channel allows fewer characters, so topics and filters are
mapped level by level: a level that is a channel segment and does not start
with ``~`` is itself; any other is ``~`` and the hex of its UTF-8 (an empty
level is ``~`` alone)::

    client/TopicA     ⇄  client/TopicA
    a//b              ⇄  a/~/b
    $SYS/load avg     ⇄  ~24535953/~6c6f61642061766720

The mapping is one to one, so a filter matches a topic exactly when the mapped
filter matches the mapped topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from polyport.core.contract import EventType
from polyport.core.errors import InvalidArgument
from polyport.core.events import MAX_CHANNEL_LENGTH, Pattern
from polyport.edges.mqtt.packets import MalformedPacket

SHARED_PREFIX = "$share/"
#: ``$`` topics no client publishes on and no open topic filter opens.
RESERVED_PREFIXES = ("$share/", "$polyport/", "$SYS/")
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.:@=][A-Za-z0-9_\-.:~@=]*$")
#: How a level starting with ``$`` begins once mapped (``$`` is 0x24).
DOLLAR = "~24"


def _level_to_channel(level: str) -> str:
    if level in ("+", "#") or _SEGMENT.fullmatch(level):
        return level
    return "~" + level.encode("utf-8").hex()


def _level_to_topic(level: str) -> str:
    if not level.startswith("~"):
        return level
    try:
        return bytes.fromhex(level[1:]).decode("utf-8")
    except ValueError:
        return level  # not one we mapped: a typed channel's own level


def topic_to_channel(topic: str) -> str:
    """The channel an untyped topic (or a topic filter) is stored under."""
    return "/".join(_level_to_channel(level) for level in topic.split("/"))


def channel_to_topic(channel: str) -> str:
    """The topic an untyped event's channel came from."""
    return "/".join(_level_to_topic(level) for level in channel.split("/"))


def filter_to_pattern(text: str) -> Pattern:
    """A well-formed topic filter as the channel pattern it means; InvalidArgument when
    it is longer than a channel may be, or under a reserved ``$`` prefix (``$SYS``)."""
    if (text + "/").startswith(RESERVED_PREFIXES):
        raise InvalidArgument(f"{text[:80]!r} is reserved")
    return Pattern.parse(topic_to_channel(text))


def dollar_hidden(pattern: Pattern, channel: str) -> bool:
    """MQTT 4.7.2: a filter that starts with a wildcard matches no topic that starts
    with ``$``."""
    return pattern.segments[0] in ("+", "#") and channel.startswith(DOLLAR)


def filter_is_well_formed(text: str) -> bool:
    """MQTT's own rules for a topic filter (4.7): not empty, ``#`` last and alone in its
    level, ``+`` alone in its level. A filter breaking them is a malformed packet."""
    if not text:
        return False
    levels = text.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def check_filter(text: str) -> None:
    if not filter_is_well_formed(text):
        raise MalformedPacket(f"topic filter {text[:80]!r} is not well formed")


def topic_name_is_valid(topic: str) -> bool:
    """A PUBLISH's topic: not empty, no wildcard (MQTT 3.3.2)."""
    return bool(topic) and "+" not in topic and "#" not in topic


@dataclass(frozen=True, slots=True)
class TopicRoute:
    """An event type clients may reach by topic, and where its template's fields sit."""

    event: EventType
    pattern: Pattern
    #: (level, field) for each level of the template that is one ``{field}``.
    fields: tuple[tuple[int, str], ...]

    def fill(self, data: object, topic: str) -> object:
        """``data`` with the fields the topic names filled in where the payload has none."""
        if not self.fields or not isinstance(data, dict):
            return data
        levels = topic.split("/")
        filled = dict(data)
        for level, name in self.fields:
            filled.setdefault(name, levels[level])
        return filled


@dataclass(frozen=True, slots=True)
class UntypedRoute:
    """An untyped event type: any topic its filter matches, payload as it came."""

    event: EventType
    pattern: Pattern

    def matches(self, channel: str) -> bool:
        # A PUBLISH on "$x" goes to "#" too: MQTT's "$" rule (4.7.2) is about what a
        # subscription's filter matches, applied where events go out.
        return self.pattern.matches(channel)


class TopicRoutes:
    """Every event type whose channel template is a topic, to find a PUBLISH's type by."""

    def __init__(self, events: Mapping[str, EventType]) -> None:
        self.routes: list[TopicRoute] = []
        self.untyped: list[UntypedRoute] = []
        #: The names of the untyped event types (their events go out as raw bytes).
        self.untyped_names: frozenset[str] = frozenset()
        for event in events.values():
            if event.untyped:
                self.add_untyped(event)
                continue
            try:
                pattern = Pattern.parse(event.channel_pattern)
            except InvalidArgument:
                continue  # a placeholder inside a level ("a-{x}"): not a topic filter
            fields = tuple(
                (index, level[1:-1])
                for index, level in enumerate(event.channel.split("/"))
                if level.startswith("{") and level.endswith("}")
            )
            self.routes.append(TopicRoute(event, pattern, fields))

    def add_untyped(self, event: EventType) -> None:
        """Route the topics of an untyped event type (its channel, ``prefix/#``) to it."""
        self.untyped.append(UntypedRoute(event, Pattern.parse(event.channel_pattern)))
        self.untyped_names = self.untyped_names | {event.name}

    def match(self, topic: str) -> list[TopicRoute]:
        """The routes whose template ``topic`` fits, in the order the types were declared."""
        return [route for route in self.routes if route.pattern.matches(topic)]

    def match_untyped(self, topic: str) -> tuple[UntypedRoute, str] | None:
        """The untyped type a topic no typed one takes goes to, and its channel (None: none,
        or the topic is longer than a channel may be)."""
        if not self.untyped or topic.startswith(RESERVED_PREFIXES):
            return None
        channel = topic_to_channel(topic)
        if len(channel) > MAX_CHANNEL_LENGTH:
            return None
        for route in self.untyped:
            if route.matches(channel):
                return route, channel
        return None
