"""Lease records: what JetStream does not keep of a received message, one record per message.

A JetStream consumer knows how often it delivered a message
(``num_delivered``) but not why: a lost lease, a retry, a release, a message
offered before its delay or ahead of its key are all redeliveries to it. And
it takes an ack from any holder, even one whose ack wait ran out and whose
message another node received since. So the broker keeps a small record per
received message — but for the usual one, handled fast (see :mod:`.broker`:
a first delivery without key or delay, acked within its lease, has none) —
in the queue's ``{prefix}_{queue}_LEASES`` stream, on the
subject ``{prefix}.{queue}.lease.{seq}`` (one message per subject), written with
``Nats-Expected-Last-Subject-Sequence`` — a compare-and-set on the record's
revision:

* a receipt writes ``held`` with its ``num_delivered`` (the **fencing token**:
  it grows with every delivery of the message) and the attempts so far plus
  one; a receipt that finds ``held`` by a smaller ``num_delivered`` took over a
  lost lease. A fast receipt writes nothing: its settlement, if it needs a
  record, writes the one the receipt would have (``num_delivered`` 1, one
  attempt) on "none yet";
* a settlement rewrites the record at the revision its receipt wrote — so a
  holder whose message was received over since (a newer revision) is refused
  — to ``done``, ``waiting`` (retry, release: with the time it is due, the
  error, and the attempts a release does not count) or ``dead``, and only
  then tells JetStream (ack, nak, term);
* a receipt that finds ``done`` or ``dead`` finishes what a holder that died
  between the two began; one that finds ``waiting`` before its due time naks
  the message for the rest of it.

A receipt of a delayed message's first delivery (once its delay passed) has
no record to read, so those of one pull are written together
(:meth:`~LeaseRecords.write_many`: pipelined, each its own compare-and-set).
A finished message's record is purged once JetStream answered its ack
(deleted by its sequence, sent without a reply subject, so not answered
either); what a crash or a lost request leaves behind,
:meth:`~LeaseRecords.scan` lets ``expire`` find.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from polyport.backends.nats.broker_wire import QueueNames
from polyport.backends.nats.client import (
    WRONG_LAST_SEQUENCE,
    ApiError,
    JetStreamClient,
    message_seq,
    status,
    unavailable,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg

State = Literal["held", "waiting", "done", "dead"]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One received message's state beyond JetStream's."""

    state: State
    #: ``num_delivered`` of the receipt that holds (or last held) the message.
    holder: int
    #: Receipts counted as attempts so far (a release takes its receipt back).
    attempts: int
    #: The consumer's creation time the holder saw: a record of an older consumer
    #: (deleted and made again) holds nothing, its counts of deliveries restarted.
    consumer: str = ""
    error: str | None = None
    #: ``waiting``: not received again before this (Unix seconds).
    due: float = 0.0
    #: ``held``: when the lease ends unless extended, as the holder knew it at receipt.
    until: float = 0.0
    #: ``dead``: when it died.
    died: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "s": self.state,
                "n": self.holder,
                "a": self.attempts,
                "c": self.consumer,
                "e": self.error,
                "d": self.due,
                "u": self.until,
                "t": self.died,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> LeaseRecord:
        raw: dict[str, Any] = orjson.loads(data)
        return cls(
            state=raw["s"],
            holder=int(raw["n"]),
            attempts=int(raw["a"]),
            consumer=str(raw.get("c") or ""),
            error=raw.get("e"),
            due=float(raw.get("d") or 0.0),
            until=float(raw.get("u") or 0.0),
            died=float(raw.get("t") or 0.0),
        )

    def but(self, **changes: Any) -> LeaseRecord:
        """This record with ``changes`` (what :func:`dataclasses.replace` does, at a
        fraction of its cost: one is made per settlement)."""
        fields: dict[str, Any] = {
            "state": self.state,
            "holder": self.holder,
            "attempts": self.attempts,
            "consumer": self.consumer,
            "error": self.error,
            "due": self.due,
            "until": self.until,
            "died": self.died,
        }
        fields.update(changes)
        return LeaseRecord(**fields)


