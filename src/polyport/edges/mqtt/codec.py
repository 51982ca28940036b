"""The MQTT 5.0 and 3.1.1 packet codec, sans I/O: bytes in, packets out, and back.

    FrameReader   bytes as they arrive → (first byte, body) of each whole packet;
                  the size limit applies as soon as the remaining length is read
    decode        (first byte, body, protocol level) → a packet of polyport.edges.mqtt.packets
    encode_*      what a server sends: CONNACK, PUBLISH, acks, SUBACK, UNSUBACK,
                  PINGRESP, DISCONNECT

Every decoding problem is a :class:`~polyport.edges.mqtt.packets.MqttError`
(malformed 0x81, protocol error 0x82, too large 0x95, unsupported version)
and never anything else: ``tests/mqtt/test_codec.py`` fuzzes it to hold it to that.
Why polyport has its own codec rather than a library's: ``docs/mqtt.md``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from polyport.edges.mqtt.packets import (
    V5,
    V311,
    Ack,
    Auth,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketTooLarge,
    PacketType,
    PingReq,
    ProtocolError,
    Publish,
    Subscribe,
    TopicSubscription,
    Unsubscribe,
    UnsupportedVersion,
    UserProperties,
    Will,
)

# Property identifiers (MQTT 5, 2.2.2.2) and the kind of value each carries.
PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
AUTH_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
WILL_DELAY = 0x18
REQUEST_RESPONSE_INFO = 0x19
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_AVAILABLE = 0x28
SUBSCRIPTION_ID_AVAILABLE = 0x29
SHARED_AVAILABLE = 0x2A

_BYTE, _TWO, _FOUR, _VARINT, _TEXT, _BINARY, _PAIR = range(7)
_KIND = {
    PAYLOAD_FORMAT: _BYTE,
    MESSAGE_EXPIRY: _FOUR,
    CONTENT_TYPE: _TEXT,
    RESPONSE_TOPIC: _TEXT,
    CORRELATION_DATA: _BINARY,
    SUBSCRIPTION_ID: _VARINT,
    SESSION_EXPIRY: _FOUR,
    AUTH_METHOD: _TEXT,
    AUTH_DATA: _BINARY,
    REQUEST_PROBLEM_INFO: _BYTE,
    WILL_DELAY: _FOUR,
    REQUEST_RESPONSE_INFO: _BYTE,
    SERVER_REFERENCE: _TEXT,
    REASON_STRING: _TEXT,
    RECEIVE_MAXIMUM: _TWO,
    TOPIC_ALIAS_MAXIMUM: _TWO,
    TOPIC_ALIAS: _TWO,
    USER_PROPERTY: _PAIR,
    MAXIMUM_PACKET_SIZE: _FOUR,
    # Sent by a server only.
    ASSIGNED_CLIENT_ID: _TEXT,
    SERVER_KEEP_ALIVE: _TWO,
    MAXIMUM_QOS: _BYTE,
    RETAIN_AVAILABLE: _BYTE,
    WILDCARD_AVAILABLE: _BYTE,
    SUBSCRIPTION_ID_AVAILABLE: _BYTE,
    SHARED_AVAILABLE: _BYTE,
}
#: The properties a client may send, per packet (``"will"``: a CONNECT's will properties).
_ALLOWED: dict[PacketType | str, frozenset[int]] = {
    PacketType.CONNECT: frozenset(
        {
            SESSION_EXPIRY,
            AUTH_METHOD,
            AUTH_DATA,
            REQUEST_PROBLEM_INFO,
            REQUEST_RESPONSE_INFO,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
        }
    ),
    "will": frozenset(
        {
            PAYLOAD_FORMAT,
            MESSAGE_EXPIRY,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            WILL_DELAY,
            USER_PROPERTY,
        }
    ),
    PacketType.PUBLISH: frozenset(
        {
            PAYLOAD_FORMAT,
            MESSAGE_EXPIRY,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            SUBSCRIPTION_ID,
            TOPIC_ALIAS,
            USER_PROPERTY,
        }
    ),
    PacketType.PUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    PacketType.SUBSCRIBE: frozenset({SUBSCRIPTION_ID, USER_PROPERTY}),
    PacketType.UNSUBSCRIBE: frozenset({USER_PROPERTY}),
    PacketType.DISCONNECT: frozenset(
        {SESSION_EXPIRY, REASON_STRING, USER_PROPERTY, SERVER_REFERENCE}
    ),
    PacketType.AUTH: frozenset({AUTH_METHOD, AUTH_DATA, REASON_STRING, USER_PROPERTY}),
}
for _kind in (PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP):
    _ALLOWED[_kind] = _ALLOWED[PacketType.PUBACK]
#: Properties that may appear more than once.
_REPEATABLE = frozenset({USER_PROPERTY, SUBSCRIPTION_ID})

#: The flags of the first byte each packet type must have (PUBLISH: any but QoS 3).
_FLAGS = {
    PacketType.CONNECT: 0,
    PacketType.PUBACK: 0,
    PacketType.PUBREC: 0,
    PacketType.PUBREL: 2,
    PacketType.PUBCOMP: 0,
    PacketType.SUBSCRIBE: 2,
    PacketType.UNSUBSCRIBE: 2,
    PacketType.PINGREQ: 0,
    PacketType.DISCONNECT: 0,
    PacketType.AUTH: 0,
}


# -- framing -------------------------------------------------------------------------------


class FrameReader:
    """Cuts a byte stream into packets, refusing one over ``max_size`` from its header alone.

    It holds at most the packet being read and what arrived after it: a
    client announcing 256 MiB gets :class:`PacketTooLarge` once the four
    bytes of its remaining length are in, not after we buffered its body.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next(self) -> tuple[int, bytes] | None:
        """The next whole packet's first byte and body, or None until more bytes arrive."""
        buffer = self.buffer
        size = len(buffer)
        if size < 2:
            return None
        length = 0
        shift = 0
        index = 1
        while True:
            if index >= size:
                return None
            byte = buffer[index]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            index += 1
            shift += 7
            if index > 4:
                raise MalformedPacket("the remaining length takes more than four bytes")
        total = index + 1 + length
        if total > self.max_size:
            raise PacketTooLarge(f"a packet of {total} bytes; at most {self.max_size}")
        if size < total:
            return None
        first = buffer[0]
        body = bytes(buffer[index + 1 : total])
        del buffer[:total]
        return first, body


