"""The MQTT edge's settings: ``[mqtt]``, ``POLYPORT_MQTT__…`` (importable without the edge)."""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class MqttConfig(Section):
    """The MQTT edge: its own TCP port, MQTT 5.0 and 3.1.1."""

    enabled: bool = True
    host: str | None = None  # None: the node's host
    #: 0: any free port. When the default is taken (Mosquitto listens on 1883 on many
    #: machines) the node serves MQTT on a free port and says so; a port set explicitly
    #: (file, variable) must be free.
    port: int = Field(default=1883, ge=0, le=65535)
    #: The largest packet read or sent, in bytes, counted from its first byte. A larger
    #: one is refused as soon as its fixed header says how large it is, before its body
    #: is read (MQTT 5: announced in CONNACK as Maximum Packet Size).
    max_packet: int = Field(default=64 * 1024, ge=128, le=268_435_460)
    #: Open connections at once; one more is closed as soon as it is accepted.
    max_connections: int = Field(default=1000, ge=1)
    #: Seconds a new connection has to deliver its whole CONNECT packet.
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Unacknowledged QoS 1 and 2 messages a client may send us (MQTT 5 Receive Maximum).
    receive_maximum: int = Field(default=64, ge=1, le=65535)
    #: Unacknowledged QoS 1 and 2 messages we send a client, at most (its own Receive
    #: Maximum lowers it further).
    max_inflight: int = Field(default=64, ge=1, le=65535)
    #: Topic filters one client may subscribe to at once.
    max_subscriptions: int = Field(default=64, ge=1)
    #: Seconds a client that does not read may hold up what we send it before it is
    #: disconnected.
    send_timeout: float = Field(default=30.0, gt=0)
    #: The longest a session outlives its connection, in seconds: an MQTT 5 client
    #: asking for more (or for never, 0xFFFFFFFF) gets this, and is told in CONNACK;
    #: an MQTT 3.1.1 client with clean session 0, whose sessions never expire by the
    #: specification, gets this too. 0 turns persistent sessions off.
    max_session_expiry: int = Field(default=86400, ge=0, le=0xFFFFFFFF)
    #: Sessions of disconnected clients kept by this node; one more forgets the one
    #: that would expire first.
    max_sessions: int = Field(default=10_000, ge=0)
    #: Retained messages (the last event of each matching channel) sent for one topic
    #: filter of a SUBSCRIBE, at most: the first channels by name.
    max_retained: int = Field(default=1000, ge=0)
    #: Topic aliases a client may set on one connection (MQTT 5 Topic Alias Maximum,
    #: announced in CONNACK); 0: none.
    topic_alias_maximum: int = Field(default=64, ge=0, le=65535)
    #: Where MQTT over WebSocket (subprotocol ``mqtt``) is served on the node's HTTP
    #: port; "" turns it off.
    websocket_path: str = "/mqtt"
