"""A client's PUBLISH: an event of the type whose channel template its topic fits.

    PUBLISH sensors/s1/temperature {"celsius": 21.5}
        → sensors.temperature {"sensor": "s1", "celsius": 21.5}: validated, the
          caller's rights checked, appended to the log, answered once durable

A topic no typed event type takes goes to an untyped one (a contract's, or
``mqtt.open_topics``) when one's filter matches it: the payload is kept as it
came, as a :class:`~polyport.core.raw.RawMessage` with the MQTT 5 properties
other clients get back (see :mod:`.topics` for how such a topic is a channel).

Refusals are MQTT 5 reason codes from the edge's error table
(:mod:`polyport.edges.mqtt.errors`); the connection decides how to say them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
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
from polyport.core.raw import RawMessage
from polyport.edges.mqtt.codec import (
    CONTENT_TYPE,
    CORRELATION_DATA,
    MESSAGE_EXPIRY,
    PAYLOAD_FORMAT,
    RESPONSE_TOPIC,
    pairs_of,
)
from polyport.edges.mqtt.errors import message_of, reason_of
from polyport.edges.mqtt.packets import Publish, Reason, UserProperties, Will

if TYPE_CHECKING:
    from polyport.edges.mqtt.connection import Broker


@dataclass(frozen=True, slots=True)
class Metadata:
    """What MQTT 5 says of a PUBLISH's (or a will's) payload, kept by untyped events."""

    content_type: str | None = None
    payload_format: int = 0
    user_properties: UserProperties = ()
    response_topic: str | None = None
    correlation_data: bytes | None = None
    qos: int | None = None
    retain: bool = False
    #: Message Expiry Interval, seconds.
    expiry: int | None = None

    @classmethod
    def of_will(cls, will: Will) -> Metadata:
        props = will.properties
        content_type = props.get(CONTENT_TYPE)
        response_topic = props.get(RESPONSE_TOPIC)
        correlation = props.get(CORRELATION_DATA)
        expiry = props.get(MESSAGE_EXPIRY)
        return cls(
            content_type=content_type if isinstance(content_type, str) else None,
            payload_format=1 if props.get(PAYLOAD_FORMAT) == 1 else 0,
            user_properties=pairs_of(props),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=correlation if isinstance(correlation, bytes) else None,
            qos=will.qos,
            retain=will.retain,
            expiry=expiry if isinstance(expiry, int) else None,
        )

    @classmethod
    def of_publish(cls, packet: Publish) -> Metadata:
        return cls(
            packet.content_type,
            packet.payload_format,
            packet.user_properties,
            packet.response_topic,
            packet.correlation_data,
            packet.qos,
            packet.retain,
            packet.message_expiry,
        )

    def message(self, payload: bytes) -> RawMessage:
        """``payload`` with this metadata, as an untyped event's data."""
        correlation = self.correlation_data
        return RawMessage.of(
            payload,
            content_type=self.content_type,
            payload_format=1 if self.payload_format == 1 else None,
            user_properties=[list(pair) for pair in self.user_properties] or None,
            qos=self.qos,
            retain=True if self.retain else None,
            expiry=self.expiry,
            response_topic=self.response_topic,
            correlation_data=(
                None if correlation is None else base64.b64encode(correlation).decode("ascii")
            ),
        )


NO_METADATA = Metadata()


async def publish_event(
    broker: Broker,
    caller: Caller,
    topic: str,
    payload: bytes,
    metadata: Metadata = NO_METADATA,
) -> tuple[int, str, Event | None]:
    """Publish ``payload`` on ``topic`` as an event: (reason code, what went wrong, the event)."""
    routes = broker.routes.match(topic)
    if not routes:
        untyped = broker.routes.match_untyped(topic)
        if untyped is None:
            return Reason.TOPIC_NAME_INVALID, f"no event type is published on {topic[:80]!r}", None
        raw, raw_channel = untyped
        try:
            broker.dispatcher.admit_publish(raw.event, caller)
        except ServiceError as exc:
            return reason_of(exc), message_of(exc), None
        data = metadata.message(payload).to_json()
        event = await broker.hub.publish(raw_channel, raw.event.name, data)
        await settle_published()  # acknowledged means durable
        if metadata.retain:
            await broker.retained.keep(event)
        return Reason.SUCCESS, "", event
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
        untyped = broker.routes.match_untyped(topic)
        if untyped is None:
            return Reason.TOPIC_NAME_INVALID, f"no event type is published on {topic[:80]!r}"
        raw, raw_channel = untyped
        try:
            broker.dispatcher.admit_publish(raw.event, caller)
        except ServiceError as exc:
            return reason_of(exc), message_of(exc)
        await broker.retained.forget(raw_channel)
        return Reason.SUCCESS, ""
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
