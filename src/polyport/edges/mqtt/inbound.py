"""A client's PUBLISH: an event of the type whose channel template its topic fits.

    PUBLISH sensors/s1/temperature {"celsius": 21.5}
        → sensors.temperature {"sensor": "s1", "celsius": 21.5}: validated, the
          caller's rights checked, appended to the log, answered once durable

Refusals are MQTT 5 reason codes from the edge's error table
(:mod:`polyport.edges.mqtt.errors`); the connection decides how to say them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from pydantic import ValidationError

from polyport.core.contract import EventMessage
from polyport.core.dispatch import Caller, invalid
from polyport.core.errors import (
    ContractError,
    InvalidArgument,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from polyport.core.events import Event, check_channel
from polyport.core.hub import settle_published
from polyport.edges.mqtt.errors import message_of, reason_of
from polyport.edges.mqtt.packets import Reason

if TYPE_CHECKING:
    from polyport.edges.mqtt.connection import Broker


async def publish_event(
    broker: Broker, caller: Caller, topic: str, payload: bytes
) -> tuple[int, str, Event | None]:
    """Publish ``payload`` on ``topic`` as an event: (reason code, what went wrong, the event)."""
    routes = broker.routes.match(topic)
    if not routes:
        return Reason.TOPIC_NAME_INVALID, f"no event type is published on {topic[:80]!r}", None
    dispatcher = broker.dispatcher
    try:
        check_channel(topic)
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidArgument("the payload is not JSON", unparseable=True) from None
        refused: ServiceError | None = None
        for route in routes:
            event_type = route.event
            try:
                dispatcher.admit_publish(event_type, caller)
                value = route.fill(data, topic)
                try:
                    checked = broker.codec.adapter(event_type.name).validate_python(value)
                except ValidationError as exc:
                    raise invalid(exc) from None
                try:
                    channel = event_type.channel_for(checked)
                except ContractError:
                    channel = None
                if channel != topic:
                    raise InvalidArgument(f"the payload belongs on {channel!r}, not on this topic")
            except ServiceError as exc:
                if refused is None or isinstance(refused, Unauthenticated | PermissionDenied):
                    refused = exc  # the first type's error, unless only rights refused it
                continue
            message = EventMessage(event_type, checked, topic)
            event = await broker.hub.publish(topic, event_type.name, broker.codec.encode(message))
            await settle_published()  # acknowledged means durable
            return Reason.SUCCESS, "", event
        assert refused is not None
        raise refused
    except ServiceError as exc:
        return reason_of(exc), message_of(exc), None


async def clear_retained(broker: Broker, caller: Caller, topic: str) -> tuple[int, str]:
    """Clear the retained message of ``topic``'s channel, for a caller who may publish
    there: (reason code, what went wrong)."""
    routes = broker.routes.match(topic)
    if not routes:
        return Reason.TOPIC_NAME_INVALID, f"no event type is published on {topic[:80]!r}"
    refused: ServiceError | None = None
    for route in routes:
        try:
            broker.dispatcher.admit_publish(route.event, caller)
        except ServiceError as exc:
            refused = refused or exc
            continue
        await broker.retained.clear(topic)
        return Reason.SUCCESS, ""
    assert refused is not None
    return reason_of(refused), message_of(refused)