# -- decoding ------------------------------------------------------------------------------


class _Body:
    """A packet's body, read front to back; running short is a malformed packet."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedPacket("the packet ends early")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def two(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def four(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise MalformedPacket("a variable byte integer takes more than four bytes")

    def binary(self) -> bytes:
        return self.take(self.two())

    def text(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")  # strict: surrogates are refused too
        except UnicodeDecodeError:
            raise MalformedPacket("a string is not valid UTF-8") from None
        if "\x00" in text:
            raise MalformedPacket("a string contains U+0000")
        return text

    def properties(self, packet: PacketType | str) -> dict[int, object]:
        """The properties of ``packet``: user properties as a list of pairs under 0x26."""
        length = self.varint()
        end = self.pos + length
        if end > len(self.data):
            raise MalformedPacket("the properties run past the packet")
        allowed = _ALLOWED[packet]
        found: dict[int, object] = {}
        pairs: list[tuple[str, str]] = []
        ids: list[int] = []
        while self.pos < end:
            key = self.varint()
            if key not in allowed:
                raise MalformedPacket(f"property 0x{key:02x} is not valid here")
            if key in found and key not in _REPEATABLE:
                raise ProtocolError(f"property 0x{key:02x} appears twice")
            kind = _KIND[key]
            value: object
            if kind == _BYTE:
                value = self.byte()
            elif kind == _TWO:
                value = self.two()
            elif kind == _FOUR:
                value = self.four()
            elif kind == _VARINT:
                value = self.varint()
            elif kind == _TEXT:
                value = self.text()
            elif kind == _BINARY:
                value = self.binary()
            else:
                pairs.append((self.text(), self.text()))
                found[key] = pairs
                continue
            if key == SUBSCRIPTION_ID:
                if value == 0:
                    raise ProtocolError("a subscription identifier of 0")
                ids.append(value)  # type: ignore[arg-type]
                value = ids
            found[key] = value
        if self.pos != end:
            raise MalformedPacket("a property runs past the properties")
        return found

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedPacket("bytes left over at the end of the packet")


def _flag(properties: dict[int, object], key: int, default: bool) -> bool:
    value = properties.get(key)
    if value is None:
        return default
    if value not in (0, 1):
        raise ProtocolError(f"property 0x{key:02x} is {value}; 0 or 1 only")
    return value == 1


def pairs_of(properties: dict[int, object]) -> UserProperties:
    pairs = properties.get(USER_PROPERTY)
    return tuple(pairs) if isinstance(pairs, list) else ()


def decode_connect(body: bytes) -> Connect:
    """A CONNECT, which says the protocol level the rest of the connection speaks."""
    data = _Body(body)
    name = data.binary()
    level = data.byte()
    if name != b"MQTT":
        if name == b"MQIsdp" and level == 3:
            raise UnsupportedVersion("MQTT 3.1 (MQIsdp) is not supported; use 3.1.1 or 5.0")
        raise ProtocolError(f"unknown protocol name {name[:16]!r}")
    if level not in (V311, V5):
        raise UnsupportedVersion(f"protocol level {level} is not supported; 4 (3.1.1) or 5 only")
    flags = data.byte()
    if flags & 0x01:
        raise MalformedPacket("the reserved CONNECT flag is set")
    clean = bool(flags & 0x02)
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if will_qos == 3:
        raise MalformedPacket("a will QoS of 3")
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain without a will")
    if level == V311 and has_password and not has_username:
        raise MalformedPacket("a password without a user name (MQTT 3.1.1)")
    keep_alive = data.two()
    properties = data.properties(PacketType.CONNECT) if level == V5 else {}
    client_id = data.text()
    will = None
    if has_will:
        will_properties = data.properties("will") if level == V5 else {}
        topic = data.text()
        payload = data.binary()
        delay = will_properties.pop(WILL_DELAY, 0)
        will = Will(topic, payload, will_qos, will_retain, int(delay), will_properties)  # type: ignore[call-overload]
    username = data.text() if has_username else None
    password = data.binary() if has_password else None
    data.end()
    receive_maximum = properties.get(RECEIVE_MAXIMUM, 65535)
    if receive_maximum == 0:
        raise ProtocolError("a Receive Maximum of 0")
    maximum_packet_size = properties.get(MAXIMUM_PACKET_SIZE)
    if maximum_packet_size == 0:
        raise ProtocolError("a Maximum Packet Size of 0")
    method = properties.get(AUTH_METHOD)
    _flag(properties, REQUEST_RESPONSE_INFO, False)
    return Connect(
        level=level,
        client_id=client_id,
        clean_start=clean,
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        session_expiry=int(properties.get(SESSION_EXPIRY, 0)),  # type: ignore[call-overload]
        receive_maximum=int(receive_maximum),  # type: ignore[call-overload]
        maximum_packet_size=None if maximum_packet_size is None else int(maximum_packet_size),  # type: ignore[call-overload]
        topic_alias_maximum=int(properties.get(TOPIC_ALIAS_MAXIMUM, 0)),  # type: ignore[call-overload]
        request_problem_information=_flag(properties, REQUEST_PROBLEM_INFO, True),
        authentication_method=method if isinstance(method, str) else None,
        user_properties=pairs_of(properties),
    )


def _packet_id(data: _Body) -> int:
    packet_id = data.two()
    if packet_id == 0:
        raise MalformedPacket("a packet identifier of 0")
    return packet_id


def _publish(flags: int, body: bytes, level: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("a PUBLISH of QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("the DUP flag on a QoS 0 PUBLISH")
    data = _Body(body)
    topic = data.text()
    packet_id = _packet_id(data) if qos else None
    properties = data.properties(PacketType.PUBLISH) if level == V5 else {}
    payload = data.data[data.pos :]
    payload_format = int(properties.get(PAYLOAD_FORMAT, 0))  # type: ignore[call-overload]
    if payload_format not in (0, 1):
        raise ProtocolError(f"a payload format indicator of {payload_format}")
    content_type = properties.get(CONTENT_TYPE)
    response_topic = properties.get(RESPONSE_TOPIC)
    correlation = properties.get(CORRELATION_DATA)
    alias = properties.get(TOPIC_ALIAS)
    expiry = properties.get(MESSAGE_EXPIRY)
    ids = properties.get(SUBSCRIPTION_ID)
    return Publish(
        topic=topic,
        payload=payload,
        qos=qos,
        retain=bool(flags & 0x01),
        dup=dup,
        packet_id=packet_id,
        payload_format=payload_format,
        message_expiry=expiry if isinstance(expiry, int) else None,
        content_type=content_type if isinstance(content_type, str) else None,
        response_topic=response_topic if isinstance(response_topic, str) else None,
        correlation_data=correlation if isinstance(correlation, bytes) else None,
        topic_alias=alias if isinstance(alias, int) else None,
        subscription_ids=tuple(ids) if isinstance(ids, list) else (),
        user_properties=pairs_of(properties),
    )


def _ack(kind: PacketType, body: bytes, level: int) -> Ack:
    data = _Body(body)
    packet_id = _packet_id(data)
    reason = 0
    if level == V5 and data.left:
        reason = data.byte()
        if data.left:
            data.properties(kind)
    data.end()
    return Ack(kind, packet_id, reason)


def _subscribe(body: bytes, level: int) -> Subscribe:
    data = _Body(body)
    packet_id = _packet_id(data)
    properties = data.properties(PacketType.SUBSCRIBE) if level == V5 else {}
    topics = []
    while data.left:
        topic = data.text()
        options = data.byte()
        if level == V311 and options & 0xFC:
            raise MalformedPacket("reserved subscription option bits are set")
        if options & 0xC0:
            raise MalformedPacket("reserved subscription option bits are set")
        qos = options & 0x03
        if qos == 3:
            raise MalformedPacket("a subscription of QoS 3")
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise ProtocolError("a retain handling of 3")
        topics.append(
            TopicSubscription(
                topic, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
            )
        )
    if not topics:
        raise ProtocolError("a SUBSCRIBE without a topic filter")
    ids = properties.get(SUBSCRIPTION_ID)
    return Subscribe(packet_id, tuple(topics), ids[0] if isinstance(ids, list) else None)


def _unsubscribe(body: bytes, level: int) -> Unsubscribe:
    data = _Body(body)
    packet_id = _packet_id(data)
    if level == V5:
        data.properties(PacketType.UNSUBSCRIBE)
    filters = []
    while data.left:
        filters.append(data.text())
    if not filters:
        raise ProtocolError("an UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters))


def _disconnect(body: bytes, level: int) -> Disconnect:
    data = _Body(body)
    if level == V311 or not data.left:
        data.end()
        return Disconnect()
    reason = data.byte()
    properties = data.properties(PacketType.DISCONNECT) if data.left else {}
    data.end()
    expiry = properties.get(SESSION_EXPIRY)
    return Disconnect(reason, expiry if isinstance(expiry, int) else None)


def decode(first: int, body: bytes, level: int) -> Packet:
    """The packet of a frame, on a connection that speaks protocol ``level``."""
    try:
        kind = PacketType(first >> 4)
    except ValueError:
        raise MalformedPacket("packet type 0 is reserved") from None
    flags = first & 0x0F
    if kind is PacketType.PUBLISH:
        return _publish(flags, body, level)
    expected = _FLAGS.get(kind)
    if expected is None:
        raise ProtocolError(f"a client does not send {kind.name}")
    if flags != expected:
        raise MalformedPacket(f"wrong fixed header flags on {kind.name}")
    if kind is PacketType.CONNECT:
        return decode_connect(body)
    if kind in (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP):
        return _ack(kind, body, level)
    if kind is PacketType.SUBSCRIBE:
        return _subscribe(body, level)
    if kind is PacketType.UNSUBSCRIBE:
        return _unsubscribe(body, level)
    if kind is PacketType.PINGREQ:
        if body:
            raise MalformedPacket("a PINGREQ with a body")
        return PingReq()
    if kind is PacketType.DISCONNECT:
        return _disconnect(body, level)
    if level != V5:
        raise MalformedPacket("AUTH is an MQTT 5 packet")
    data = _Body(body)
    reason = data.byte() if data.left else 0
    if data.left:
        data.properties(PacketType.AUTH)
    data.end()
    return Auth(reason)


# -- encoding ------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def binary(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def properties(items: list[tuple[int, object]]) -> bytes:
    """MQTT 5 properties, length first, in the order given."""
    out = bytearray()
    for key, value in items:
        out += varint(key)
        kind = _KIND[key]
        if kind == _BYTE:
            out.append(int(value))  # type: ignore[call-overload]
        elif kind == _TWO:
            out += struct.pack("!H", value)
        elif kind == _FOUR:
            out += struct.pack("!I", value)
        elif kind == _VARINT:
            out += varint(int(value))  # type: ignore[call-overload]
        elif kind == _TEXT:
            out += text(str(value))
        elif kind == _BINARY:
            out += binary(bytes(value))  # type: ignore[call-overload]
        else:
            pair: tuple[str, str] = value  # type: ignore[assignment]
            out += text(pair[0]) + text(pair[1])
    return varint(len(out)) + bytes(out)


def reason_properties(reason_string: str | None) -> list[tuple[int, object]]:
    return [] if reason_string is None else [(REASON_STRING, reason_string)]


def encode_connack(
    level: int,
    code: int,
    *,
    session_present: bool = False,
    props: list[tuple[int, object]] | None = None,
) -> bytes:
    """CONNACK: ``code`` is a 3.1.1 return code or an MQTT 5 reason code, as ``level`` says."""
    body = bytes((1 if session_present else 0, code))
    if level == V5:
        body += properties(props or [])
    return frame(0x20, body)


def encode_ack(
    level: int, kind: PacketType, packet_id: int, reason: int = 0, reason_string: str | None = None
) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (short forms when the reason is success)."""
    first = (kind << 4) | (2 if kind is PacketType.PUBREL else 0)
    body = struct.pack("!H", packet_id)
    if level == V5 and (reason or reason_string):
        body += bytes((reason,))
        if reason_string:
            body += properties(reason_properties(reason_string))
    return frame(first, body)


