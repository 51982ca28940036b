"""The MQTT edge's settings: ``[mqtt]``, ``POLYPORT_MQTT__…`` (importable without the edge)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from polyport.core.config import Section
from polyport.core.errors import InvalidArgument
from polyport.core.events import Pattern


class MqttBridgeConfig(Section):
    """``[mqtt.bridge]``: the node as a client of an external broker (docs/mqtt.md, Bridge)."""

    #: ``mqtt://user:pass@host:port`` or ``mqtts://…`` (TLS); None: no bridge.
    url: str | None = None
    #: This node's client id at the broker; None: ``{group}-{host}-{random}``, new at each
    #: start. Give each node its own, stable one for a broker session that outlives a restart.
    client_id: str | None = None
    #: The nodes bridging one broker together: the shared subscription's group
    #: (``$share/{group}/…``) and the name of their lease and cursor in the records store.
    group: str = Field(default="polyport", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Broker topic = prefix + channel (``"plant1/"``: channel ``a/b`` is ``plant1/a/b``).
    prefix: str = ""
    #: Channel patterns whose events are published to the broker.
    outgoing: list[str] = []
    #: Channel patterns taken in from the broker's topics (prefix + pattern) as events.
    incoming: list[str] = []
    #: QoS of what is published to the broker and of the subscriptions to it.
    qos: int = Field(default=1, ge=0, le=2)
    #: The RETAIN flag of what is published to the broker.
    retain: bool = False
    #: Seconds the broker keeps this node's session (its queued QoS 1/2 messages) while
    #: the node is away.
    session_expiry: int = Field(default=3600, ge=0, le=0xFFFFFFFF)
    keepalive: int = Field(default=30, ge=5, le=65535)
    #: The longest wait between two attempts to reconnect, in seconds.
    reconnect_max: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("give mqtt://[user:pass@]host[:port] or mqtts://…")
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        return url

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if "+" in prefix or "#" in prefix or prefix.startswith("$"):
            raise ValueError("a topic prefix has no wildcard and does not start with $")
        return prefix

    @field_validator("outgoing", "incoming")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for text in patterns:
            try:
                Pattern.parse(text)
            except InvalidArgument as exc:
                raise ValueError(exc.message) from None
        return patterns

    @model_validator(mode="after")
    def _no_loop(self) -> MqttBridgeConfig:
        # A channel both sent and taken in would loop: an event out to the broker, back
        # in as a new event, out again. Disjoint channel sets make a loop impossible.
        for out in self.outgoing:
            for into in self.incoming:
                if Pattern.parse(out).overlaps(Pattern.parse(into)):
                    raise ValueError(
                        f"outgoing {out!r} and incoming {into!r} share channels: "
                        "a bridged channel goes one way only"
                    )
        return self


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
    #: The longest keep-alive an MQTT 5 client may use, in seconds: one asking for more
    #: (or for none, 0) is given this as Server Keep Alive in CONNACK, and is
    #: disconnected after 1.5 times it without a packet. 0: no cap (MQTT 3.1.1 clients,
    #: which cannot be told, keep theirs).
    max_keep_alive: int = Field(default=0, ge=0, le=65535)
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
    #: The bridge to an external broker (``[mqtt.bridge]``).
    bridge: MqttBridgeConfig = MqttBridgeConfig()
    #: Topic filters whose topics take any payload, untyped, without code (``["#"]``:
    #: every topic no event type takes), as an untyped event type would: generic MQTT
    #: tools and existing devices work beside the typed topics. Each filter is an event
    #: type of the node, ``mqtt.open`` (then ``mqtt.open.2``, …).
    open_topics: list[str] = Field(default_factory=list, max_length=64)
    #: The scopes a caller needs to read and publish open topics (development mode's
    #: anonymous caller has them all).
    open_scopes: list[str] = Field(default_factory=lambda: ["mqtt"])
