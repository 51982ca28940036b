"""What a client receives: events as PUBLISH packets, flow-controlled, QoS 0, 1 and 2.

    event ─▶ PUBLISH (encoded once per event and protocol version) ─▶ socket
                              QoS 1: wait for PUBACK    QoS 2: PUBREC ▸ PUBREL ▸ PUBCOMP

Memory stays bounded for a client that does not keep up:

* at most ``window`` QoS 1 and 2 messages are unacknowledged at once (the
  smaller of ``mqtt.max_inflight`` and the client's Receive Maximum); a
  subscription waits for a free slot, and meanwhile the hub's subscription
  buffer (``limits.subscriber_buffer``) fills and then falls back to reading
  from the event log, which costs no memory per client;
* writes wait while the socket's buffer is full, at most ``send_timeout``
  seconds, after which the client is disconnected;
* a client that falls further behind than the history kept is disconnected
  (MQTT 5: reason 0x97, with a reason string) — never silently skipped ahead.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass

from polyport.core.events import Event
from polyport.core.raw import RawMessage
from polyport.edges.mqtt.codec import (
    CONTENT_TYPE,
    CORRELATION_DATA,
    MESSAGE_EXPIRY,
    PAYLOAD_FORMAT,
    RESPONSE_TOPIC,
    SUBSCRIPTION_ID,
    TOPIC_ALIAS,
    USER_PROPERTY,
    encode_ack,
    encode_publish,
    properties,
    publish_head,
    text,
    varint,
)
from polyport.edges.mqtt.packets import V5, V311, PacketType, Reason
from polyport.edges.mqtt.streams import PacketWriter
from polyport.edges.mqtt.topics import channel_to_topic

CONTENT = "application/json"
_TOPIC = "mqtt-topic"
_TAIL_V5 = "mqtt5"
_TAIL_V311 = "mqtt311-untyped"


def event_parts(
    event: Event, level: int, untyped: frozenset[str] = frozenset()
) -> tuple[bytes, bytes]:
    """The event's topic and what follows the packet id, encoded once for every client.

    MQTT 5 carries the envelope's id and type as user properties beside the
    data (``event-id``, ``event-type``), with content type ``application/json``.
    An event of an untyped type (named in ``untyped``) goes out as it came in:
    its topic, its payload, and the properties its publisher gave, nothing added.
    """
    if event.type in untyped:
        return _untyped_parts(event, level)
    wire = event.wire
    topic = wire.get(_TOPIC)
    if topic is None:
        topic = wire[_TOPIC] = text(event.channel)
    if level != V5:
        return topic, event.data
    tail = wire.get(_TAIL_V5)
    if tail is None:
        tail = wire[_TAIL_V5] = (
            properties(
                [
                    (PAYLOAD_FORMAT, 1),
                    (CONTENT_TYPE, CONTENT),
                    (USER_PROPERTY, ("event-id", event.id)),
                    (USER_PROPERTY, ("event-type", event.type)),
                ]
            )
            + event.data
        )
    return topic, tail


_UNTYPED_V5 = "mqtt5-untyped"


def _untyped_parts(event: Event, level: int) -> tuple[bytes, bytes]:
    wire = event.wire
    topic = wire.get(_TOPIC)
    if topic is None:
        topic = wire[_TOPIC] = text(channel_to_topic(event.channel))
    key = _UNTYPED_V5 if level == V5 else _TAIL_V311
    tail = wire.get(key)
    if tail is None:
        message = RawMessage.model_validate_json(event.data)
        tail = message.payload
        if level == V5:
            props: list[tuple[int, object]] = []
            if message.payload_format is not None:
                props.append((PAYLOAD_FORMAT, message.payload_format))
            if message.content_type is not None:
                props.append((CONTENT_TYPE, message.content_type))
            if message.response_topic is not None:
                props.append((RESPONSE_TOPIC, message.response_topic))
            if message.correlation is not None:
                props.append((CORRELATION_DATA, message.correlation))
            props.extend((USER_PROPERTY, tuple(pair)) for pair in message.user_properties or ())
            tail = properties(props) + tail
        wire[key] = tail
    return topic, tail


_FLAGS = "mqtt-flags"


def untyped_flags(event: Event) -> tuple[int, bool]:
    """An untyped event's QoS and RETAIN as published (a typed event's: 2 and True, as
    every event is durable and its channel's retained message when published)."""
    flags = event.wire.get(_FLAGS)
    if flags is None:
        message = RawMessage.model_validate_json(event.data)
        qos = 2 if message.qos is None else message.qos
        flags = event.wire[_FLAGS] = bytes((qos, 1 if message.retain else 0))
    return flags[0], bool(flags[1])


