"""Redis as the engine several nodes share: the event log on Redis Streams and Lua, the bus
on pub/sub, the work queue and the record store on hashes, sorted sets and Lua; and as a
message broker (``queues.broker = redis://…``): queues as streams with a consumer group.

The driver (redis-py's asyncio client, the ``redis`` extra) is imported when a
backend is made, not when this package is: without it, making one raises
:class:`~polyport.core.errors.MissingExtra` naming the extra.
"""

from polyport.backends.redis.broker import RedisStreamsBroker
from polyport.backends.redis.bus import RedisBus
from polyport.backends.redis.eventlog import RedisEventLog
from polyport.backends.redis.records import RedisRecordStore
from polyport.backends.redis.workqueue import RedisWorkQueue

__all__ = ["RedisBus", "RedisEventLog", "RedisRecordStore", "RedisStreamsBroker", "RedisWorkQueue"]
