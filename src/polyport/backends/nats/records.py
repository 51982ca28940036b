"""Records in a NATS JetStream KV bucket: the :class:`~polyport.core.records.RecordStore` port.

Every node that opens a store of one ``name`` on one NATS shares the bucket
``{name}-rec`` (its stream ``KV_{name}-rec``). A record is the KV key
``r.{token}``, its key one token (:func:`~.workrecords.name_token`: KV keys
hold no spaces, ``*`` or ``>``, and a ``.`` would split a token), and its
message is its value. Its version is the message's revision, a sequence of
the stream: it grows with every write to the bucket and is never given
again, even to a key deleted and written anew.

Every write reads the key first and then writes at the revision it read
(``Nats-Expected-Last-Subject-Sequence``, as the work queue does), so of two
writers of one version JetStream stores one and refuses the other; a write
expecting absence over a delete marker expects the marker's revision. A
delete writes a marker at the record's revision, then purges the marker,
so deleted keys leave nothing in the stream.

A value too large for one message (the server's ``max_payload`` counts
headers too) is written first as chunks under ``c.{token}.{nonce}.{n}``,
and its record names them in a ``Polyport-Chunks`` header; the chunks of the
record a write replaces are purged after it. Chunks of a write whose answer
was lost may stay behind.

Costs. :meth:`~NatsRecordStore.get` is one direct get (more for a chunked
value); a write or delete a read and a write. :meth:`~NatsRecordStore.scan`
cannot ask JetStream for a prefix (a subject filter matches whole tokens, and
tokens order by their encoding), so each page lists the keys of *every*
record of the bucket through a headers-only consumer, decodes, filters and
sorts them, then reads the page's values: a page costs the whole bucket's
keys. Fine for what records hold (webhook endpoints, attempt histories:
thousands, not millions); not a store for large collections.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polyport.backends.nats.client import (
    TIMEOUT,
    JetStreamClient,
    engine_errors,
    message_seq,
    unavailable,
)
from polyport.backends.nats.workbucket import WorkBucket, is_marker, pipelined
from polyport.backends.nats.workrecords import name_token, token_name
from polyport.core.errors import InvalidArgument
from polyport.core.records import ABSENT, Record, check_key

if TYPE_CHECKING:
    from nats.aio.msg import Msg

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The header of a record whose value is in chunks: ``{nonce} {size} {chunks}``.
CHUNKS = "Polyport-Chunks"
#: Room left in a message for its subject and headers.
HEADROOM = 8 * 1024
#: Writes an operation may lose to other writers of one key before it is Unavailable.
MAX_ATTEMPTS = 32


def _valid(key: str) -> bool:
    """Whether ``key`` can name a record at all (one that cannot has none)."""
    try:
        check_key(key)
    except InvalidArgument:
        return False
    return True


class NatsRecordStore:
    """The :class:`~polyport.core.records.RecordStore` in a NATS JetStream KV bucket.

    ``name`` names the bucket ``{name}-rec``; ``replicas`` its copies on a cluster.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "polyport",
        replicas: int = 1,
        timeout: float = TIMEOUT,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"invalid record store name {name!r}: use 1-64 of A-Za-z0-9_-")
        self.bucket = f"{name}-rec"
        self.replicas = replicas
        self.client = JetStreamClient(servers, timeout=timeout)
        # The work queue's writes at a revision, purges and reads of a bucket.
        self.kv = WorkBucket(self.client, self.bucket, replicas)
        self.stream = self.kv.stream
        self._opens = 0
        self._opening = asyncio.Lock()

    # -- opening ------------------------------------------------------------------

    async def open(self) -> None:
        async with self._opening:
            self._opens += 1
            if self._opens > 1:
                return
            try:
                await self.client.connect(f"polyport records {self.bucket}")
                await self._create_bucket()
            except BaseException:
                self._opens -= 1
                await self.client.close()
                raise

    async def _create_bucket(self) -> None:
        """Create the bucket if needed (every node asks the same, so this is idempotent)."""
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        with engine_errors("create the record store's KV bucket"):
            js = self.client.conn.jetstream(timeout=self.client.timeout)
            try:
                await js.key_value(self.bucket)
            except BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                    direct=True,
                    description="polyport records: one message per key",
                )
                await js.create_key_value(config)

    async def close(self) -> None:
        async with self._opening:
            if self._opens == 0:
                return
            self._opens -= 1
            if self._opens == 0:
                await self.client.close()

    # -- subjects -----------------------------------------------------------------

    def _record(self, token: str) -> str:
        return f"{self.kv.prefix}r.{token}"

    def _chunks(self, token: str, nonce: str) -> str:
        return f"{self.kv.prefix}c.{token}.{nonce}."

    # -- reading ------------------------------------------------------------------

    async def _value(self, token: str, msg: Msg) -> bytes | None:
        """The value of a record's message; None if its chunks are gone (it was replaced)."""
        chunked = (msg.headers or {}).get(CHUNKS)
        if chunked is None:
            return bytes(msg.data)
        nonce, size, count = chunked.split(" ")
        base = self._chunks(token, nonce)
        parts = await self.client.direct_get_many(
            self.stream, [{"last_by_subj": f"{base}{n}"} for n in range(int(count))]
        )
        if any(part is None for part in parts):
            return None
        data = b"".join(part.data for part in parts if part is not None)
        if len(data) != int(size):
            raise unavailable(f"holds a record of the wrong size in {self.bucket}")
        return data

    async def _read(self, key: str, msg: Msg | None) -> Record | None:
        """The record ``msg`` holds (None: none, or a delete marker), read again while a
        writer replaces it under us."""
        token = name_token(key)
        for _ in range(MAX_ATTEMPTS):
            if msg is None or is_marker(msg):
                return None
            value = await self._value(token, msg)
            if value is not None:
                return Record(key, value, message_seq(msg))
            msg = await self.kv.last(self._record(token))
        raise unavailable("could not read a record (too much contention)")

    async def get(self, key: str) -> Record | None:
        if not _valid(key):
            return None
        return await self._read(key, await self.kv.last(self._record(name_token(key))))

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        if limit <= 0:
            return []
        keys = [k for k in await self._keys() if k.startswith(prefix)]
        keys = sorted(k for k in keys if after is None or k > after)
        found: list[Record] = []
        while keys and len(found) < limit:
            # Records deleted since the listing read as None: read on to fill the page.
            page, keys = keys[: limit - len(found)], keys[limit - len(found) :]
            msgs = await self.client.direct_get_many(
                self.stream, [{"last_by_subj": self._record(name_token(k))} for k in page]
            )
            for key, msg in zip(page, msgs, strict=True):
                record = await self._read(key, msg)
                if record is not None:
                    found.append(record)
        return found

    async def _keys(self) -> list[str]:
        """The key of every record in the bucket, listed headers-only."""
        config: dict[str, Any] = {
            "filter_subject": self._record(">"),
            "deliver_policy": "last_per_subject",
            "headers_only": True,
        }
        msgs = await self.client.fetch(self.stream, config, sys.maxsize, lambda _: True)
        cut = len(self._record(""))
        return [token_name(msg.subject[cut:]) for msg in msgs if not is_marker(msg)]

    # -- writing ------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        check_key(key)
        token = name_token(key)
        subject = self._record(token)
        body, headers, nonce = await self._store_chunks(token, bytes(value))
        for _ in range(MAX_ATTEMPTS):
            msg = await self.kv.last(subject)
            current = None if msg is None or is_marker(msg) else msg
            held = ABSENT if current is None else message_seq(current)
            if expect is not None and held != expect:
                break
            # Over nothing (0) or a delete marker: the marker's revision.
            at = 0 if msg is None else message_seq(msg)
            revision = await self.kv.publish(subject, body, headers, at)
            if revision is not None:
                await self._forget_chunks(token, current)
                return revision
        else:
            await self._forget_new_chunks(token, nonce)
            raise unavailable("could not write a record (too much contention)")
        await self._forget_new_chunks(token, nonce)
        return None

    async def _store_chunks(self, token: str, value: bytes) -> tuple[bytes, dict[str, str], str]:
        """The body and headers of a record of ``value``, and the nonce of the chunks
        written first if it needs them (else "")."""
        room = max(1024, self.client.max_message - HEADROOM)
        if len(value) <= room:
            return value, {}, ""
        nonce = secrets.token_hex(6)
        base = self._chunks(token, nonce)
        chunks = [value[at : at + room] for at in range(0, len(value), room)]
        await pipelined(self.kv.publish(f"{base}{n}", chunk, {}) for n, chunk in enumerate(chunks))
        return b"", {CHUNKS: f"{nonce} {len(value)} {len(chunks)}"}, nonce

    async def _forget_new_chunks(self, token: str, nonce: str) -> None:
        """Purge the chunks of a write that was refused. (One whose answer was lost
        raised before this and leaves them: it may be stored.)"""
        if nonce:
            await self.kv.purge(self._chunks(token, nonce) + ">")

    async def _forget_chunks(self, token: str, replaced: Msg | None) -> None:
        chunked = None if replaced is None else (replaced.headers or {}).get(CHUNKS)
        if chunked is not None:
            await self.kv.purge(self._chunks(token, chunked.split(" ")[0]) + ">")

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        if not _valid(key):
            return False
        token = name_token(key)
        subject = self._record(token)
        for _ in range(MAX_ATTEMPTS):
            msg = await self.kv.last(subject)
            if msg is None or is_marker(msg):
                return False
            revision = message_seq(msg)
            if expect is not None and revision != expect:
                return False
            marker = await self.kv.publish(subject, b"", {"KV-Operation": "DEL"}, revision)
            if marker is not None:
                # The marker too: a key written again after it keeps its record.
                await self.kv.purge(subject, marker + 1)
                await self._forget_chunks(token, msg)
                return True
            if expect is not None:
                return False  # it moved on
        raise unavailable("could not delete a record (too much contention)")


__all__ = ["CHUNKS", "NatsRecordStore"]
