"""The bridge's inbound direction: a broker's message → a validated event, or nothing.

    broker topic {prefix}sensors/s1/temperature  {"celsius": 21.5}
        → sensors.temperature {"sensor": "s1", "celsius": 21.5}: validated against its
          model, appended to the log, durable before the broker is acknowledged

The same typing as a client's PUBLISH to the node (:mod:`.inbound`): the topic
names the channel, the channel template finds the event type, the payload
is its JSON. What may come in is the operator's choice (``mqtt.bridge.incoming``),
not a client's right: the broker authenticated its publishers, so no scope
is checked. Anything invalid raises :class:`~polyport.core.errors.InvalidArgument`
and publishes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import ValidationError

from polyport.core.contract import EventMessage
from polyport.core.dispatch import invalid
from polyport.core.errors import ContractError, InvalidArgument
from polyport.core.events import Event, Pattern, check_channel
from polyport.core.hub import EventHub, settle_published
from polyport.core.runtime import EventCodec
from polyport.edges.mqtt.topics import TopicRoutes


class BridgeInbound:
    """Turns the broker's messages on the incoming channels into events of this node."""

    def __init__(
        self,
        hub: EventHub,
        codec: EventCodec,
        routes: TopicRoutes,
        *,
        prefix: str,
        incoming: Sequence[Pattern],
    ) -> None:
        self.hub = hub
        self.codec = codec
        self.routes = routes
        self.prefix = prefix
        self.incoming = tuple(incoming)

    def channel_of(self, topic: str) -> str:
        """The channel a broker topic names, if it is one the bridge takes in."""
        if not topic.startswith(self.prefix):
            raise InvalidArgument(f"topic {topic[:80]!r} is outside the prefix {self.prefix!r}")
        channel = topic[len(self.prefix) :]
        check_channel(channel)
        if not any(pattern.matches(channel) for pattern in self.incoming):
            raise InvalidArgument(f"channel {channel!r} is not one mqtt.bridge.incoming names")
        return channel

    async def publish(self, topic: str, payload: bytes) -> Event:
        """Publish the message as an event, durable when this returns; InvalidArgument
        (nothing published) when it is not one."""
        channel = self.channel_of(topic)
        routes = self.routes.match(channel)
        if not routes:
            raise InvalidArgument(f"no event type is published on {channel!r}")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidArgument("the payload is not JSON", unparseable=True) from None
        first: InvalidArgument | None = None
        for route in routes:
            event_type = route.event
            try:
                value = route.fill(data, channel)
                try:
                    checked = self.codec.adapter(event_type.name).validate_python(value)
                except ValidationError as exc:
                    raise invalid(exc) from None
                try:
                    belongs = event_type.channel_for(checked)
                except ContractError:
                    belongs = None
                if belongs != channel:
                    raise InvalidArgument(f"the payload belongs on {belongs!r}, not {channel!r}")
            except InvalidArgument as exc:
                first = first or exc  # the first type's error, as a client's PUBLISH gets
                continue
            message = EventMessage(event_type, checked, channel)
            event = await self.hub.publish(channel, event_type.name, self.codec.encode(message))
            await settle_published()  # the broker is acknowledged once the event is durable
            return event
        assert first is not None
        raise first