_EXPIRES = "mqtt-expires"


def expires_at(event: Event, untyped: frozenset[str]) -> float | None:
    """When an untyped event published with a Message Expiry Interval expires (Unix
    seconds), or None: typed events, and untyped ones without, do not."""
    if event.type not in untyped:
        return None
    cached = event.wire.get(_EXPIRES)
    if cached is None:
        expiry = RawMessage.model_validate_json(event.data).expiry
        cached = event.wire[_EXPIRES] = (
            b"" if expiry is None else repr(event.time + expiry).encode()
        )
    return float(cached) if cached else None


def with_property(tail: bytes, encoded: bytes) -> bytes:
    """An MQTT 5 PUBLISH's ``tail`` (properties, payload) with one more property first,
    ``encoded`` (its identifier and value)."""
    length = shift = used = 0
    while True:
        byte = tail[used]
        length |= (byte & 0x7F) << shift
        shift, used = shift + 7, used + 1
        if not byte & 0x80:
            break
    return varint(length + len(encoded)) + encoded + tail[used:]


def with_alias(tail: bytes, alias: int) -> bytes:
    """An MQTT 5 PUBLISH's ``tail`` with a Topic Alias added first."""
    return with_property(tail, bytes((TOPIC_ALIAS,)) + struct.pack("!H", alias))


def with_subscription_id(tail: bytes, subscription_id: int) -> bytes:
    """An MQTT 5 PUBLISH's ``tail`` with the Subscription Identifier of its filter."""
    return with_property(tail, varint(SUBSCRIPTION_ID) + varint(subscription_id))


_NO_TOPIC = b"\x00\x00"

#: Bytes of PUBLISH packets a batch holds before writing them in one write and waiting
#: while the socket's buffer is full: what a batch adds to that buffer, at most.
HOLD_BYTES = 64 * 1024

#: event.wire keys of a PUBLISH's fixed part (header byte, remaining length, topic):
#: one per protocol level, QoS and RETAIN, encoded once for every subscriber.
_HEADS = {
    (level, qos, retain): f"mqtt-head-{level}-{qos}-{int(retain)}"
    for level in (V311, V5)
    for qos in (0, 1, 2)
    for retain in (False, True)
}


@dataclass(slots=True)
class Inflight:
    """One PUBLISH we sent that the client has not acknowledged in full yet.

    ``stage`` is 1 (awaiting PUBACK), 2 (awaiting PUBREC) or 3 (awaiting
    PUBCOMP); ``topic``, ``tail`` and ``retain`` make the PUBLISH again (DUP
    set, no topic alias: aliases end with their connection) when the session
    resumes; ``source`` and ``seq`` say which filter delivered which event
    (``seq`` 0 for what is not read from the log after the filter's cursor), so
    a session written to the records store resumes that filter from before it.
    """

    stage: int
    topic: bytes
    tail: bytes
    retain: bool
    source: str
    seq: int


