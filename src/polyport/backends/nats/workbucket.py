"""The work queue's KV bucket on the wire: records read, written at a revision, scanned.

Records go out as raw publishes to ``$KV.{bucket}.…`` (as nats-py's KV would
send them) on the log's :class:`~.client.JetStreamClient`, so many are in
flight at once, and come back by direct gets. A write names the revision it
expects (``Nats-Expected-Last-Subject-Sequence``) and learns whether it won;
large fields become blobs first (see :mod:`.workrecords`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import sys
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from polyport.backends.nats.client import (
    WRONG_LAST_SEQUENCE,
    ApiError,
    JetStreamClient,
    engine_errors,
    message_seq,
    status,
    unavailable,
)
from polyport.backends.nats.workrecords import (
    HEADER,
    INLINE_MAX,
    Blob,
    Field,
    Stored,
    Summary,
    decode,
    encode_body,
    error_text,
    parse_header,
    token_name,
    work_header,
)
from polyport.core.workqueue import WorkItem

if TYPE_CHECKING:
    from nats.aio.msg import Msg

T = TypeVar("T")

#: What a KV delete or purge leaves on a key (``KV-Operation``).
MARKERS = ("DEL", "PURGE")


async def pipelined(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``calls`` at once (their requests in flight together); the first failure is
    raised after every call has ended, so none is left running unobserved."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception among them


def is_marker(msg: Msg) -> bool:
    return (msg.headers or {}).get("KV-Operation") in MARKERS


class WorkBucket:
    """The records of every queue of one work queue store (queues and keys as tokens)."""

    def __init__(self, client: JetStreamClient, bucket: str, replicas: int) -> None:
        self.client = client
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.replicas = replicas
        self.prefix = f"$KV.{bucket}."
        self._chunk = INLINE_MAX

    async def open(self) -> None:
        """Create the bucket if needed (every node asks the same, so this is idempotent)."""
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        with engine_errors("create the work queue's KV bucket"):
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
                    description="polyport work queue: one record per item",
                )
                await js.create_key_value(config)
        # Chunks carry no headers; leave room for the protocol's own.
        self._chunk = max(INLINE_MAX, self.client.conn.max_payload - 1024)

    # -- subjects -----------------------------------------------------------------

    def record(self, queue: str, key: str) -> str:
        return f"{self.prefix}i.{queue}.{key}"

    def drop_marker(self, queue: str) -> str:
        return f"{self.prefix}i.{queue}"

    def blobs(self, queue: str, key: str, nonce: str = "") -> str:
        """The subjects of a key's blobs (of one ``nonce``, or all)."""
        return f"{self.prefix}b.{queue}.{key}.{nonce + '.' if nonce else ''}>"

    def queue_blobs(self, queue: str) -> str:
        return f"{self.prefix}b.{queue}.>"

    # -- writing ------------------------------------------------------------------

    async def api(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """``$JS.API.{call}.{stream}``; JetStream's refusals are Unavailable."""
        try:
            return await self.client.api(f"{call}.{self.stream}", body)
        except ApiError as exc:
            raise unavailable(exc.description) from exc

    async def purge(self, subjects: str, before: int | None = None) -> None:
        """Remove the messages on ``subjects`` (of revisions below ``before``)."""
        body: dict[str, Any] = {"filter": subjects}
        if before is not None:
            body["seq"] = before
        await self.api("STREAM.PURGE", body)

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str], expected: int | None = None
    ) -> int | None:
        """Store a message; its revision, or None if the subject's last revision was
        not ``expected`` (0: the subject holds nothing)."""
        if expected is not None:
            headers = headers | {"Nats-Expected-Last-Subject-Sequence": str(expected)}
        msg = await self.client.request(subject, body, headers or None)
        if status(msg) == "503":
            raise unavailable(f"has no stream for the KV bucket {self.bucket}")
        answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
        error = answer.get("error")
        if error:
            if error.get("err_code") == WRONG_LAST_SEQUENCE:
                return None
            raise unavailable(error.get("description", "refused a write"))
        if "seq" not in answer:
            raise unavailable("did not store a work record")
        return int(answer["seq"])

    async def write(
        self, queue: str, key: str, stored: Stored, expected: int | None
    ) -> tuple[Stored, int | None]:
        """Write ``stored`` (large fields as new blobs first) if the record is still at
        ``expected``; what was written and its revision, or None (the new blobs gone).

        A write whose answer is lost raises, and leaves its blobs: it may be stored.
        """
        stored, new = await self.store_blobs(queue, key, stored)
        header = work_header(stored.status, stored.due, stored.seq, stored.finished, stored.group)
        revision = await self.publish(
            self.record(queue, key), encode_body(stored), {HEADER: header}, expected
        )
        if revision is None:
            await self.forget_blobs(queue, key, new)
        return stored, revision

    async def store_blobs(self, queue: str, key: str, stored: Stored) -> tuple[Stored, list[Blob]]:
        """``stored`` with its fields over :data:`INLINE_MAX` written as blobs, and those."""
        new: list[Blob] = []
        fields: dict[str, Any] = {}  # field name → its blob
        for name in ("payload", "result", "error"):
            field = getattr(stored, name)
            if isinstance(field, bytes) and len(field) > INLINE_MAX:
                fields[name] = blob = await self._write_blob(queue, key, field)
                new.append(blob)
        return (dataclasses.replace(stored, **fields) if fields else stored), new

    async def _write_blob(self, queue: str, key: str, data: bytes) -> Blob:
        nonce = secrets.token_hex(6)
        base = self.blobs(queue, key, nonce)[:-1]
        chunks = [data[at : at + self._chunk] for at in range(0, len(data), self._chunk)]
        await pipelined(self.publish(f"{base}{n}", chunk, {}) for n, chunk in enumerate(chunks))
        return Blob(nonce, len(data), len(chunks))

    async def forget_blobs(
        self, queue: str, key: str, blobs: Iterable[Blob], before: int | None = None
    ) -> None:
        """Remove ``blobs``, and with ``before`` every blob of the key older than it."""
        await pipelined(self.purge(self.blobs(queue, key, blob.nonce)) for blob in blobs)
        if before is not None:  # orphans of writes whose answers were lost, too
            await self.purge(self.blobs(queue, key), before)

    async def delete(self, queue: str, key: str, revision: int) -> bool:
        """Delete a record still at ``revision``, then its delete marker and its blobs;
        False if it moved on. A key enqueued again after the marker keeps its record."""
        subject = self.record(queue, key)
        marker = await self.publish(subject, b"", {"KV-Operation": "DEL"}, revision)
        if marker is None:
            return False
        await self.purge(subject, marker + 1)
        await self.forget_blobs(queue, key, (), before=marker)
        return True

    # -- reading ------------------------------------------------------------------

    def _stored(self, msg: Msg | None) -> Stored | None:
        """The record in a direct get's answer (None: no record, or a delete marker)."""
        if msg is None or is_marker(msg):
            return None
        try:
            return decode((msg.headers or {})[HEADER], msg.data, message_seq(msg))
        except (KeyError, ValueError) as exc:
            raise unavailable(f"holds a record that is not a work item: {exc}") from exc

    async def last(self, subject: str) -> Msg | None:
        """The last message on ``subject`` (a filter: the newest of those it matches)."""
        return await self.client.direct_get(self.stream, {"last_by_subj": subject})

    async def read(self, queue: str, key: str) -> Stored | None:
        return self._stored(await self.last(self.record(queue, key)))

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> list[Stored | None]:
        msgs = await self.client.direct_get_many(
            self.stream, [{"last_by_subj": self.record(q, k)} for q, k in keys]
        )
        return [self._stored(msg) for msg in msgs]

    async def load(self, queue: str, key: str, field: Field) -> bytes:
        """A field's bytes, read from its blob if it has one."""
        if isinstance(field, bytes):
            return field
        base = self.blobs(queue, key, field.nonce)[:-1]
        msgs = await self.client.direct_get_many(
            self.stream, [{"last_by_subj": f"{base}{n}"} for n in range(field.chunks)]
        )
        data = b"".join(msg.data for msg in msgs if msg is not None)
        if len(data) != field.size or any(msg is None for msg in msgs):
            raise unavailable("lost part of a work item (its queue was dropped meanwhile?)")
        return data

    async def item(self, queue: str, key: str, stored: Stored) -> WorkItem:
        """The port's view of a record, its blobs read."""
        payload = await self.load(queue, key, stored.payload)
        result = None if stored.result is None else await self.load(queue, key, stored.result)
        error = None if stored.error is None else await self.load(queue, key, stored.error)
        return WorkItem(
            queue=token_name(queue),
            key=token_name(key),
            seq=stored.seq,
            payload=payload,
            status=stored.status,
            attempts=stored.attempts,
            created=stored.created,
            due=stored.due,
            lease=stored.lease,
            claimed=stored.claimed,
            finished=stored.finished,
            error=None if error is None else error_text(error),
            result=result,
            owner=stored.owner,
            group=None if stored.group is None else token_name(stored.group),
        )

    async def scan(self, queue: str, since: int = 1) -> list[tuple[str, int, Summary]]:
        """The records of a queue written at revision ``since`` or later (each key holds
        one), as ``(key token, revision, header)``, read headers-only."""
        config: dict[str, Any] = {"filter_subject": self.record(queue, "*"), "headers_only": True}
        if since > 1:
            config |= {"deliver_policy": "by_start_sequence", "opt_start_seq": since}
        msgs = await self.client.fetch(self.stream, config, sys.maxsize, lambda _: True)
        cut = len(self.record(queue, ""))
        found = []
        for msg in msgs:
            value = (msg.headers or {}).get(HEADER)
            if value is None or is_marker(msg):
                continue
            revision = message_seq(msg)
            try:
                summary = parse_header(value, revision)
            except ValueError as exc:
                raise unavailable(f"holds a record that is not a work item: {exc}") from exc
            found.append((msg.subject[cut:], revision, summary))
        return found


__all__ = ["MARKERS", "WorkBucket", "is_marker", "pipelined"]
