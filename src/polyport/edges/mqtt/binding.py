"""The MQTT edge: the node's own MQTT 5.0 / 3.1.1 listener, topics = event channels.

    mqtt://HOST:1883   SUBSCRIBE orders/+   → each event as a PUBLISH (QoS 0, 1, 2)
                       PUBLISH sensors/s1/temperature {"celsius": 21.5}
                                            → an event, validated, acknowledged once durable

A listener on its own port (``mqtt.port``), like gRPC: when the default port
is taken (Mosquitto listens on 1883 on many machines) the node serves MQTT on
a free port and says so; a port set explicitly must be free. Each connection
is one :class:`~polyport.edges.mqtt.connection.MqttConnection`; nothing here
needs a library beyond asyncio. See ``docs/mqtt.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import logging
import socket
import time
from typing import TYPE_CHECKING

from polyport.core.contract import EventType
from polyport.core.errors import ConfigError, InvalidArgument
from polyport.core.events import Pattern
from polyport.core.raw import RawMessage
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import ChannelEdge, ListenerEdge, WebSocketEdge
from polyport.edges.mqtt.config import MqttConfig
from polyport.edges.mqtt.connection import EDGE, Broker, MqttConnection
from polyport.edges.mqtt.packets import Reason
from polyport.edges.mqtt.retained import RetainedEvents
from polyport.edges.mqtt.sessions import SessionStore
from polyport.edges.mqtt.shared import SharedGroups
from polyport.edges.mqtt.streams import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    WebSocketStream,
)
from polyport.http.origins import OriginPolicy, OriginRefused

if TYPE_CHECKING:  # the WebSocket server needs the 'realtime' extra
    from polyport.http.asyncapi import AsyncApiDocument
    from polyport.http.request import Request
    from polyport.http.websocket import WebSocket, WebSocketEndpoint
from polyport.edges.mqtt.topics import (
    RESERVED_PREFIXES,
    TopicRoutes,
    filter_is_well_formed,
    topic_to_channel,
)

log = logging.getLogger("polyport.mqtt")

#: Seconds connections get to end when the node stops.
STOP_GRACE = 5.0
GAUGE = "polyport_mqtt_connections"
#: Seconds between sweeps of expired sessions, at most.
SWEEP_INTERVAL = 60.0


OPEN_TYPE = "mqtt.open"


def open_topic_types(config: MqttConfig) -> list[EventType]:
    """An untyped event type per filter of ``mqtt.open_topics``: ``mqtt.open``,
    ``mqtt.open.2``, …"""
    types = []
    scopes = frozenset(config.open_scopes)
    for index, text in enumerate(config.open_topics, start=1):
        if not filter_is_well_formed(text) or text.startswith(RESERVED_PREFIXES):
            raise ConfigError(f"mqtt.open_topics: {text[:80]!r} is not a topic filter to open")
        channel = topic_to_channel(text)
        try:
            Pattern.parse(channel)
        except InvalidArgument:
            raise ConfigError(f"mqtt.open_topics: {text[:80]!r} is too long") from None
        name = OPEN_TYPE if index == 1 else f"{OPEN_TYPE}.{index}"
        description = f"MQTT open topics {text}: any payload, untyped"
        types.append(
            EventType(
                name,
                RawMessage,
                channel,
                description=description,
                scopes=scopes,
                publish_scopes=scopes,
            )
        )
    return types


def _address(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int) -> socket.socket | None:
    """A listening socket on ``host:port``, or None when the port is taken or not permitted."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"MQTT: cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise ConfigError(f"MQTT cannot listen on {_address(host, port)}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class _MqttOverWebSocket:
    """The ``/mqtt`` WebSocket endpoint: its subprotocols, and the edge serving it."""

    #: What the handshake chooses from (MQTT 6.0: ``mqtt``; some older clients offer
    #: ``mqttv3.1``).
    subprotocols = ("mqtt", "mqttv3.1")

    def __init__(self, edge: MqttEdge) -> None:
        self.edge = edge

    async def __call__(self, ws: WebSocket, request: Request) -> None:
        await self.edge.websocket(ws, request)


class MqttEdge(ListenerEdge, WebSocketEdge, ChannelEdge):
    """Serves the contract's events over MQTT 5.0 and 3.1.1, on a port of its own and
    over WebSocket at ``/mqtt`` on the node's HTTP port."""

    name = EDGE

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        config = runtime.settings.section(MqttConfig)
        self.config = config
        self.enabled = config.enabled
        self.host = config.host or runtime.settings.host
        #: The port served: the configured one, or the one the system chose.
        self.port = config.port
        self.port_chosen = "port" in config.model_fields_set
        self.off: str | None = None if self.enabled else "disabled by mqtt.enabled = false"
        self.notice: str | None = None
        dispatcher = runtime.dispatcher
        routes = TopicRoutes(dispatcher.event_types)
        for event in open_topic_types(config) if self.enabled else ():
            dispatcher.add_event(event)  # read and published by the same rules as any type
            routes.add_untyped(event)
        self.broker = Broker(
            config=config,
            dispatcher=dispatcher,
            hub=runtime.hub,
            codec=runtime.codec,
            metrics=runtime.metrics,
            routes=routes,
            dev=runtime.settings.dev,
            sessions=SessionStore(runtime.records, limit=config.max_sessions),
            retained=RetainedEvents(runtime.hub, runtime.records, limit=config.max_retained),
            groups=SharedGroups(runtime.hub),
        )
        self.server: asyncio.Server | None = None
        self.origins = OriginPolicy.from_settings(runtime.settings.cors_origins)
        self.sweeper: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        """``HOST:PORT`` as a client dials it: the port bound, once started."""
        return _address(self.host, self.port)

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``, as the banner and ``polyport routes`` print it."""
        return f"mqtt://{_address(self.host, self.port or '(any free port)')}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        sock = _bind(self.host, self.port)
        if sock is None:
            problem = f"MQTT cannot listen on {self.address}: the port is in use or not permitted"
            if self.port_chosen:
                raise ConfigError(problem + "; choose another with mqtt.port (0: any free port)")
            # The default port taken (Mosquitto, another node): serve MQTT anyway, on a
            # port the system chooses, and say so at start.
            wanted = self.port
            sock = _bind(self.host, 0)
            if sock is None:
                self.off = problem
                return
            port = sock.getsockname()[1]
            self.notice = (
                f"MQTT's default port {wanted} is in use: MQTT is served on "
                f"mqtt://{_address(self.host, port)} instead (set mqtt.port to choose one)"
            )
        self.port = sock.getsockname()[1]
        try:
            await self.broker.sessions.open()
        except BaseException:
            sock.close()
            raise
        self.sweeper = asyncio.create_task(self._sweep(), name="polyport-mqtt-sessions")
        self.server = await asyncio.start_server(self._accept, sock=sock, limit=64 * 1024)
        log.info("MQTT listening on %s", self.url, extra={"edge": EDGE})

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        for connection in list(self.broker.connections):
            connection.end(Reason.SERVER_SHUTTING_DOWN, "the node is stopping")
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=STOP_GRACE)
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        await self.broker.groups.stop()
        await self.broker.wills.flush()
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.broker.sessions.close()

    async def _sweep(self) -> None:
        """Forget expired sessions, every minute (sooner when sessions are short)."""
        interval = min(SWEEP_INTERVAL, max(1.0, self.config.max_session_expiry / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.broker.sessions.sweep(time.time())
            except Exception:
                log.exception("sweeping expired MQTT sessions failed", extra={"edge": EDGE})

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.broker.connections) >= self.config.max_connections:
            writer.transport.abort()  # at the limit: refused before it costs anything
            return
        await self._serve(MqttConnection(self.broker, reader, writer))

    def websocket_routes(self) -> dict[str, WebSocketEndpoint]:
        """MQTT over WebSocket (subprotocol ``mqtt``) on ``mqtt.websocket_path``."""
        if not self.enabled or not self.config.websocket_path:
            return {}
        if importlib.util.find_spec("websockets") is None:
            return {}  # the node's WebSocket server comes with the 'realtime' extra
        return {self.config.websocket_path: _MqttOverWebSocket(self)}

    async def websocket(self, ws: WebSocket, request: Request) -> None:
        """One MQTT connection over a WebSocket: the same connection as over TCP."""
        try:
            self.origins.check(request)
        except OriginRefused:
            ws.close(CLOSE_POLICY, "origin not allowed")
            return
        if ws.subprotocol is None:
            ws.close(CLOSE_POLICY, "MQTT over WebSocket needs the mqtt subprotocol")
            return
        if len(self.broker.connections) >= self.config.max_connections:
            ws.close(CLOSE_GOING_AWAY, "too many MQTT connections")
            return
        stream = WebSocketStream(ws)
        await self._serve(MqttConnection(self.broker, stream, stream))

    async def _serve(self, connection: MqttConnection) -> None:
        broker = self.broker
        task = asyncio.current_task()
        broker.connections.add(connection)
        if task is not None:
            self.tasks.add(task)
        self._count()
        try:
            await connection.serve()
        finally:
            broker.connections.discard(connection)
            if task is not None:
                self.tasks.discard(task)
            self._count()

    def _count(self) -> None:
        self.runtime.metrics.set(
            GAUGE, "Open MQTT connections.", float(len(self.broker.connections))
        )

    # -- the catalog ------------------------------------------------------------------------

    def describe_channels(self, doc: AsyncApiDocument) -> None:
        """The MQTT server and each event type's operations (:mod:`.asyncapi`)."""
        from polyport.edges.mqtt.asyncapi import describe_channels

        describe_channels(self, doc)

    def catalog(self) -> list[CatalogEntry]:
        if self.off is not None:
            return []
        entries = []
        for name, event in self.runtime.dispatcher.event_types.items():
            topic = event.channel_pattern
            how = "subscribe" if event.publish_scopes is None else "subscribe, publish"
            entries.append(CatalogEntry("MQTT", name, "event", f"{self.url} {topic} ({how})"))
        return entries
