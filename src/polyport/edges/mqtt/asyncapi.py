"""The MQTT edge in /asyncapi.json: its server, and two operations per event type.

    servers.mqtt                 protocol mqtt, protocolVersion 5.0 (3.1.1 too), the
                                 host the request named with MQTT's own port
    operations.mqtt.{type}       send: a SUBSCRIBE to the channel's topic filter, then
                                 each event as a PUBLISH whose payload is the event data
    operations.mqtt.publish.{type}
                                 receive: a client's PUBLISH on the channel's topic, for
                                 the types clients may publish (``publish_scopes``)

Actions are the node's, as everywhere in the document: the node *sends* to
subscribers and *receives* what clients publish. The channels and messages
are the document's own (the event channel, its template as the topic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyport.edges.mqtt.binding import MqttEdge
    from polyport.http.asyncapi import AsyncApiDocument

#: The MQTT bindings' version (AsyncAPI bindings repository).
BINDING_VERSION = "0.2.0"
#: A listener on every interface: clients reach it on the host they asked for.
WILDCARDS = ("", "0.0.0.0", "::")


def describe_channels(edge: MqttEdge, doc: AsyncApiDocument) -> None:
    """Add the MQTT server and its operations, unless MQTT is not served."""
    if edge.off is not None:
        return
    config = edge.config
    over_websocket = (
        f" The same over WebSocket: ws://…{config.websocket_path} on the node's HTTP port, "
        "subprotocol mqtt."
        if edge.websocket_routes()
        else ""
    )
    fixed = edge.host not in WILDCARDS and config.host is not None
    doc.server(
        "mqtt",
        "mqtt",
        host=edge.address if fixed else None,
        port=None if fixed else lambda: edge.port,
        protocol_version="5.0",
        title="MQTT",
        description="The node's own MQTT listener, MQTT 5.0 and 3.1.1 (docs/mqtt.md): topics "
        "are channels, a topic filter (+, #) subscribes to events, a PUBLISH on a channel's "
        "topic publishes one. The CONNECT password carries the credential." + over_websocket,
        bindings={
            "mqtt": {"maximumPacketSize": config.max_packet, "bindingVersion": BINDING_VERSION}
        },
    )
    schemes = ("mqttPassword",)
    for name, event in doc.events.items():
        channel = doc.event_channel(name)
        security, extensions = doc.security(schemes, public=event.public, scopes=event.scopes)
        doc.operation(
            f"mqtt.{name}",
            "send",
            channel,
            server="mqtt",
            summary=f"{name} events, sent to MQTT subscribers",
            description=f"SUBSCRIBE to {event.channel_pattern} (or a narrower filter) at QoS "
            "0, 1 or 2: each event arrives as a PUBLISH on its channel whose payload is this "
            "message, with the user properties event-id and event-type. The channel's last "
            "event is its retained message, sent after the SUBACK.",
            security=security,
            bindings={"mqtt": {"qos": 2, "retain": True, "bindingVersion": BINDING_VERSION}},
            tags=["mqtt"],
            extensions=extensions,
        )
        allowed = event.publish_scopes
        if allowed is None:
            continue  # clients may not publish it: only the service's own code does
        security, extensions = doc.security(
            schemes, public=event.public and not allowed, scopes=allowed
        )
        doc.operation(
            f"mqtt.publish.{name}",
            "receive",
            channel,
            server="mqtt",
            summary=f"{name} events, published by MQTT clients",
            description=f"PUBLISH on a topic that fits {event.channel} with this message as "
            "the payload (the fields the topic names may be left out): validated against the "
            "event type and acknowledged (QoS 1, 2) once durable; refused with 0x99 (payload "
            "format invalid) or 0x87 (not authorized) on MQTT 5.",
            security=security,
            bindings={"mqtt": {"qos": 2, "retain": True, "bindingVersion": BINDING_VERSION}},
            tags=["mqtt"],
            extensions=extensions,
        )
