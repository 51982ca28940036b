"""Bridge mode: the node as a client of an external MQTT broker (Mosquitto, EMQX, HiveMQ).

    node ──events of mqtt.bridge.outgoing──▶ broker topic {prefix}{channel}   (one leading node)
    node ◀──validated events── broker topics {prefix}{mqtt.bridge.incoming}   ($share/{group}/…)

One MQTT 5 connection per node (aiomqtt over paho-mqtt), reconnected with
backoff, with a persistent session (Clean Start 0, a Session Expiry) so the
broker keeps what arrives for the node while it is away. Several nodes
bridging one broker do not duplicate events:

* **in**: each node subscribes with the shared subscription
  ``$share/{group}/{prefix}{pattern}``, so the broker gives each message to
  one node of the group, which publishes it once into the shared log;
* **out**: one node of the group forwards, the one holding the group's lease
  in the records store, from a cursor into the log (:mod:`.bridge_out`);
* **no loop**: a channel is bridged one way only (the settings refuse
  overlapping ``outgoing`` and ``incoming`` patterns), and a message carrying
  this group's ``polyport-bridge`` user property is never taken in.

A message is acknowledged to the broker (QoS 1/2) only once its event is
durable, or found invalid (counted, logged, never published): a node that
dies before that gets it again from its session. See docs/mqtt.md, Bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from polyport.core.errors import ConfigError, InvalidArgument, MissingExtra
from polyport.core.events import Event, Pattern
from polyport.core.runtime import Endpoint as CatalogEntry
from polyport.core.runtime import Runtime
from polyport.edges.kinds import Edge
from polyport.edges.mqtt.bridge_in import BridgeInbound
from polyport.edges.mqtt.bridge_out import BridgeOutbound
from polyport.edges.mqtt.config import MqttBridgeConfig, MqttConfig
from polyport.edges.mqtt.topics import TopicRoutes

if TYPE_CHECKING:  # the 'mqtt' extra
    import aiomqtt

log = logging.getLogger("polyport.mqtt")

#: The user property on every message the bridge publishes: its group, so that a
#: message of ours coming back is recognised and not taken in.
ORIGIN = "polyport-bridge"
#: Seconds before the first reconnect; doubled after each failed attempt, up to
#: ``mqtt.bridge.reconnect_max``.
FIRST_BACKOFF = 0.5
COUNTER = "polyport_mqtt_bridge_messages_total"
COUNTER_HELP = "Messages through the MQTT bridge, by direction and outcome."


class MqttBridgeEdge(Edge):
    """Bridges the node's events to and from an external MQTT broker (``[mqtt.bridge]``)."""

    name = "mqtt-bridge"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config: MqttBridgeConfig = runtime.settings.section(MqttConfig).bridge
        config = self.config
        self.outgoing = [Pattern.parse(text) for text in config.outgoing]
        self.incoming = [Pattern.parse(text) for text in config.incoming]
        self.client_id = config.client_id or (
            f"{config.group}-{socket.gethostname()}-{secrets.token_hex(4)}"
        )
        self.inbound = BridgeInbound(
            runtime.hub,
            runtime.codec,
            TopicRoutes(runtime.dispatcher.event_types),
            prefix=config.prefix,
            incoming=self.incoming,
        )
        self.outbound: BridgeOutbound | None = None
        if self.outgoing and config.url is not None:
            if runtime.records is None:
                raise ConfigError("mqtt.bridge.outgoing needs the node's records store")
            self.outbound = BridgeOutbound(
                runtime.hub,
                runtime.records,
                group=config.group,
                owner=runtime.jobs.owner,
                outgoing=self.outgoing,
            )
        #: Whether the connection to the broker is up now.
        self.connected = asyncio.Event()
        #: Messages by outcome: in-published, in-invalid, in-echo, out-forwarded.
        self.counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        """The broker's URL without its password, for logs and the catalog."""
        parts = urlsplit(self.config.url or "")
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{shown}:{self._port(parts.scheme, parts.port)}"

    @staticmethod
    def _port(scheme: str, port: int | None) -> int:
        return port or (8883 if scheme == "mqtts" else 1883)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.url is None or not (self.outgoing or self.incoming):
            return
        try:
            import aiomqtt  # noqa: F401 (checked now: the node must not start without it)
        except ImportError as exc:
            raise MissingExtra("mqtt", "the MQTT bridge (mqtt.bridge.url)") from exc
        if self.outbound is not None:
            await self.outbound.records.open()
            await self.outbound.start()
        self._task = asyncio.create_task(self._run(), name="polyport-mqtt-bridge")
        log.info("MQTT bridge to %s as %s", self.target, self.client_id, extra={"edge": "mqtt"})

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.outbound is not None and task is not None:
            await self.outbound.records.close()

    def catalog(self) -> list[CatalogEntry]:
        if self.config.url is None:
            return []
        entries = []
        for name, event in self.runtime.dispatcher.event_types.items():
            try:
                pattern = Pattern.parse(event.channel_pattern)
            except InvalidArgument:
                continue
            topic = self.config.prefix + event.channel_pattern
            for arrow, patterns in (("→", self.outgoing), ("←", self.incoming)):
                if any(pattern.overlaps(p) for p in patterns):
                    where = f"{arrow} {self.target} {topic}"
                    entries.append(CatalogEntry("MQTT bridge", name, "event", where))
        return entries

    # -- the connection ---------------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        parts = urlsplit(self.config.url or "")
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.config.session_expiry
        client = aiomqtt.Client(
            parts.hostname or "",
            self._port(parts.scheme, parts.port),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # Never a clean start: the broker keeps the session (the shared subscription
            # and its queued messages) across reconnects and, with a stable client id,
            # restarts.
            clean_start=False,
            properties=properties,
            keepalive=self.config.keepalive,
            tls_context=ssl.create_default_context() if parts.scheme == "mqtts" else None,
            timeout=10.0,
        )
        client.pending_calls_threshold = 1000  # a page of publishes awaits its acks at once
        # Acknowledged by us, once the event is durable (or the message found invalid).
        client._client.manual_ack_set(True)
        return client

    async def _run(self) -> None:
        import aiomqtt

        delay = FIRST_BACKOFF
        failing = False
        while True:
            try:
                async with self._client() as client:
                    if failing:
                        log.warning("MQTT bridge: connected to %s again", self.target)
                    failing, delay = False, FIRST_BACKOFF
                    await self._serve(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker, or a store, failed: reconnect
                if not failing:  # once per outage
                    what = "lost" if self.connected.is_set() else "failed"
                    log.warning("MQTT bridge: connection to %s %s (%s)", self.target, what, exc)
                    failing = True
                if not isinstance(exc, aiomqtt.MqttError):
                    log.debug("MQTT bridge failure", exc_info=exc)
            finally:
                self.connected.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jittered: nodes spread
            delay = min(delay * 2, self.config.reconnect_max)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Both directions over one connection, until it fails."""
        for pattern in self.incoming:
            topic = f"$share/{self.config.group}/{self.config.prefix}{pattern.text}"
            await client.subscribe(topic, qos=self.config.qos)
        self.connected.set()
        # The inbound pump runs even with nothing subscribed: it is what notices the
        # connection ending.
        tasks = [asyncio.create_task(self._take_in(client))]
        if self.outbound is not None:

            async def send(events: Sequence[Event]) -> None:
                await self._send(client, events)

            tasks.append(asyncio.create_task(self.outbound.run(send)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the two directions -----------------------------------------------------------------

    async def _send(self, client: aiomqtt.Client, events: Sequence[Event]) -> None:
        """Publish ``events`` in order; return once the broker acknowledged them all."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        config = self.config
        sends = []
        for event in events:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = "application/json"
            properties.UserProperty = [
                ("event-id", event.id),
                ("event-type", event.type),
                (ORIGIN, config.group),
            ]
            sends.append(
                client.publish(
                    config.prefix + event.channel,
                    event.data,
                    qos=config.qos,
                    retain=config.retain,
                    properties=properties,
                )
            )
        await asyncio.gather(*sends)
        self._count("out", "forwarded", len(events))

    async def _take_in(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            if self._ours(message.properties):
                self._count("in", "echo")
            else:
                try:
                    await self.inbound.publish(topic, data)
                except InvalidArgument as exc:
                    # Never published; acknowledged all the same: sent again it would be
                    # just as invalid.
                    self._count("in", "invalid")
                    log.warning(
                        "MQTT bridge: a message on %s was not published: %s",
                        topic[:200],
                        exc.message,
                        extra={"edge": "mqtt"},
                    )
                else:
                    self._count("in", "published")
            # Anything else raised (the log unavailable) leaves it unacknowledged: the
            # connection ends, and the broker sends it again after the reconnect.
            client._client.ack(message.mid, message.qos)

    def _ours(self, properties: Any) -> bool:
        pairs = getattr(properties, "UserProperty", None) or []
        return (ORIGIN, self.config.group) in [tuple(pair) for pair in pairs]

    def _count(self, direction: str, outcome: str, amount: int = 1) -> None:
        key = f"{direction}-{outcome}"
        self.counts[key] = self.counts.get(key, 0) + amount
        self.runtime.metrics.inc(
            COUNTER, COUNTER_HELP, float(amount), direction=direction, outcome=outcome
        )
