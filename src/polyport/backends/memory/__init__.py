"""Everything in this process's memory: fast, bounded, and gone when the process ends.

For tests, demos and nodes that need no durability. Several nodes of one
process may share one instance, as nodes share a network engine.
"""

from polyport.backends.memory.eventlog import MemoryEventLog
from polyport.backends.memory.records import MemoryRecordStore
from polyport.backends.memory.workqueue import MemoryWorkQueue

__all__ = ["MemoryEventLog", "MemoryRecordStore", "MemoryWorkQueue"]
