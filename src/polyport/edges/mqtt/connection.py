"""One MQTT client connection: CONNECT, then packets in order until it ends.

    stream ─▶ FrameReader ─▶ decode ─▶ CONNECT    authenticate (password: API key or JWT);
                                                  a kept session resumed (.sessions)
                                       PUBLISH    → an event through the core, acked once
                                                  durable (.inbound)
                                       SUBSCRIBE  → a hub subscription per filter, pumped
                                                  out, or a shared group (.filters)
                                       UNSUBSCRIBE, PINGREQ, DISCONNECT, acks of what we sent

The stream is TCP or a WebSocket (:mod:`.streams`): one state machine for both.

Before CONNECT nothing costs more than a bounded read: the whole CONNECT
must arrive within ``mqtt.connect_timeout`` seconds, its first byte must be
CONNECT's, and no packet larger than ``mqtt.max_packet`` is buffered.
Anything a client does wrong ends its connection as the specification asks
(MQTT 5: a DISCONNECT with the reason code first) and never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field, replace

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.core.context import Principal
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.errors import (
    PermissionDenied,
    ServiceError,
)
from polyport.core.hub import EventHub
from polyport.core.metrics import Metrics
from polyport.core.runtime import EventCodec
from polyport.edges.mqtt.calls import MethodCalls, is_call
from polyport.edges.mqtt.codec import (
    ASSIGNED_CLIENT_ID,
    MAXIMUM_PACKET_SIZE,
    PINGRESP,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    SESSION_EXPIRY,
    SUBSCRIPTION_ID_AVAILABLE,
    TOPIC_ALIAS_MAXIMUM,
    FrameReader,
    decode,
    decode_connect,
    encode_ack,
    encode_connack,
    encode_disconnect,
    encode_suback,
    encode_unsuback,
)
from polyport.edges.mqtt.config import MqttConfig
from polyport.edges.mqtt.errors import connect_refusal, message_of
from polyport.edges.mqtt.filters import GAPS_TOPIC, ClientFilters, Filter
from polyport.edges.mqtt.inbound import Metadata, clear_retained, publish_event
from polyport.edges.mqtt.outbound import Outbox
from polyport.edges.mqtt.packets import (
    SUBACK_FAILURE,
    V5,
    V311,
    Ack,
    Auth,
    Connect,
    ConnectReturn,
    Disconnect,
    MqttError,
    PacketType,
    PingReq,
    ProtocolError,
    Publish,
    Reason,
    Subscribe,
    Unsubscribe,
    UnsupportedVersion,
    Will,
)
from polyport.edges.mqtt.retained import RetainedEvents
from polyport.edges.mqtt.sessions import Session, SessionStore
from polyport.edges.mqtt.shared import SharedGroups
from polyport.edges.mqtt.streams import PacketReader, PacketWriter
from polyport.edges.mqtt.topics import (
    TopicRoutes,
    check_filter,
    topic_name_is_valid,
)
from polyport.edges.mqtt.wills import DelayedWills

log = logging.getLogger("polyport.mqtt")

EDGE = "mqtt"
CHUNK = 64 * 1024
#: After a DISCONNECT for the client's own fault, what it still sends is read and
#: dropped for at most this many seconds (and bytes) before the socket closes: closed
#: with unread data, TCP resets, and a client still writing would lose our
#: DISCONNECT to the reset before reading it.
LINGER = 1.0
LINGER_BYTES = 1 << 20
_CONNACK_V311_UNSUPPORTED = encode_connack(V311, ConnectReturn.UNACCEPTABLE_PROTOCOL_VERSION)


@dataclass
class Broker:
    """What every connection of one listener shares."""

    config: MqttConfig
    dispatcher: Dispatcher
    hub: EventHub
    codec: EventCodec
    metrics: Metrics
    routes: TopicRoutes
    dev: bool
    sessions: SessionStore
    retained: RetainedEvents
    groups: SharedGroups
    #: Wills waiting for their Will Delay Interval.
    wills: DelayedWills = field(default_factory=DelayedWills)
    #: Open connections, and the connected ones by (subject, client id) for takeovers.
    connections: set[MqttConnection] = field(default_factory=set)
    clients: dict[tuple[str, str], MqttConnection] = field(default_factory=dict)


#: Seconds a session taken over by a connection resuming it is kept for that
#: connection when its own expiry is 0.
HANDOVER = 10


class _Closed(Exception):
    """The connection ends: the reason was sent (or needs none)."""


class MqttConnection:
    """Serves one client from its CONNECT to its end."""

    def __init__(self, broker: Broker, reader: PacketReader, writer: PacketWriter) -> None:
        self.broker = broker
        self.config = broker.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else None
        self.frames = FrameReader(self.config.max_packet)
        self.level = V311
        self.connect: Connect | None = None
        self.principal: Principal | None = None
        self.credentials = NO_CREDENTIALS
        self.key: tuple[str, str] | None = None
        self.outbox: Outbox | None = None
        self.filters: ClientFilters | None = None
        self.calls: MethodCalls | None = None
        #: Topic aliases the client set (MQTT 5): alias → topic.
        self.aliases: dict[int, str] = {}
        #: QoS 2 packet ids received and stored, awaiting the client's PUBREL.
        self.received: set[int] = set()
        self.problems = True  # MQTT 5 Request Problem Information
        self.ended = False
        #: A DISCONNECT said goodbye (normally): the will is not published.
        self.graceful = False
        #: Seconds the session outlives the connection (0: it ends with it).
        self.expiry = 0
        #: Taken over by a connection that resumes the session: keep it for that one.
        self.handover = False
        #: Set once the connection is closed and its session kept.
        self.done = asyncio.Event()
        #: The keep-alive in force (the client's, or Server Keep Alive).
        self.keep_alive = 0
        #: Our DISCONNECT is written and our side shut: drain the client's before closing.
        self.lingering = False

    # -- the connection's life ------------------------------------------------------------

    async def serve(self) -> None:
        try:
            if await self._handshake():
                await self._packets()
        except _Closed:
            pass
        except MqttError as exc:
            self._refuse(exc)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("MQTT connection from %s failed", self.peer, extra={"edge": EDGE})
            self.end(Reason.UNSPECIFIED_ERROR)
        finally:
            await self._close()

    def _refuse(self, error: MqttError) -> None:
        """After CONNECT: MQTT 5 says why in a DISCONNECT; MQTT 3.1.1 just closes."""
        log.debug("MQTT client %s: %s", self.peer, error, extra={"edge": EDGE})
        self.end(error.reason, str(error), linger=True)

    def end(self, reason: int = 0, why: str | None = None, *, linger: bool = False) -> None:
        """Close the connection, with an MQTT 5 DISCONNECT first once connected.

        ``linger`` (from the connection's own task, which then drains in
        :meth:`_close`): shut our side after the DISCONNECT and close only once
        the client has read it and closed, or after :data:`LINGER` seconds.
        """
        if self.ended:
            return
        self.ended = True
        writer = self.writer
        if self.connect is not None and self.level == V5 and not writer.is_closing():
            writer.write(encode_disconnect(reason, why if self.problems else None))
            if linger and writer.can_write_eof():
                writer.write_eof()
                self.lingering = True
                return
        if not writer.is_closing():
            writer.close()

    async def _linger(self) -> None:
        """Read and drop what the client still sends, until it closes or LINGER passes."""
        self.lingering = False
        drained = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LINGER):
                while drained < LINGER_BYTES:
                    data = await self.reader.read(CHUNK)
                    if not data:
                        break
                    drained += len(data)
        if not self.writer.is_closing():
            self.writer.close()

    async def _close(self) -> None:
        # Nothing is sent after the DISCONNECT: the pumps and calls stop first.
        if self.filters is not None:
            await self.filters.close()
        if self.calls is not None:
            await self.calls.close()
        if self.lingering:
            await self._linger()
        self.end()
        will = self.connect.will if self.connect is not None else None
        if will is not None and not self.graceful:
            # Published after the Will Delay Interval, or when the session ends if
            # sooner (MQTT 5, 3.1.3.2.2): a session that ends with the connection
            # (expiry 0) publishes it now.
            delay = min(will.delay, self.expiry)
            if delay and self.key is not None:
                self.broker.wills.schedule(self.key, delay, lambda: self._publish_will(will))
            else:
                await self._publish_will(will)
        try:
            await self._keep_session()
        finally:
            if self.key is not None and self.broker.clients.get(self.key) is self:
                del self.broker.clients[self.key]
            self.done.set()
        # What was written (a refusal's CONNACK, a DISCONNECT) goes out first, unless
        # the client does not read it.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.writer.wait_closed()
        self.writer.transport.abort()

    async def _keep_session(self) -> None:
        """Keep the session for a later connection, or end it with this one."""
        connect = self.connect
        if connect is None or self.key is None or self.principal is None:
            return
        sessions = self.broker.sessions
        if self.expiry or self.handover:
            session = self.snapshot()
            if not self.expiry:
                session.expiry = HANDOVER
            await sessions.keep(session, time.time())
        elif not connect.clean_start:
            await sessions.discard(*self.key)  # resumed, and now ended

    def snapshot(self) -> Session:
        """The session as it stands: filters with their seqs, unacknowledged messages."""
        assert self.key is not None and self.outbox is not None and self.filters is not None
        return Session(
            self.key[0],
            self.key[1],
            self.expiry,
            self.broker.hub.log.epoch,
            self.filters.states(),
            dict(self.outbox.inflight),
            set(self.received),
        )

    async def _publish_will(self, will: Will) -> None:
        """The will, published like a PUBLISH of the client's."""
        topic, payload, retain = will.topic, will.payload, will.retain
        if not topic_name_is_valid(topic):
            return
        try:
            if retain and not payload:
                reason, why = await clear_retained(self.broker, self.caller(), topic)
            else:
                reason, why, _ = await publish_event(
                    self.broker, self.caller(), topic, payload, Metadata.of_will(will)
                )
        except Exception:
            log.exception("MQTT will of %s failed", self.peer, extra={"edge": EDGE})
            return
        if reason >= 0x80:
            log.info("MQTT will of %s refused: %s", self.peer, why, extra={"edge": EDGE})

    # -- CONNECT ----------------------------------------------------------------------------

    async def _read_more(self) -> bool:
        data = await self.reader.read(CHUNK)
        if not data:
            return False
        self.frames.feed(data)
        return True

    async def _handshake(self) -> bool:
        """Read and answer the CONNECT: True once the client is connected."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + self.config.connect_timeout):
                while (frame := self.frames.next()) is None:
                    if self.frames.buffer and self.frames.buffer[0] != 0x10:
                        return False  # not a CONNECT: close at once (MQTT-3.1.0-1)
                    if not await self._read_more():
                        return False
        except TimeoutError:
            log.debug("MQTT client %s sent no CONNECT in time", self.peer, extra={"edge": EDGE})
            return False
        except MqttError:
            return False  # too large or malformed before we know its version: close
        first, body = frame
        if first != 0x10:
            return False
        try:
            connect = decode_connect(body)
        except UnsupportedVersion:
            self.writer.write(_CONNACK_V311_UNSUPPORTED)
            return False
        except MqttError as exc:
            if len(body) > 6 and body[6] == V5:
                self.writer.write(encode_connack(V5, exc.reason, props=_why(str(exc))))
            return False
        self.level = connect.level
        self.problems = connect.request_problem_information
        refusal = self._admit(connect)
        if refusal is not None:
            reason, code, why = refusal
            if self.level == V5:
                self.writer.write(encode_connack(V5, reason, props=_why(why)))
            else:
                self.writer.write(encode_connack(V311, code))
            log.debug("MQTT client %s refused: %s", self.peer, why, extra={"edge": EDGE})
            return False
        await self._accept(connect)
        return True

    def _admit(self, connect: Connect) -> tuple[int, int, str] | None:
        """Why ``connect`` is refused (MQTT 5 reason, 3.1.1 code, text), or None."""
        if connect.authentication_method is not None:
            return Reason.BAD_AUTHENTICATION_METHOD, 5, "enhanced authentication is not supported"
        if not connect.client_id and not connect.clean_start and connect.level == V311:
            return (
                Reason.CLIENT_IDENTIFIER_NOT_VALID,
                ConnectReturn.IDENTIFIER_REJECTED,
                "an empty client identifier needs a clean session",
            )
        if connect.password is not None:
            try:
                token = connect.password.decode("utf-8")
            except UnicodeDecodeError:
                return (
                    Reason.BAD_USER_NAME_OR_PASSWORD,
                    ConnectReturn.BAD_USER_NAME_OR_PASSWORD,
                    "the password is not UTF-8",
                )
            self.credentials = Credentials(bearer=token)
        try:
            principal = self.broker.dispatcher.authenticator.authenticate(self.credentials)
            if principal.anonymous and not self.broker.dev:
                raise PermissionDenied(
                    "anonymous clients are allowed in development mode only: give an API key "
                    "or a JWT as the password"
                )
        except ServiceError as exc:
            reason, code = connect_refusal(exc)
            return reason, code, message_of(exc)
        self.principal = principal
        return None

    async def _accept(self, connect: Connect) -> None:
        broker = self.broker
        config = self.config
        assert self.principal is not None
        client_id = connect.client_id
        props: list[tuple[int, object]] = []
        if not client_id:
            client_id = "polyport-" + secrets.token_hex(8)
            props.append((ASSIGNED_CLIENT_ID, client_id))
        self.key = key = (self.principal.subject, client_id)
        previous = broker.clients.get(key)
        if previous is not None:
            previous.handover = not connect.clean_start
            previous.end(Reason.SESSION_TAKEN_OVER, "another connection took the client id over")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await previous.done.wait()  # its session kept, to be resumed here
        broker.clients[key] = self
        self.connect = connect
        if connect.clean_start:
            await broker.wills.now(key)  # the old session ends here: its will goes out
        else:
            broker.wills.drop(key)  # back in time: the will is not published
        # MQTT 3.1.1 sessions never expire by the specification; here they last as long
        # as the longest an MQTT 5 client may ask for.
        if self.level == V5:
            self.expiry = min(connect.session_expiry, config.max_session_expiry)
            if self.expiry != connect.session_expiry:
                props.append((SESSION_EXPIRY, self.expiry))
        elif not connect.clean_start:
            self.expiry = config.max_session_expiry
        session: Session | None = None
        if connect.clean_start:
            await broker.sessions.discard(*key)
        else:
            session = await broker.sessions.take(*key, time.time())
        window = min(self.config.max_inflight, connect.receive_maximum)
        self.outbox = Outbox(
            self.writer,
            self.level,
            window=window,
            max_packet=connect.maximum_packet_size,
            send_timeout=self.config.send_timeout,
            alias_maximum=connect.topic_alias_maximum,
            untyped=self.broker.routes.untyped_names,
        )
        self.filters = filters = ClientFilters(
            broker, self.outbox, self.level, self.caller(), peer=self.peer, end=self.end
        )
        self.calls = MethodCalls(
            broker.dispatcher, self.outbox, self.caller(), limit=config.receive_maximum
        )
        lost = [] if session is None else await filters.resume(session)
        if lost and self.level == V5 and self.problems:
            props.append((REASON_STRING, _GAP_REASON))
        present = session is not None
        self.keep_alive = connect.keep_alive
        cap = config.max_keep_alive
        if self.level == V5 and cap and not 0 < connect.keep_alive <= cap:
            self.keep_alive = cap  # the client must use it (MQTT-3.2.2-21)
            props.append((SERVER_KEEP_ALIVE, cap))
        if self.level == V5:
            props += [
                (RECEIVE_MAXIMUM, self.config.receive_maximum),
                (MAXIMUM_PACKET_SIZE, self.config.max_packet),
                (SUBSCRIPTION_ID_AVAILABLE, 1),
            ]
            if self.config.topic_alias_maximum:
                props.append((TOPIC_ALIAS_MAXIMUM, self.config.topic_alias_maximum))
            connack = encode_connack(V5, Reason.SUCCESS, session_present=present, props=props)
        else:
            connack = encode_connack(V311, ConnectReturn.ACCEPTED, session_present=present)
        self.writer.write(connack)
        if session is not None:
            self.received = set(session.received)
            await self.outbox.resume(session.inflight)
            for name, exc in lost:
                await filters.tell_gap(name, exc)
            filters.start_all()

    # -- packets after CONNECT --------------------------------------------------------------

    async def _packets(self) -> None:
        assert self.connect is not None
        loop = asyncio.get_running_loop()
        keep_alive = self.keep_alive * 1.5
        last = loop.time()
        while not self.ended:
            frame = self.frames.next()
            if frame is None:
                if keep_alive:
                    try:
                        async with asyncio.timeout_at(last + keep_alive):
                            more = await self._read_more()
                    except TimeoutError:
                        self.end(Reason.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
                        return
                else:
                    more = await self._read_more()
                if not more:
                    return
                continue
            last = loop.time()
            packet = decode(frame[0], frame[1], self.level)
            if isinstance(packet, Publish):
                await self._on_publish(packet)
            elif isinstance(packet, Ack):
                self._on_ack(packet)
            elif isinstance(packet, Subscribe):
                await self._on_subscribe(packet)
            elif isinstance(packet, Unsubscribe):
                await self._on_unsubscribe(packet)
            elif isinstance(packet, PingReq):
                self.writer.write(PINGRESP)
            elif isinstance(packet, Disconnect):
                if packet.session_expiry is not None:
                    if packet.session_expiry and not self.connect.session_expiry:
                        raise ProtocolError("a session expiry at DISCONNECT after 0 at CONNECT")
                    self.expiry = min(packet.session_expiry, self.config.max_session_expiry)
                self.graceful = packet.reason != Reason.DISCONNECT_WITH_WILL
                self.ended = True
                self.writer.close()
                return
            elif isinstance(packet, Auth):
                raise ProtocolError("AUTH without enhanced authentication")
            else:
                raise ProtocolError("a second CONNECT")

    def caller(self) -> Caller:
        return Caller(EDGE, self.credentials, self.peer)

    def _reason_string(self, why: str) -> str | None:
        return why if self.problems else None

    # -- PUBLISH from the client ----------------------------------------------------------------

    async def _on_publish(self, packet: Publish) -> None:
        if packet.topic_alias is not None:
            packet = self._unalias(packet)
        if packet.subscription_ids:
            raise ProtocolError("a client does not send subscription identifiers")
        if not topic_name_is_valid(packet.topic):
            raise MqttError(
                f"topic {packet.topic[:80]!r}: a topic name has no wildcards",
                Reason.TOPIC_NAME_INVALID,
            )
        packet_id = packet.packet_id
        if packet.qos == 2 and packet_id in self.received:
            self.writer.write(encode_ack(self.level, PacketType.PUBREC, packet_id))
            return  # a resent PUBLISH we stored already: exactly once
        if packet.qos == 2 and len(self.received) >= self.config.receive_maximum:
            raise MqttError(
                "more unacknowledged QoS 2 messages than Receive Maximum",
                Reason.RECEIVE_MAXIMUM_EXCEEDED,
            )
        call = is_call(packet.topic)
        if call:
            reason, why = self._admit_call(packet)
        elif packet.retain and not packet.payload:
            # An empty retained PUBLISH clears the topic's retained message (3.3.1.3):
            # no event (an event has data), the channel's last one is retained no more.
            reason, why = await clear_retained(self.broker, self.caller(), packet.topic)
        else:
            filters = self.filters
            if filters is not None:
                filters.idle.clear()
            try:
                reason, why, event = await publish_event(
                    self.broker,
                    self.caller(),
                    packet.topic,
                    packet.payload,
                    Metadata.of_publish(packet),
                )
                if event is not None and filters is not None:
                    filters.published(event)
            finally:
                if filters is not None:
                    filters.idle.set()
        if call and reason < 0x80:
            assert self.calls is not None
            self.calls.start(packet)  # its answer follows the acknowledgement below
        if reason >= 0x80:
            self.broker.metrics.inc(
                "polyport_mqtt_refused_total",
                "PUBLISH packets refused (payload invalid, not authorized, unknown topic).",
                reason=f"0x{reason:02x}",
            )
            if self.level == V311 or packet.qos == 0:
                # 3.1.1 has no way to say no but closing (3.3.5); at QoS 0, MQTT 5 says it
                # in the DISCONNECT rather than dropping the message unseen.
                raise MqttError(why, Reason(reason))
        if packet.qos == 1:
            assert packet_id is not None
            self.writer.write(
                encode_ack(
                    self.level, PacketType.PUBACK, packet_id, reason, self._reason_string(why)
                )
            )
        elif packet.qos == 2:
            assert packet_id is not None
            if reason < 0x80:
                self.received.add(packet_id)
            self.writer.write(
                encode_ack(
                    self.level, PacketType.PUBREC, packet_id, reason, self._reason_string(why)
                )
            )

    def _admit_call(self, packet: Publish) -> tuple[int, str]:
        """Whether a request to ``$polyport/call/…`` can be answered: (reason, why)."""
        if self.level != V5:
            return Reason.TOPIC_NAME_INVALID, "calling a method over MQTT needs MQTT 5"
        assert self.calls is not None
        refusal = self.calls.refusal(packet)
        return refusal if refusal is not None else (Reason.SUCCESS, "")

    def _on_ack(self, packet: Ack) -> None:
        if packet.kind is PacketType.PUBREL:
            found = packet.packet_id in self.received
            self.received.discard(packet.packet_id)
            self.writer.write(
                encode_ack(
                    self.level,
                    PacketType.PUBCOMP,
                    packet.packet_id,
                    0 if found else Reason.PACKET_IDENTIFIER_NOT_FOUND,
                )
            )
            return
        assert self.outbox is not None
        self.outbox.acked(packet.kind, packet.packet_id, packet.reason)

    # -- SUBSCRIBE ------------------------------------------------------------------------------

    async def _on_subscribe(self, packet: Subscribe) -> None:
        for topic in packet.topics:
            check_filter(topic.filter)
        filters = self.filters
        assert filters is not None
        topics = packet.topics
        if packet.subscription_id is not None:
            # Stored with each filter of the SUBSCRIBE, sent with what it delivers.
            topics = tuple(replace(t, subscription_id=packet.subscription_id) for t in topics)
        started: list[Filter] = []
        codes = [await filters.subscribe(topic, started) for topic in topics]
        if self.level == V311:
            codes = [SUBACK_FAILURE if code >= 0x80 else code for code in codes]
        self.writer.write(encode_suback(self.level, packet.packet_id, codes))
        for entry in started:  # after the SUBACK: retained messages follow it
            filters.start(entry)
        await self._write_session()

    def _unalias(self, packet: Publish) -> Publish:
        """A PUBLISH with a Topic Alias: set the alias (a topic given) or use it (none)."""
        alias = packet.topic_alias
        assert alias is not None
        if not 0 < alias <= self.config.topic_alias_maximum:
            raise _alias_error(f"topic alias {alias} is above Topic Alias Maximum")
        if packet.topic:
            self.aliases[alias] = packet.topic
            return packet
        topic = self.aliases.get(alias)
        if topic is None:
            raise ProtocolError(f"topic alias {alias} was never set on this connection")
        return replace(packet, topic=topic)

    async def _write_session(self) -> None:
        """Write a persistent session's subscriptions where a restarted node finds them."""
        if self.expiry:
            await self.broker.sessions.write(self.snapshot(), time.time())

    async def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        codes = []
        for text in packet.filters:
            check_filter(text)
            assert self.filters is not None
            found = self.filters.unsubscribe(text)
            codes.append(Reason.SUCCESS if found else Reason.NO_SUBSCRIPTION_EXISTED)
        self.writer.write(encode_unsuback(self.level, packet.packet_id, codes))
        await self._write_session()


def _why(text: str) -> list[tuple[int, object]]:
    return [(REASON_STRING, text)]


_GAP_REASON = (
    "events this session missed are no longer in the history: see the PUBLISH on " + GAPS_TOPIC
)


def _alias_error(why: str) -> MqttError:
    return MqttError(why, Reason.TOPIC_ALIAS_INVALID)
