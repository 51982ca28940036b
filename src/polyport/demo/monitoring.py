"""The guide's monitoring system, on the demo service: sensors, a live chart, alerts.

Imported by :mod:`polyport.demo.shop` so that one service carries every example::

    sensor fleet ──MQTT PUBLISH sensors/{sensor}/temperature──▶ node (validated, logged)
    (or any device:  mosquitto_pub … -t sensors/s1/temperature -m '{"celsius": 21.5}')
        ├──SSE /v1/events/stream?channel=sensors/%23──▶ /demo/monitor (a live chart)
        ├──MQTT SUBSCRIBE sensors/#──▶ mosquitto_sub, dashboards
        └──▶ alert watcher: 30 °C crossed ──▶ alerts.raised on alerts/{sensor}
                                              ──▶ outbound webhooks (/v1/webhooks), SSE, …

The fleet (:mod:`polyport.demo.sensors`) is a set of simulated devices that
publish over MQTT to this node's own listener, as a real device would; it runs
when ``demo.sensors`` is on (``polyport demo`` turns it on). The alert watcher
runs whenever the demo service is served: it watches every temperature,
wherever it was published from (MQTT, REST, a test), and raises an alert when
a sensor reaches ``demo.alert_celsius`` — once, until the sensor comes back
down to ``demo.alert_clear_celsius`` (``alerts.cleared``). The gap between the
two lines is the hysteresis: a reading wobbling around 30 °C raises one alert,
not one per reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from polyport.core.errors import Unavailable
from polyport.core.events import Event
from polyport.core.hub import EventHub
from polyport.demo.config import DemoConfig
from polyport.demo.shop import shop
from polyport.settings import Settings

log = logging.getLogger("polyport.demo.monitoring")

#: A sensor's name, as it appears in its topics: ``sensors/{sensor}/temperature``.
SensorId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Temperature(BaseModel):
    """One temperature reading of a sensor, in degrees Celsius."""

    sensor: SensorId
    celsius: Annotated[float, Field(ge=-60, le=100)]


class Humidity(BaseModel):
    """One relative-humidity reading of a sensor, in percent."""

    sensor: SensorId
    percent: Annotated[float, Field(ge=0, le=100)]


class SensorAlert(BaseModel):
    """A sensor's temperature crossed an alert line: up (raised) or back down (cleared)."""

    sensor: SensorId
    celsius: float = Field(description="The reading that crossed the line.")
    threshold: float = Field(description="The line it crossed.")
    text: str


TemperatureEvent = shop.event(
    "sensors.temperature",
    Temperature,
    channel="sensors/{sensor}/temperature",
    description="A sensor's temperature reading (devices publish it, over MQTT or REST).",
    scopes=["monitoring"],
    publish_scopes=["telemetry"],
)
HumidityEvent = shop.event(
    "sensors.humidity",
    Humidity,
    channel="sensors/{sensor}/humidity",
    description="A sensor's relative humidity reading (devices publish it).",
    scopes=["monitoring"],
    publish_scopes=["telemetry"],
)
AlertRaised = shop.event(
    "alerts.raised",
    SensorAlert,
    channel="alerts/{sensor}",
    description="A sensor reached the alert temperature (once, until it is cleared).",
    scopes=["monitoring"],
)
AlertCleared = shop.event(
    "alerts.cleared",
    SensorAlert,
    channel="alerts/{sensor}/cleared",
    description="A sensor with an alert came back down to the clear temperature.",
    scopes=["monitoring"],
)


@dataclass
class Hysteresis:
    """Which readings cross a line: up to ``above``, and back only down to ``clear``.

    Per sensor, one bit of state: whether its alert is raised. A sensor starts
    clear (after a restart, a sensor still hot raises its alert again: the
    state lives in this process, and one alert too many beats one too few).
    """

    above: float
    clear: float
    raised: set[str] = field(default_factory=set)

    def reading(self, sensor: str, celsius: float) -> Literal["raised", "cleared"] | None:
        """What ``celsius`` does to the alert of ``sensor``: raises it, clears it, or nothing."""
        if sensor not in self.raised and celsius >= self.above:
            self.raised.add(sensor)
            return "raised"
        if sensor in self.raised and celsius <= self.clear:
            self.raised.discard(sensor)
            return "cleared"
        return None


