"""Redis as a node's engine: ``redis://host:port/db?prefix=NAME``."""

from __future__ import annotations

from polyport.backends.redis.bus import RedisBus
from polyport.backends.redis.eventlog import RedisEventLog
from polyport.backends.redis.records import RedisRecordStore
from polyport.backends.redis.workqueue import RedisWorkQueue
from polyport.core.bus import Bus
from polyport.core.eventlog import EventLog, History
from polyport.core.records import RecordStore
from polyport.core.workqueue import WorkQueue


def build(
    url: str, options: dict[str, str], history: History
) -> tuple[EventLog, Bus, WorkQueue, RecordStore]:
    """The shared log, work queue and records under the keys ``{prefix}…`` (``polyport``
    by default) at ``url``, and the bus on the pub/sub channel ``{prefix}:bus``."""
    prefix = options.get("prefix", "polyport")
    return (
        RedisEventLog(url, history, prefix=prefix),
        RedisBus(url, prefix=prefix),
        RedisWorkQueue(url, prefix=prefix),
        RedisRecordStore(url, prefix=prefix),
    )