def encode_suback(level: int, packet_id: int, codes: Sequence[int]) -> bytes:
    body = struct.pack("!H", packet_id)
    if level == V5:
        body += b"\x00"
    return frame(0x90, body + bytes(codes))


def encode_unsuback(level: int, packet_id: int, codes: Sequence[int]) -> bytes:
    body = struct.pack("!H", packet_id)
    if level == V5:
        body += b"\x00" + bytes(codes)
    return frame(0xB0, body)


PINGRESP = b"\xd0\x00"


def encode_disconnect(reason: int, reason_string: str | None = None) -> bytes:
    """An MQTT 5 DISCONNECT (3.1.1 has none from the server: it closes the connection)."""
    if not reason and not reason_string:
        return b"\xe0\x00"
    return frame(0xE0, bytes((reason,)) + properties(reason_properties(reason_string)))


def publish_head(qos: int, retain: bool, dup: bool = False) -> int:
    return 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)


def encode_publish(
    topic: bytes, tail: bytes, *, qos: int, packet_id: int | None, retain: bool = False
) -> bytes:
    """A PUBLISH from its encoded topic (length first) and ``tail``: properties and payload
    (MQTT 5) or the payload alone (3.1.1), as encoded once for every subscriber."""
    middle = topic if not qos else topic + struct.pack("!H", packet_id)
    size = len(middle) + len(tail)
    return bytes((publish_head(qos, retain),)) + varint(size) + middle + tail
