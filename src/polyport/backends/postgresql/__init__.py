"""PostgreSQL: the event log, the work queue and the record store (and later the other stores)
shared by every node of a cluster, and the bus on LISTEN/NOTIFY."""

from polyport.core.errors import MissingExtra

try:
    from polyport.backends.postgresql.bus import PostgresBus
    from polyport.backends.postgresql.db import PostgresDatabase
    from polyport.backends.postgresql.eventlog import PostgresEventLog
    from polyport.backends.postgresql.records import PostgresRecordStore
    from polyport.backends.postgresql.workqueue import PostgresWorkQueue
except ImportError as exc:  # psycopg and psycopg_pool come with the 'postgresql' extra
    if exc.name and exc.name.split(".")[0] in {"psycopg", "psycopg_pool"}:
        raise MissingExtra("postgresql", "the PostgreSQL backend") from exc
    raise

__all__ = [
    "PostgresBus",
    "PostgresDatabase",
    "PostgresEventLog",
    "PostgresRecordStore",
    "PostgresWorkQueue",
]
