"""The demo's settings: ``[demo]``, ``POLYPORT_DEMO__…`` (importable without the demo)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from polyport.core.config import Section


class DemoConfig(Section):
    """``[demo]``: the simulated sensor fleet of the monitoring demo (docs/mqtt.md, The
    monitoring demo). ``polyport demo`` (``make run``) turns the fleet on."""

    #: Run the simulated sensor fleet: devices publishing over MQTT to this node.
    sensors: bool = False
    #: Seconds between two readings of one sensor (each reading: a temperature and a
    #: humidity); the fleet's rate is two events per sensor per interval.
    sensor_interval: float = Field(default=2.0, ge=0.1, le=3600)
    #: The credential the fleet connects with (CONNECT's password): an API key holding
    #: the ``telemetry`` scope. None: anonymous, which only development mode accepts.
    sensor_key: SecretStr | None = None
    #: A temperature at or above this raises ``alerts.raised`` for its sensor …
    alert_celsius: float = 30.0
    #: … and only one at or below this clears it (``alerts.cleared``): the gap between
    #: the two is the hysteresis that keeps a reading hovering at the line from flapping.
    alert_clear_celsius: float = 28.0

    @model_validator(mode="after")
    def _hysteresis(self) -> DemoConfig:
        if self.alert_clear_celsius >= self.alert_celsius:
            raise ValueError("alert_clear_celsius must be below alert_celsius")
        return self