class Outbox:
    """One client's outgoing PUBLISH packets and its unacknowledged ones."""

    def __init__(
        self,
        writer: PacketWriter,
        level: int,
        *,
        window: int,
        max_packet: int | None,
        send_timeout: float,
        alias_maximum: int = 0,
        untyped: frozenset[str] = frozenset(),
    ) -> None:
        self.writer = writer
        #: The untyped event types' names: their events go out as they came in.
        self.untyped = untyped
        self.level = level
        self.max_packet = max_packet
        self.send_timeout = send_timeout
        self.slots = asyncio.Semaphore(window)
        #: Packet id → the unacknowledged PUBLISH (or PUBREL) it names.
        self.inflight: dict[int, Inflight] = {}
        self._last_id = 0
        #: Slots resumed messages took beyond the window, given back before any is freed.
        self._debt = 0
        #: Events not sent because the client's Maximum Packet Size is smaller.
        self.too_large = 0
        #: Set whenever a slot is freed (shared subscription groups wait on them).
        self.waiters: set[asyncio.Event] = set()
        #: Topic aliases we gave (MQTT 5): the client's Topic Alias Maximum of them, the
        #: first topics sent, for the whole connection.
        self.alias_maximum = alias_maximum if level == V5 else 0
        self.aliases: dict[bytes, int] = {}
        #: PUBLISH packets (in pieces) held to go out in one write: see :meth:`deliver`.
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes) -> None:
        if self._held:
            self.flush()  # what was held goes first
        if not self.writer.is_closing():
            self.writer.write(data)

    @property
    def held_full(self) -> bool:
        """Whether :attr:`HOLD_BYTES` or more are held: time for :meth:`drain`."""
        return self._held_bytes >= HOLD_BYTES

    def flush(self) -> None:
        """Write the held packets, in one write."""
        held = self._held
        if held:
            data = b"".join(held)
            held.clear()
            self._held_bytes = 0
            if not self.writer.is_closing():
                self.writer.write(data)

    async def drain(self) -> None:
        """Write what is held, then wait while the client reads; :class:`TimeoutError`
        after ``send_timeout`` seconds."""
        self.flush()
        async with asyncio.timeout(self.send_timeout):
            await self.writer.drain()

    def _next_id(self) -> int:
        packet_id = self._last_id
        while True:
            packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                self._last_id = packet_id
                return packet_id

    async def ready(self, qos: int) -> None:
        """Wait for a free slot in the window, if a message at ``qos`` needs one.

        Cancelled while waiting, it took no slot: nothing was sent. What is held is
        written first, before waiting, as the client must see it to free a slot.
        """
        if qos:
            if self.slots.locked():
                self.flush()
            await self.slots.acquire()

    def deliver(
        self,
        event: Event,
        qos: int,
        source: str,
        seq: int,
        *,
        retain: bool = False,
        subscription_id: int | None = None,
        hold: bool = False,
    ) -> bool:
        """:meth:`put` for an event, after :meth:`ready`: whether it went out.

        With ``hold``, the PUBLISH is kept to go out with the next ones in one write
        (:meth:`flush`, :meth:`drain`, or any other write, which comes after it); the
        caller flushes before it waits for anything, so nothing is held while it is
        suspended. A PUBLISH that is the same for every subscriber but its packet id
        (no expiry, topic alias or subscription identifier in it) is made from parts
        encoded once per event.
        """
        untyped = self.untyped
        level = self.level
        topic, tail = event_parts(event, level, untyped)
        expires = expires_at(event, untyped)
        held = self._held
        if (
            expires is not None
            or self.alias_maximum
            or (subscription_id is not None and level == V5)
        ):
            packet = self._packet(
                topic,
                tail,
                qos,
                source,
                seq,
                retain=retain,
                subscription_id=subscription_id,
                expires=expires,
            )
            if packet is None:
                return False
            held.append(packet)
            self._held_bytes += len(packet)
            if not hold:
                self.flush()
            return True
        key = _HEADS[level, qos, retain]
        wire = event.wire
        head = wire.get(key)
        if head is None:
            middle = len(topic) + 2 if qos else len(topic)
            head = wire[key] = (
                bytes((publish_head(qos, retain),)) + varint(middle + len(tail)) + topic
            )
        size = len(head) + len(tail) + (2 if qos else 0)
        if self.max_packet is not None and size > self.max_packet:
            self.too_large += 1  # as the client asked: dropped as if delivered (3.1.2.11.4)
            if qos:
                self.slots.release()
            return False
        if qos:
            packet_id = self._next_id()
            self.inflight[packet_id] = Inflight(qos, topic, tail, retain, source, seq)
            held += (head, packet_id.to_bytes(2, "big"), tail)
        else:
            held += (head, tail)
        self._held_bytes += size
        if not hold:
            self.flush()
        return True

    def put(
        self,
        topic: bytes,
        tail: bytes,
        qos: int,
        source: str,
        seq: int,
        *,
        retain: bool = False,
        subscription_id: int | None = None,
        expires: float | None = None,
    ) -> bool:
        """Write one PUBLISH, after :meth:`ready`: whether it went out (not too large,
        not expired).

        ``subscription_id``: the Subscription Identifier of the filter it matched
        (MQTT 5; part of the message, so sent again with it). ``expires``: when the
        message expires (:func:`expires_at`): dropped after, and sent with the
        seconds it has left as its Message Expiry Interval (MQTT 3.3.2.3.3).
        """
        packet = self._packet(
            topic,
            tail,
            qos,
            source,
            seq,
            retain=retain,
            subscription_id=subscription_id,
            expires=expires,
        )
        if packet is None:
            return False
        self.write(packet)
        return True

    def _packet(
        self,
        topic: bytes,
        tail: bytes,
        qos: int,
        source: str,
        seq: int,
        *,
        retain: bool,
        subscription_id: int | None,
        expires: float | None,
    ) -> bytes | None:
        """The PUBLISH :meth:`put` writes (its packet id taken), or None if it goes not."""
        if expires is not None:
            left = int(expires - time.time())
            if left <= 0:
                if qos:
                    self.slots.release()
                return None
            if self.level == V5:
                tail = with_property(tail, bytes((MESSAGE_EXPIRY,)) + struct.pack("!I", left))
        if subscription_id is not None and self.level == V5:
            tail = with_subscription_id(tail, subscription_id)
        wire_topic, wire_tail, new_alias = topic, tail, False
        if self.alias_maximum:
            alias = self.aliases.get(topic)
            if alias is None and len(self.aliases) < self.alias_maximum:
                alias = self.aliases[topic] = len(self.aliases) + 1
                new_alias = True  # this PUBLISH names the topic and sets its alias
            elif alias is not None:
                wire_topic = _NO_TOPIC
            if alias is not None:
                wire_tail = with_alias(tail, alias)
        packet_id = self._next_id() if qos else None
        packet = encode_publish(wire_topic, wire_tail, qos=qos, packet_id=packet_id, retain=retain)
        if self.max_packet is not None and len(packet) > self.max_packet:
            # As the client asked: dropped as if delivered (3.1.2.11.4).
            self.too_large += 1
            if new_alias:
                del self.aliases[topic]  # the client never learnt it
            if qos:
                self.slots.release()
            return None
        if packet_id is not None:
            self.inflight[packet_id] = Inflight(qos, topic, tail, retain, source, seq)
        return packet

    async def _take_slot(self) -> None:
        """Take a slot without waiting: over the window if none is free."""
        if self.slots.locked():
            self._debt += 1
        else:
            await self.slots.acquire()  # free: returns at once

    async def put_now(self, topic: bytes, tail: bytes, qos: int, source: str, seq: int) -> None:
        """:meth:`put` without waiting for a slot (a notice the client must get before
        the events it is about, and before the window frees)."""
        if qos:
            await self._take_slot()
        self.put(topic, tail, qos, source, seq)

    async def send(self, event: Event, qos: int, source: str = "") -> None:
        """Send one event at ``qos``, once a slot is free if it needs acknowledging."""
        if event.type in self.untyped:
            qos = min(qos, untyped_flags(event)[0])
        await self.ready(qos)
        self.deliver(event, qos, source, event.seq)
        await self.drain()

    async def resume(self, inflight: dict[int, Inflight]) -> None:
        """Send a resumed session's unacknowledged messages again, in order: a PUBLISH
        with DUP set, a PUBREL for one the client received already (MQTT 4.4)."""
        for packet_id, entry in inflight.items():
            self.inflight[packet_id] = entry
            self._last_id = packet_id
            # Over the window when the new connection's is smaller: the client had
            # these before, and they are few (at most the old window).
            await self._take_slot()
            if entry.stage == 3:
                self.write(encode_ack(self.level, PacketType.PUBREL, packet_id))
            else:
                packet = encode_publish(
                    entry.topic,
                    entry.tail,
                    qos=entry.stage,
                    packet_id=packet_id,
                    retain=entry.retain,
                )
                self.write(bytes((packet[0] | 0x08,)) + packet[1:])  # DUP

    def _settle(self, packet_id: int) -> None:
        del self.inflight[packet_id]
        if self._debt:
            self._debt -= 1
        else:
            self.slots.release()
        for waiter in self.waiters:
            waiter.set()

    def acked(self, kind: PacketType, packet_id: int, reason: int) -> None:
        """A PUBACK, PUBREC or PUBCOMP from the client for one of our PUBLISH packets."""
        entry = self.inflight.get(packet_id)
        stage = entry.stage if entry is not None else 0
        if kind is PacketType.PUBACK:
            if stage == 1:
                self._settle(packet_id)
        elif kind is PacketType.PUBREC:
            if entry is not None and stage == 2 and reason < 0x80:
                entry.stage = 3
                self.write(encode_ack(self.level, PacketType.PUBREL, packet_id))
            elif stage == 2:
                self._settle(packet_id)  # refused by the client: the flow ends here
            elif stage == 3:
                self.write(encode_ack(self.level, PacketType.PUBREL, packet_id))
            else:
                self.write(
                    encode_ack(
                        self.level,
                        PacketType.PUBREL,
                        packet_id,
                        Reason.PACKET_IDENTIFIER_NOT_FOUND,
                    )
                )
        elif kind is PacketType.PUBCOMP and stage == 3:
            self._settle(packet_id)
