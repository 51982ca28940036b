"""The embedded default: event log, work queue and records (jobs, webhooks, the receivers'
inbox) in one SQLite file."""

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.eventlog import SqliteEventLog
from polyport.backends.sqlite.records import SqliteRecordStore
from polyport.backends.sqlite.workqueue import SqliteWorkQueue

__all__ = [
    "SqliteDatabase",
    "SqliteEventLog",
    "SqliteRecordStore",
    "SqliteWorkQueue",
]
