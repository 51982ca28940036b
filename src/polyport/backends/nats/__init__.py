"""NATS: the event log in a JetStream stream that several nodes share, the bus on a core
subject, the work queue and the records in KV buckets.

nats-py is imported when a log or queue opens, not here: without the ``nats``
extra, opening raises :class:`~polyport.core.errors.MissingExtra` naming it.
"""

from polyport.backends.nats.bus import NatsBus
from polyport.backends.nats.eventlog import NatsEventLog
from polyport.backends.nats.records import NatsRecordStore
from polyport.backends.nats.workqueue import NatsWorkQueue

__all__ = ["NatsBus", "NatsEventLog", "NatsRecordStore", "NatsWorkQueue"]
