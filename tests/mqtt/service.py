"""A small monitoring contract for the MQTT tests: sensors publish, dashboards subscribe."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from polyport import NotFound, Service


class Temperature(BaseModel):
    """A reading of one sensor."""

    sensor: Annotated[str, Field(min_length=1, max_length=32)]
    celsius: Annotated[float, Field(ge=-80, le=150)]


class Alert(BaseModel):
    """A threshold crossed."""

    level: str
    text: str


monitoring = Service("monitoring", version=1)
TemperatureEvent = monitoring.event(
    "sensors.temperature",
    Temperature,
    channel="sensors/{sensor}/temperature",
    scopes=["read"],
    publish_scopes=["telemetry"],
)
AlertEvent = monitoring.event("alerts.raised", Alert, channel="alerts/{level}", scopes=["alerts"])


@monitoring.method
async def ping() -> str:
    """Something to call (the contract needs a method)."""
    return "pong"


class Calibration(BaseModel):
    """A sensor's calibration, as set."""

    sensor: str
    offset: float


@monitoring.method(scopes=["calibrate"])
async def calibrate(sensor: str, offset: float = 0.0) -> Calibration:
    """Set a sensor's offset (MQTT request/response calls it); sensor "gone" does not exist."""
    if sensor == "gone":
        raise NotFound(f"no sensor {sensor!r}")
    return Calibration(sensor=sensor, offset=offset)