#: Readings waiting for the alert watcher; beyond this many (a flood the watcher cannot
#: keep up with) the newest are skipped, and said so.
QUEUED_READINGS = 10_000


async def watch_temperatures(hub: EventHub, config: DemoConfig) -> None:
    """Raise and clear alerts from every temperature published on ``hub``, until cancelled.

    The watcher taps the hub (it sees each publish of this node as it is
    appended) rather than subscribing to the log: it holds no subscription, and
    on nodes sharing an engine each reading is judged once, by the node it was
    published on, so an alert is not raised once per node.
    """
    lines = Hysteresis(config.alert_celsius, config.alert_clear_celsius)
    readings: asyncio.Queue[bytes] = asyncio.Queue(QUEUED_READINGS)
    skipped = 0

    def tap(events: list[Event]) -> None:
        nonlocal skipped
        for event in events:
            if event.type == TemperatureEvent.name:
                try:
                    readings.put_nowait(event.data)
                except asyncio.QueueFull:
                    skipped += 1
                    if skipped == 1:
                        log.warning("the alert watcher is behind: skipping readings")

    hub.add_tap(tap)
    try:
        while True:
            data = await readings.get()
            skipped = 0
            try:
                await _alert(lines, Temperature.model_validate_json(data))
            except Exception:
                if not _serving(hub):
                    return  # the node failed to start after the hooks ran, or stopped
                log.exception("the alert watcher failed on a reading")
    finally:
        hub.remove_tap(tap)


def _serving(hub: EventHub) -> bool:
    """Whether ``hub``'s node still serves the demo (asked from one of its tasks)."""
    try:
        return shop.hub is hub
    except (Unavailable, RuntimeError):
        return False


async def _alert(lines: Hysteresis, reading: Temperature) -> None:
    crossed = lines.reading(reading.sensor, reading.celsius)
    if crossed == "raised":
        await AlertRaised.publish(
            SensorAlert(
                sensor=reading.sensor,
                celsius=reading.celsius,
                threshold=lines.above,
                text=f"{reading.sensor} is at {reading.celsius:.1f} °C "
                f"(alert at {lines.above:g} °C)",
            )
        )
        log.warning("alert: %s is at %.1f °C", reading.sensor, reading.celsius)
    elif crossed == "cleared":
        await AlertCleared.publish(
            SensorAlert(
                sensor=reading.sensor,
                celsius=reading.celsius,
                threshold=lines.clear,
                text=f"{reading.sensor} is back at {reading.celsius:.1f} °C "
                f"(cleared at {lines.clear:g} °C)",
            )
        )
        log.info("alert cleared: %s is at %.1f °C", reading.sensor, reading.celsius)


#: The tasks each node's start-up hook started, by the node's hub: several nodes may
#: serve the demo in one process, and stopping one leaves the others' tasks running.
_tasks: dict[EventHub, list[asyncio.Task[None]]] = {}


@shop.on_startup
async def _start_monitoring(settings: Settings) -> None:
    config = settings.demo
    # Tasks started here publish to this node (the hook's context is the node's).
    hub = shop.hub
    tasks = _tasks.setdefault(hub, [])
    tasks.append(asyncio.create_task(watch_temperatures(hub, config), name="demo-alerts"))
    if config.sensors:
        from polyport.demo.sensors import SensorFleet

        fleet = SensorFleet.for_node(settings)
        tasks.append(asyncio.create_task(fleet.run(), name="demo-sensor-fleet"))


@shop.on_shutdown
async def _stop_monitoring() -> None:
    tasks = _tasks.pop(shop.hub, [])
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
