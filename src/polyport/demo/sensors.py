"""A simulated sensor fleet: devices that publish readings over MQTT, as real ones do.

Each sensor is a device of its own: its own MQTT 5 connection (client id
``demo-sensor-{name}``), a temperature and a humidity reading every
``demo.sensor_interval`` seconds, at QoS 1 — the next reading waits for the
node's PUBACK, which comes once the event is durable, so a slow node slows the
fleet down instead of queueing readings without bound.

The fleet knows nothing of the node's insides. Like a device provisioned with
a broker's address, it finds the MQTT listener from the node's HTTP address:
``servers.mqtt`` of ``/asyncapi.json`` names the port the node actually bound
(1883, or a free one when 1883 was taken). When the connection fails — the
node restarting, MQTT not served yet — the device asks again and reconnects,
backing off up to 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson

from polyport.core.errors import MissingExtra
from polyport.settings import Settings

log = logging.getLogger("polyport.demo.sensors")

#: The longest pause between two attempts to connect, in seconds.
RECONNECT_MAX = 30.0

#: Where the node's MQTT listener is: ``(host, port)``.
Discover = Callable[[], Awaitable[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class SimulatedSensor:
    """A device's climate: a mean, a slow cycle around it, and a little noise."""

    name: str
    celsius: float
    #: Degrees the temperature swings either way over one cycle.
    swing: float
    #: Seconds of one cycle (a compressed day).
    period: float
    percent: float

    def reading(self, at: float, noise: random.Random) -> tuple[float, float]:
        """The temperature (°C) and relative humidity (%) at time ``at``."""
        cycle = math.sin(2 * math.pi * at / self.period)
        celsius = self.celsius + self.swing * cycle + noise.gauss(0, 0.15)
        # Warmer air holds more water: relative humidity falls as it warms.
        percent = self.percent - 1.5 * self.swing * cycle + noise.gauss(0, 0.5)
        return round(celsius, 2), round(min(100.0, max(0.0, percent)), 1)


#: The demo's fleet. The greenhouse swings from 20 to 32 °C every two minutes: it
#: crosses the 30 °C alert line, and comes back below 28 °C, once per cycle.
FLEET = (
    SimulatedSensor("office", celsius=21.5, swing=1.0, period=300, percent=45),
    SimulatedSensor("server-room", celsius=24.0, swing=2.0, period=180, percent=35),
    SimulatedSensor("greenhouse", celsius=26.0, swing=6.0, period=120, percent=70),
)


async def mqtt_address(node_url: str) -> tuple[str, int]:
    """The MQTT listener of the node at ``node_url``, from its AsyncAPI document.

    Raises :class:`LookupError` when the node serves no MQTT, :class:`OSError`
    or :class:`TimeoutError` when it cannot be reached.
    """
    from polyport.demo.provider import request

    status, body = await request("GET", f"{node_url}/asyncapi.json", b"", {}, within=10)
    if status != 200:
        raise LookupError(f"{node_url}/asyncapi.json answered {status}")
    server = orjson.loads(body).get("servers", {}).get("mqtt")
    if server is None:
        raise LookupError(f"the node at {node_url} serves no MQTT")
    host, _, port = str(server["host"]).rpartition(":")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def _disconnection_read(client: object) -> AsyncIterator[None]:
    """Read why the connection ended (the node stopping, say) once the client is done.

    aiomqtt keeps that in a future which nothing awaits when the connection ends
    unexpectedly; unread, asyncio logs "Future exception was never retrieved".
    """
    try:
        yield
    finally:
        ended = getattr(client, "_disconnected", None)
        if isinstance(ended, asyncio.Future) and ended.done() and not ended.cancelled():
            ended.exception()


class SensorFleet:
    """The simulated devices, each publishing over its own MQTT connection until cancelled."""

    def __init__(
        self,
        discover: Discover,
        *,
        interval: float,
        password: str | None = None,
        sensors: Sequence[SimulatedSensor] = FLEET,
    ) -> None:
        self.discover = discover
        self.interval = interval
        self.password = password
        self.sensors = tuple(sensors)
        #: Readings acknowledged by the node (two per sensor and interval), for tests.
        self.published = 0

    @classmethod
    def for_node(cls, settings: Settings) -> SensorFleet:
        """The fleet of ``settings.demo``, for the node whose HTTP port ``settings`` name."""
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        node_url = f"http://{shown}:{settings.port}"
        config = settings.demo
        key = config.sensor_key.get_secret_value() if config.sensor_key else None
        return cls(lambda: mqtt_address(node_url), interval=config.sensor_interval, password=key)

    async def run(self) -> None:
        """Run every device until cancelled."""
        try:
            import aiomqtt  # noqa: F401 (only to say early what is missing)
        except ImportError:
            log.error("%s", MissingExtra("mqtt", "the simulated sensor fleet (demo.sensors)"))
            return
        log.info(
            "sensor fleet: %s, a reading every %g s",
            ", ".join(s.name for s in self.sensors),
            self.interval,
        )
        async with asyncio.TaskGroup() as group:
            for sensor in self.sensors:
                group.create_task(self._device(sensor), name=f"demo-sensor-{sensor.name}")

    async def _device(self, sensor: SimulatedSensor) -> None:
        """One device: connect, publish a reading per interval; reconnect when it fails."""
        import aiomqtt

        noise = random.Random(sensor.name)
        failures = 0
        while True:
            try:
                host, port = await self.discover()
                client = aiomqtt.Client(
                    host,
                    port,
                    identifier=f"demo-sensor-{sensor.name}",
                    username=sensor.name,
                    password=self.password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=30,
                    timeout=10,
                )
                async with _disconnection_read(client), client:
                    if failures:
                        log.info("sensor %s reconnected to mqtt://%s:%d", sensor.name, host, port)
                    failures = 0
                    while True:
                        celsius, percent = sensor.reading(time.time(), noise)
                        topic = f"sensors/{sensor.name}"
                        # QoS 1: each waits for the PUBACK, sent once the event is durable.
                        await client.publish(
                            f"{topic}/temperature", orjson.dumps({"celsius": celsius}), qos=1
                        )
                        await client.publish(
                            f"{topic}/humidity", orjson.dumps({"percent": percent}), qos=1
                        )
                        self.published += 2
                        await asyncio.sleep(self.interval)
            except (aiomqtt.MqttError, OSError, TimeoutError, LookupError, ValueError) as exc:
                failures += 1
                pause = min(RECONNECT_MAX, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                # Said once per outage, not once per attempt.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                why = str(exc) or type(exc).__name__
                log.log(level, "sensor %s: %s; reconnecting", sensor.name, why)
                await asyncio.sleep(pause)
