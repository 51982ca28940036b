"""NATS JetStream as a node's engine: ``nats://host:port?name=NAME``."""

from __future__ import annotations

from polyport.backends.nats.bus import NatsBus
from polyport.backends.nats.eventlog import NatsEventLog
from polyport.backends.nats.records import NatsRecordStore
from polyport.backends.nats.workqueue import NatsWorkQueue
from polyport.core.bus import Bus
from polyport.core.eventlog import EventLog, History
from polyport.core.records import RecordStore
from polyport.core.workqueue import WorkQueue


def build(
    url: str, options: dict[str, str], history: History
) -> tuple[EventLog, Bus, WorkQueue, RecordStore]:
    """The shared log in the stream ``{name}`` (``polyport`` by default) at ``url``, its bus
    on the core subject ``polyport-bus.{name}``, the work queue in the KV bucket
    ``{name}-wq`` and the records in ``{name}-rec``."""
    name = options.get("name", "polyport")
    return (
        NatsEventLog(url, history, name=name),
        NatsBus(url, name=name),
        NatsWorkQueue(url, name=name),
        NatsRecordStore(url, name=name),
    )
