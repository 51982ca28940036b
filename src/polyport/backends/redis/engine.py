"""Redis as a node's engine: ``redis://host:port/db?prefix=NAME``."""

from __future__ import annotations

from polyport.backends.redis.bus import RedisBus
from polyport.backends.redis.eventlog import RedisEventLog
from polyport.core.bus import Bus
from polyport.core.eventlog import EventLog, History


def event_log(url: str, options: dict[str, str], history: History) -> tuple[EventLog, Bus]:
    """The shared log under the keys ``{prefix}…`` (``polyport`` by default) at ``url``,
    and its bus on the pub/sub channel ``{prefix}:bus``."""
    prefix = options.get("prefix", "polyport")
    return RedisEventLog(url, history, prefix=prefix), RedisBus(url, prefix=prefix)
