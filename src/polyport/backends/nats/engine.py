"""NATS JetStream as a node's engine: ``nats://host:port?name=NAME``."""

from __future__ import annotations

from polyport.backends.nats.bus import NatsBus
from polyport.backends.nats.eventlog import NatsEventLog
from polyport.core.bus import Bus
from polyport.core.eventlog import EventLog, History


def event_log(url: str, options: dict[str, str], history: History) -> tuple[EventLog, Bus]:
    """The shared log in the stream ``{name}`` (``polyport`` by default) at ``url``, and
    its bus on the core subject ``polyport-bus.{name}``."""
    name = options.get("name", "polyport")
    return NatsEventLog(url, history, name=name), NatsBus(url, name=name)
