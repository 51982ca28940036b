"""Records in this process's memory: the :class:`~polyport.core.records.RecordStore` port for
tests and for nodes that need no durability.

A dict by key, and the keys in a sorted list for scans. Versions come from
one counter for the whole store, so no key ever gets one twice. Several
nodes of one process share an instance, as they would share a network engine.
"""

from __future__ import annotations

import bisect
import itertools

from polyport.core.records import ABSENT, Record, check_key


class MemoryRecordStore:
    """Records in a dict, lost when the process ends."""

    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._keys: list[str] = []  # sorted: str order is code point order
        self._versions = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> Record | None:
        return self._records.get(key)

    def _holds(self, key: str, expect: int | None) -> bool:
        if expect is None:
            return True
        found = self._records.get(key)
        return found is None if expect == ABSENT else found is not None and found.version == expect

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        check_key(key)
        if not self._holds(key, expect):
            return None
        if key not in self._records:
            bisect.insort(self._keys, key)
        record = Record(key, bytes(value), next(self._versions))
        self._records[key] = record
        return record.version

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        if key not in self._records or not self._holds(key, expect):
            return False
        del self._records[key]
        del self._keys[bisect.bisect_left(self._keys, key)]
        return True

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        start = prefix if after is None or after < prefix else after
        index = bisect.bisect_left(self._keys, start)
        if after is not None and index < len(self._keys) and self._keys[index] == after:
            index += 1
        found: list[Record] = []
        keys = self._keys
        while index < len(keys) and len(found) < limit and keys[index].startswith(prefix):
            found.append(self._records[keys[index]])
            index += 1
        return found


__all__ = ["MemoryRecordStore"]
