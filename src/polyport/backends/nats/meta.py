"""What the log keeps beside its stream, in a JetStream KV bucket shared by every node.

One key per channel (``c.{tokens}``) holds what the stream alone cannot say:
how far the channel's history was trimmed (``to``: the highest offset no longer
held, ``ts``: its position, see :mod:`.messages`), so an offset is never
assigned twice even when every event of a channel is gone, and a reader
learns of every event it can no longer get. The record is written before the
channel's first event (so an id from one node resolves on another) and before
any purge (so a reader that misses purged events finds the record saying so).
``log`` names the stream's epoch, and every channel record the log epoch it
belongs to, so records a recreated stream left behind are ignored.

Every node keeps a copy of the records, fed by an ordered consumer; a reader
that must be exact first calls :meth:`ChannelRecords.barrier`, which returns
once the copy holds everything written to the bucket before the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from polyport.backends.nats.client import (
    WRONG_LAST_SEQUENCE,
    ApiError,
    JetStreamClient,
    engine_errors,
    message_seq,
    unavailable,
)
from polyport.backends.nats.subjects import channel_epoch, channel_tokens, tokens_channel

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription


@dataclass(frozen=True, slots=True)
class Record:
    """A channel's trimmed history: offsets up to ``to`` (the last at position ``ts``) are gone."""

    log: str
    to: int = 0
    ts: int = 0

    def encode(self) -> bytes:
        return orjson.dumps({"log": self.log, "to": self.to, "ts": self.ts})

    @classmethod
    def decode(cls, data: bytes) -> Record | None:
        try:
            value = orjson.loads(data)
            return cls(str(value["log"]), int(value["to"]), int(value["ts"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class ChannelRecords:
    """The KV bucket of one log: channel records and the log's epoch, cached on this node."""

    def __init__(self, client: JetStreamClient, bucket: str, replicas: int) -> None:
        self.client = client
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.replicas = replicas
        self.log_epoch = ""
        #: channel → its record, for the current log epoch only.
        self.records: dict[str, Record] = {}
        #: channel epoch → channel.
        self.by_epoch: dict[str, str] = {}
        self._seen = 0  # the bucket's newest revision this copy has applied
        self._progress = asyncio.Event()
        self._sub: Subscription | None = None
        # After a reconnection the copy is fed again from a new consumer (nats-py's
        # ordered consumer would notice the lost one only after missed heartbeats).
        self._follow_again = False
        client.on_reconnect.append(self._reconnected)

    def _reconnected(self) -> None:
        self._follow_again = True

    def _subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    async def open(self) -> None:
        """Create the bucket if needed (every node asks the same, so this is idempotent)."""
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        with engine_errors("create the log's KV bucket"):
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
                    description="polyport event log: channel records",
                )
                await js.create_key_value(config)

    async def watch(self, log_epoch: str) -> None:
        """Start (or restart, for a new log epoch) the copy of the records."""
        from nats.js.api import DeliverPolicy

        await self.stop()
        if log_epoch != self.log_epoch:
            self.log_epoch = log_epoch
            self.records.clear()
            self.by_epoch.clear()
        self._seen = 0  # the consumer delivers every record again; later trims win
        self._follow_again = False
        with engine_errors("watch the log's KV bucket"):
            js = self.client.conn.jetstream(timeout=self.client.timeout)
            self._sub = await js.subscribe(
                self._subject(">"),
                stream=self.stream,
                cb=self._apply,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            )

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _apply(self, msg: Msg) -> None:
        key = msg.subject[len(self.bucket) + 5 :]
        if key.startswith("c."):
            record = Record.decode(msg.data)
            if record is not None and record.log == self.log_epoch:
                self.remember(tokens_channel(key[2:]), record)
        assert msg.metadata.sequence is not None
        self._seen = max(self._seen, msg.metadata.sequence.stream)
        self._progress.set()

    def remember(self, channel: str, record: Record) -> None:
        """Keep ``record`` unless this copy already holds a later trim."""
        old = self.records.get(channel)
        if old is None:
            self.by_epoch[channel_epoch(self.log_epoch, channel)] = channel
        elif old.to >= record.to:
            return
        self.records[channel] = record

    async def barrier(self) -> None:
        """Return once this copy holds every record written before the call."""
        if self._follow_again:
            await self.watch(self.log_epoch)
        last = await self.client.direct_get(self.stream, {"last_by_subj": self._subject(">")})
        target = message_seq(last) if last is not None else 0
        try:
            async with asyncio.timeout(self.client.timeout):
                while self._seen < target:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError as exc:
            raise unavailable("did not deliver the log's channel records") from exc

    # -- reading and writing one key ---------------------------------------------

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """A key's value and revision, read from the bucket (not the copy)."""
        msg = await self.client.direct_get(self.stream, {"last_by_subj": self._subject(key)})
        if msg is None or (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return msg.data, message_seq(msg)

    async def put(self, key: str, value: bytes, revision: int | None) -> bool:
        """Write ``key`` if its revision is still ``revision`` (0: absent); False if not."""
        headers = None
        if revision is not None:
            headers = {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        msg = await self.client.request(self._subject(key), value, headers)
        answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
        error = answer.get("error")
        if error:
            if error.get("err_code") == WRONG_LAST_SEQUENCE:
                return False
            raise ApiError(
                error.get("code", 0), error.get("err_code", 0), error.get("description", "")
            )
        if "seq" not in answer:
            raise unavailable("did not store a channel record")
        return True

    async def fresh(self, channel: str) -> Record | None:
        """The channel's record as the bucket holds it now (None: no record in this epoch)."""
        got = await self.get("c." + channel_tokens(channel))
        if got is None:
            return None
        record = Record.decode(got[0])
        if record is None or record.log != self.log_epoch:
            return None
        self.remember(channel, record)
        return record

    async def create(self, channel: str) -> Record:
        """Make the channel's record if it has none in this epoch; return what it holds."""
        key = "c." + channel_tokens(channel)
        record = Record(self.log_epoch)
        for _ in range(16):
            got = await self.get(key)
            if got is not None:
                held = Record.decode(got[0])
                if held is not None and held.log == self.log_epoch:
                    self.remember(channel, held)
                    return held
            if await self.put(key, record.encode(), got[1] if got else 0):
                self.remember(channel, record)
                return record
        raise unavailable("could not record a new channel (too much contention)")

    async def raise_trim(self, channel: str, to: int, ts: int) -> tuple[Record, int]:
        """Record that offsets up to ``to`` (position ``ts``) are gone; keep a later trim if any.

        Returns the record held now and how many offsets this call marked gone
        (none if another node's trim got as far first): the events it drops.
        """
        key = "c." + channel_tokens(channel)
        for _ in range(16):
            got = await self.get(key)
            held = Record.decode(got[0]) if got else None
            if held is not None and held.log != self.log_epoch:
                held = None
            if held is not None and held.to >= to:
                self.remember(channel, held)
                return held, 0
            record = Record(self.log_epoch, to, ts)
            if await self.put(key, record.encode(), got[1] if got else 0):
                self.remember(channel, record)
                return record, to - (held.to if held is not None else 0)
        raise unavailable("could not record a trim (too much contention)")

    async def log_record(self) -> str | None:
        """The stream epoch the bucket was written for, if any."""
        got = await self.get("log")
        return orjson.loads(got[0]).get("epoch") if got else None

    async def set_log_record(self, epoch: str) -> None:
        await self.put("log", orjson.dumps({"epoch": epoch}), None)

    async def purge(self) -> None:
        """Forget every record (the log was reset)."""
        await self.client.api(f"STREAM.PURGE.{self.stream}", {})
