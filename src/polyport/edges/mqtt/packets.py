"""MQTT control packets as values, and the reason codes the edge answers with.

One set of classes for both protocol versions: a field MQTT 3.1.1 does not
have (properties, reason codes) keeps its default there. Only the packets a
server *receives* are decoded into these; what it sends is encoded directly
(see :mod:`polyport.edges.mqtt.codec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

#: The protocol levels of the CONNECT packet.
V311 = 4
V5 = 5

UserProperties = tuple[tuple[str, str], ...]


class Reason(IntEnum):
    """MQTT 5 reason codes (the subset a server sends), by their specification names."""

    SUCCESS = 0x00
    DISCONNECT_WITH_WILL = 0x04
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SERVER_SHUTTING_DOWN = 0x8B
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1


class ConnectReturn(IntEnum):
    """MQTT 3.1.1 CONNACK return codes."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


#: MQTT 3.1.1 SUBACK's one failure code.
SUBACK_FAILURE = 0x80


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    delay: int = 0
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connect:
    level: int
    client_id: str
    clean_start: bool
    keep_alive: int
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    session_expiry: int = 0
    receive_maximum: int = 65535
    maximum_packet_size: int | None = None
    topic_alias_maximum: int = 0
    request_problem_information: bool = True
    authentication_method: str | None = None
    user_properties: UserProperties = ()


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    payload_format: int = 0
    message_expiry: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    topic_alias: int | None = None
    subscription_ids: tuple[int, ...] = ()
    user_properties: UserProperties = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP: which one is ``kind``."""

    kind: PacketType
    packet_id: int
    reason: int = 0


@dataclass(frozen=True, slots=True)
class TopicSubscription:
    """One topic filter of a SUBSCRIBE and its options."""

    filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    #: The SUBSCRIBE's Subscription Identifier (MQTT 5), sent with each matching PUBLISH.
    subscription_id: int | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    topics: tuple[TopicSubscription, ...]
    subscription_id: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PingReq:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int = 0
    session_expiry: int | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    reason: int = 0


Packet = Connect | Publish | Ack | Subscribe | Unsubscribe | PingReq | Disconnect | Auth


class MqttError(Exception):
    """A packet the server cannot accept: MQTT 5 ends the connection with ``reason``."""

    reason = Reason.PROTOCOL_ERROR

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedPacket(MqttError):
    """The bytes do not form a valid packet (0x81)."""

    reason = Reason.MALFORMED_PACKET


class ProtocolError(MqttError):
    """A well-formed packet that breaks a rule of the protocol (0x82)."""

    reason = Reason.PROTOCOL_ERROR


class PacketTooLarge(MqttError):
    """The fixed header announces more than the maximum packet size (0x95)."""

    reason = Reason.PACKET_TOO_LARGE


class UnsupportedVersion(MqttError):
    """A CONNECT of a protocol level this server does not speak."""

    reason = Reason.UNSUPPORTED_PROTOCOL_VERSION
