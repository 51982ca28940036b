"""Topics are channels: MQTT topic names and filters, checked, and a topic's event types.

A topic filter is a channel pattern (``/``, ``+``, ``#`` mean the same in
both); a PUBLISH topic names the channel of an event whose type's channel
template it fits (``sensors/{sensor}/temperature`` ← ``sensors/s1/temperature``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polyport.core.contract import EventType
from polyport.core.errors import InvalidArgument
from polyport.core.events import Pattern
from polyport.edges.mqtt.packets import MalformedPacket

SHARED_PREFIX = "$share/"


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


class TopicRoutes:
    """Every event type whose channel template is a topic, to find a PUBLISH's type by."""

    def __init__(self, events: Mapping[str, EventType]) -> None:
        self.routes: list[TopicRoute] = []
        for event in events.values():
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

    def match(self, topic: str) -> list[TopicRoute]:
        """The routes whose template ``topic`` fits, in the order the types were declared."""
        return [route for route in self.routes if route.pattern.matches(topic)]