class LeaseRecords:
    """The lease records of every queue of one broker, on its connection."""

    def __init__(self, client: JetStreamClient) -> None:
        self.client = client

    async def read(self, names: QueueNames, seq: int) -> tuple[LeaseRecord | None, int]:
        """A message's record and its revision; ``(None, 0)`` if it has none."""
        msg = await self.client.direct_get(
            names.lease_stream, {"last_by_subj": names.lease_subject(seq)}
        )
        if msg is None:
            return None, 0
        return LeaseRecord.from_json(msg.data), message_seq(msg)

    async def read_many(
        self, names: QueueNames, seqs: Sequence[int]
    ) -> list[tuple[LeaseRecord | None, int]]:
        """The records of many messages, read at once (for listings)."""
        if not seqs:
            return []
        msgs = await self.client.direct_get_many(
            names.lease_stream, [{"last_by_subj": names.lease_subject(seq)} for seq in seqs]
        )
        return [
            (None, 0) if msg is None else (LeaseRecord.from_json(msg.data), message_seq(msg))
            for msg in msgs
        ]

    async def write(
        self, names: QueueNames, seq: int, record: LeaseRecord, expected: int
    ) -> int | None:
        """Store ``record`` if the message's record is still at revision ``expected`` (0:
        it has none); the new revision, or None when another write got there first."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected)}
        return _written(
            names, await self.client.request(names.lease_subject(seq), record.to_json(), headers)
        )

    async def write_many(
        self, names: QueueNames, writes: Sequence[tuple[int, LeaseRecord, int]]
    ) -> list[int | None]:
        """:meth:`write` for many messages at once: the writes pipelined (one round trip
        for all), each its own compare-and-set; the new revisions, None for each that
        another write got to first."""
        answers = await self.client.request_many(
            [
                (
                    names.lease_subject(seq),
                    record.to_json(),
                    {"Nats-Expected-Last-Subject-Sequence": str(expected)},
                )
                for seq, record, expected in writes
            ]
        )
        return [_written(names, msg) for msg in answers]

    async def forget(self, names: QueueNames, seq: int, *, wait: bool = True) -> None:
        """Remove a finished message's record; without ``wait``, only ask for it (sent
        without a reply subject, so not answered: a record left behind is swept by
        ``expire``)."""
        subject = f"$JS.API.STREAM.PURGE.{names.lease_stream}"
        body = {"filter": names.lease_subject(seq)}
        if not wait:
            await self.client.publish(subject, orjson.dumps(body))
            return
        try:
            await self.client.api(subject.removeprefix("$JS.API."), body)
        except ApiError as exc:
            raise unavailable(exc.description) from exc

    async def drop(self, names: QueueNames, revision: int) -> None:
        """Remove one revision of a record — the one a settlement wrote — by its sequence
        (half the server's work of a purge by subject, and nothing newer can go with it);
        asked for, not answered, like :meth:`forget` without ``wait``."""
        body = orjson.dumps({"seq": revision, "no_erase": True})
        await self.client.publish(f"$JS.API.STREAM.MSG.DELETE.{names.lease_stream}", body)

    async def scan(self, names: QueueNames) -> list[tuple[int, LeaseRecord]]:
        """Every record of the queue, by the message's sequence (for stats and clean-up)."""
        found: list[tuple[int, LeaseRecord]] = []
        cut = len(names.lease)
        consumer = await self.client.consumer(names.lease_stream, {"deliver_policy": "all"})
        try:
            more = True
            while more:
                page, more = await consumer.pull(1000, lambda _: True)
                for msg in page:
                    seq = msg.subject[cut:]
                    if msg.data and seq.isdigit():
                        found.append((int(seq), LeaseRecord.from_json(msg.data)))
        finally:
            await consumer.close()
        return found


def _written(names: QueueNames, msg: Msg) -> int | None:
    """The revision a record's write stored, or None if its compare-and-set failed."""
    if status(msg) == "503":
        raise unavailable(f"has no stream {names.lease_stream}")
    answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
    error = answer.get("error")
    if error:
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            return None
        raise unavailable(error.get("description", "refused a lease record"))
    if "seq" not in answer:
        raise unavailable("did not store a lease record")
    return int(answer["seq"])


__all__ = ["LeaseRecord", "LeaseRecords", "State"]
