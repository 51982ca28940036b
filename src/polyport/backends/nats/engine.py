"""NATS JetStream as a node's engine: ``nats://host:port?name=NAME``."""

from __future__ import annotations

from polyport.backends.nats.eventlog import NatsEventLog
from polyport.core.bus import Bus, QuietBus
from polyport.core.eventlog import EventLog, History


def event_log(url: str, options: dict[str, str], history: History) -> tuple[EventLog, Bus]:
    """The shared log in the stream ``{name}`` (``polyport`` by default) at ``url``."""
    return NatsEventLog(url, history, name=options.get("name", "polyport")), QuietBus()
