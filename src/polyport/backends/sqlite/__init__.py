"""The embedded default: event log, jobs and receivers' inbox in one SQLite file."""

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.backends.sqlite.eventlog import SqliteEventLog
from polyport.backends.sqlite.inbox import SqliteReceiverInbox
from polyport.backends.sqlite.jobs import SqliteJobStore

__all__ = ["SqliteDatabase", "SqliteEventLog", "SqliteJobStore", "SqliteReceiverInbox"]
