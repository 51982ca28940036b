"""PostgreSQL as a node's engine: ``postgresql://user@host:port/db?schema=NAME``."""

from __future__ import annotations

from polyport.backends.postgresql.bus import PostgresBus
from polyport.backends.postgresql.db import PostgresDatabase
from polyport.backends.postgresql.eventlog import PostgresEventLog
from polyport.backends.postgresql.records import PostgresRecordStore
from polyport.backends.postgresql.workqueue import PostgresWorkQueue
from polyport.core.bus import Bus
from polyport.core.eventlog import EventLog, History
from polyport.core.records import RecordStore
from polyport.core.workqueue import WorkQueue


def build(
    url: str, options: dict[str, str], history: History
) -> tuple[EventLog, Bus, WorkQueue, RecordStore]:
    """The shared log, work queue and records in ``?schema=`` (``polyport`` by default)
    of the database at ``url``, on one pool, and the bus on ``LISTEN``/``NOTIFY``."""
    database = PostgresDatabase(url, schema=options.get("schema", "polyport"))
    return (
        PostgresEventLog(database, history),
        PostgresBus(database),
        PostgresWorkQueue(database),
        PostgresRecordStore(database),
    )
