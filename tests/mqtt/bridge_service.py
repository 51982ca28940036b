"""A contract for the bridge tests: alerts go out to the broker, sensor readings come in."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from polyport import Service


class Reading(BaseModel):
    """A reading of one sensor, published by devices on the broker."""

    sensor: Annotated[str, Field(min_length=1, max_length=32)]
    celsius: Annotated[float, Field(ge=-80, le=150)]


class Alert(BaseModel):
    """A threshold crossed, raised by the service and sent to the broker."""

    level: str
    text: str


plant = Service("plant", version=1)
ReadingEvent = plant.event(
    "sensors.reading", Reading, channel="sensors/{sensor}/reading", publish_scopes=[]
)
AlertEvent = plant.event("alerts.raised", Alert, channel="alerts/{level}")


@plant.method
async def raise_alert(level: str, text: str) -> Alert:
    """Raise an alert: published as an event (over REST: POST /v1/raise_alert)."""
    alert = Alert(level=level, text=text)
    await AlertEvent.publish(alert)
    return alert
