"""The record store port: small keyed records, written whole, compared and set on a version.

What state is not a queue keeps: webhook endpoints, the attempt history of
deliveries, a fan-out cursor. A **record** is ``(key, value, version)``:
``value`` is opaque bytes its user encodes; ``version`` is a positive integer
the store gives each write. Every backend (memory, SQLite, PostgreSQL, Redis,
NATS KV) implements it and passes the contract suite in
``tests/contract/records_contract.py``. It asks little of an engine on
purpose: a row per key (PostgreSQL), a hash per key and a sorted set of keys
for scans (Redis, with a script for compare-and-set), a KV bucket whose
revision is the version (NATS; scans list the keys).

Guarantees every backend gives (the contract suite checks each):

* **Durable when a write returns**, and seen by every node sharing the
  store from then on.
* **Versions only grow.** Each write of a key gives it a version larger than
  any it had, and a key never gets a version twice — not even after a
  delete and a new write — so an expectation read before a change can never
  match the record after it.
* **Compare and set.** :meth:`RecordStore.put` and :meth:`RecordStore.delete`
  with ``expect`` act only if the record is still at that version
  (:data:`ABSENT`: only if there is none); of two writers racing on one
  version, exactly one wins.
* **Ordered scans.** :meth:`RecordStore.scan` answers the records whose key
  starts with a prefix, in the order of their keys by code point (UTF-8
  bytes), after a given key: a cursor that pages, whatever is written
  meanwhile.

Keys are 1 to :data:`MAX_KEY` printable characters; a backend whose engine
restricts keys (NATS) encodes them, and must keep the order of scans. There
is no transaction across keys: a user whose records must agree writes them
in an order that a crash between two writes leaves harmless. Failures of
the backend itself propagate as its exceptions, or as
:class:`~polyport.core.errors.Unavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

from polyport.core.errors import InvalidArgument

#: The longest key: backends use keys in their own keys and subjects.
MAX_KEY = 400
#: ``expect`` for a write that needs the key absent.
ABSENT = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One record as stored: its value and the version its last write gave it."""

    key: str
    value: bytes
    version: int


class RecordStore(Protocol):
    """Keyed records in one store, shared by the nodes that open it.

    The node builds it (choosing the backend) and hands it to the parts
    that need it. Each user opens and closes it; a backend counts opens, so
    one store serves several users.
    """

    async def open(self) -> None:
        """Connect and create what is missing."""
        ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> Record | None: ...

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        """Write ``value`` whole; its new version, or None if ``expect`` did not hold.

        ``expect`` None writes whatever is there; :data:`ABSENT` only if the key
        has no record; a version only if the record is still at it.
        """
        ...

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        """Forget a record (only at version ``expect``, if given); whether one was."""
        ...

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        """Up to ``limit`` records whose key starts with ``prefix``, ordered by key,
        each with a key greater than ``after`` (None: from the first)."""
        ...


def check_key(key: str) -> None:
    """Refuse an empty or overlong key, or one with control characters."""
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise InvalidArgument(
            f"a record key must be 1-{MAX_KEY} printable characters, not {key[:40]!r}"
        )


async def lead(store: RecordStore, key: str, owner: str, now: float, until: float) -> bool:
    """Take or renew the lease in record ``key`` for ``owner`` until ``until`` (Unix
    seconds); False while another owner holds it past ``now``. ``until`` in the past
    gives it up. One node at a time leads whatever the lease guards (the webhooks'
    fan-out, the queues' event router)."""
    while True:
        found = await store.get(key)
        if found is not None:
            held = orjson.loads(found.value)
            if held["owner"] != owner and held["until"] > now:
                return False  # another node's, and alive
        value = orjson.dumps({"owner": owner, "until": until})
        expect = ABSENT if found is None else found.version
        if await store.put(key, value, expect=expect) is not None:
            return True
        # Another node wrote it meanwhile: look again.


async def scan_all(
    store: RecordStore, prefix: str, *, after: str | None = None, page: int = 500
) -> list[Record]:
    """Every record under ``prefix`` (after the key ``after``), read a page at a time."""
    found: list[Record] = []
    while True:
        batch = await store.scan(prefix, after=after, limit=page)
        found += batch
        if len(batch) < page:
            return found
        after = batch[-1].key


__all__ = ["ABSENT", "MAX_KEY", "Record", "RecordStore", "check_key", "lead", "scan_all"]
