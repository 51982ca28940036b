"""A queue's dead letters and listings on JetStream: bury, list, redrive, peek, count, sweep.

The dead-letter stream is an ordinary (limits) stream, read by ephemeral
consumers from a sequence on; the queue's own stream is a work-queue stream,
which takes no second consumer beside ``polyport``, so listings read it by
direct gets (``next_by_subj`` ``>`` from a sequence on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from polyport.backends.nats.broker_records import LeaseRecord, LeaseRecords
from polyport.backends.nats.broker_streams import QueueStreams
from polyport.backends.nats.broker_wire import (
    ATTEMPTS,
    DIED,
    ERROR,
    ID,
    KEY,
    MSG_ID,
    NOT_BEFORE,
    SENT,
    QueueNames,
    Received,
    header_text,
    message_id,
    number,
    optional_text,
    port_headers,
    user_wire_headers,
)
from polyport.backends.nats.client import (
    STREAM_NOT_FOUND,
    ApiError,
    JetStreamClient,
    message_seq,
    message_subject,
    status,
    unavailable,
)
from polyport.core.broker import QueuedMessage, QueueStats

if TYPE_CHECKING:
    from nats.aio.msg import Msg

#: Dead letters read per page when redriving them all.
PAGE = 200


class QueueAdmin:
    """What operators do with a queue, and where its dead letters go."""

    def __init__(
        self,
        client: JetStreamClient,
        streams: QueueStreams,
        records: LeaseRecords,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.streams = streams
        self.records = records
        self.clock = clock

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        """Store a message; False if its ``Nats-Msg-Id`` was already stored."""
        msg = await self.client.request(subject, body, headers)
        if status(msg) == "503":
            raise unavailable(f"has no stream for {subject}")
        answer: dict[str, Any] = orjson.loads(msg.data) if msg.data else {}
        if answer.get("error") or "seq" not in answer:
            raise unavailable(f"refused a message: {answer.get('error', answer)}")
        return not answer.get("duplicate", False)

    # -- dead letters ---------------------------------------------------------------------

    async def bury(self, names: QueueNames, r: Received, record: LeaseRecord) -> None:
        """Store a message as a dead letter with its story (once, whoever finishes it)."""
        id = message_id(r.wire, r.seq)
        headers = user_wire_headers(r.wire) | {
            MSG_ID: f"{r.seq}:{r.stored_ns}",
            ID: header_text(id),
            ATTEMPTS: str(record.attempts),
            ERROR: header_text(record.error or ""),
            SENT: f"{r.stored:.6f}",
            DIED: f"{record.died:.6f}",
        }
        key = names.key_of(r.subject)
        if key is not None:
            headers[KEY] = header_text(key)
        await self._publish(names.dead_subject(id), r.body, headers)

    async def dead(
        self, names: QueueNames, *, limit: int, after: str | None
    ) -> list[QueuedMessage]:
        start = int(after) + 1 if after is not None and after.isdigit() else 1
        config = {"deliver_policy": "by_start_sequence", "opt_start_seq": start}
        msgs = await self.client.fetch(names.dead_stream, config, max(1, limit), lambda _: True)
        return [_dead_letter(names, msg) for msg in msgs]

    async def redrive(self, names: QueueNames, ids: Sequence[str] | None) -> int:
        count = 0
        if ids is None:
            consumer = await self.client.consumer(names.dead_stream, {"deliver_policy": "all"})
            try:
                more = True
                while more:
                    page, more = await consumer.pull(PAGE, lambda _: True)
                    for msg in page:
                        count += await self._redrive_one(names, msg)
            finally:
                await consumer.close()
            return count
        for id in dict.fromkeys(ids):
            seq = 0
            while True:
                letter = await self.client.direct_get(
                    names.dead_stream, {"next_by_subj": names.dead_subject(id), "seq": seq + 1}
                )
                if letter is None:
                    break
                seq = message_seq(letter)
                count += await self._redrive_one(names, letter)
        return count

    async def _redrive_one(self, names: QueueNames, msg: Msg) -> int:
        """Send a dead letter again as a new message, then delete it from the dead letters."""
        wire = msg.headers or {}
        seq = message_seq(msg)
        id = message_id(wire, seq)
        key = optional_text(wire, KEY)
        headers = user_wire_headers(wire) | {
            # The id is known to the stream (it was sent): a new one, the same for
            # every try of this redrive, so a redrive cut off and done again stores it once.
            MSG_ID: f"{header_text(id)}~redrive~{seq}",
            ID: header_text(id),
        }
        if key is not None:
            headers[KEY] = header_text(key)
        if wire.get(ERROR):
            headers[ERROR] = wire[ERROR]
        await self._publish(names.subject_for(key), msg.data, headers)
        return 1 if await self.streams.delete_message(names.dead_stream, seq) else 0

    # -- the queue's stream ---------------------------------------------------------------

    async def peek(
        self, names: QueueNames, *, limit: int, here: Mapping[int, float]
    ) -> list[QueuedMessage]:
        """Messages waiting or in flight; ``here`` are this node's receipts held without a
        lease record (their sequences, and when their leases end)."""
        msgs: list[Msg] = []
        seq = 0
        while len(msgs) < limit:
            msg = await self.client.direct_get(names.stream, {"next_by_subj": ">", "seq": seq + 1})
            if msg is None:
                break
            msgs.append(msg)
            seq = message_seq(msg)
        records = await self.records.read_many(names, [message_seq(msg) for msg in msgs])
        return [
            _waiting(names, msg, record, here.get(message_seq(msg)))
            for msg, (record, _) in zip(msgs, records, strict=True)
        ]

    async def count(self, names: QueueNames) -> int:
        """Messages and dead letters (0 for streams that are not there)."""
        total = 0
        for stream in (names.stream, names.dead_stream):
            with contextlib.suppress(_Missing):
                total += await self._messages(stream)
        return total

    async def _messages(self, stream: str) -> int:
        try:
            info = await self.client.api(f"STREAM.INFO.{stream}")
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise _Missing() from exc
            raise unavailable(exc.description) from exc
        return int(info["state"]["messages"])

    async def stats(self, names: QueueNames, *, here: int) -> QueueStats:
        """In flight: the lease records held (every node's) and ``here``, this node's
        receipts held without a record (another node's of those count as waiting)."""
        messages, dead = await self.streams.counts(names)
        held = sum(1 for _, record in await self.records.scan(names) if record.state == "held")
        in_flight = min(held + here, messages)
        return QueueStats(waiting=messages - in_flight, in_flight=in_flight, dead=dead)

    async def sweep(self, names: QueueNames) -> int:
        """Remove the lease records of messages no longer in the stream; how many."""
        records = await self.records.scan(names)
        if not records:
            return 0
        seqs = [seq for seq, _ in records]
        found = await self.client.direct_get_many(names.stream, [{"seq": seq} for seq in seqs])
        gone = [seq for seq, msg in zip(seqs, found, strict=True) if msg is None]
        for seq in gone:
            await self.records.forget(names, seq)
        return len(gone)


class _Missing(Exception):
    pass


def _time(msg: Msg) -> float:
    """When a message from a direct get was stored (``Nats-Time-Stamp``, RFC 3339 in ns)."""
    stamp = (msg.headers or {}).get("Nats-Time-Stamp", "")
    if not stamp:
        return 0.0
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)


def _dead_letter(names: QueueNames, msg: Msg) -> QueuedMessage:
    wire = msg.headers or {}
    seq = message_seq(msg)
    attempts = number(wire, ATTEMPTS)
    return QueuedMessage(
        queue=names.queue,
        id=message_id(wire, seq),
        body=msg.data,
        headers=port_headers(wire),
        key=optional_text(wire, KEY),
        state="dead",
        attempts=int(attempts) if attempts is not None else 0,
        sent=number(wire, SENT) or 0.0,
        due=None,
        died=number(wire, DIED),
        error=optional_text(wire, ERROR),
        cursor=str(seq),
    )


def _waiting(
    names: QueueNames, msg: Msg, record: LeaseRecord | None, here: float | None
) -> QueuedMessage:
    """A message of the queue's stream as its record says, or held here until ``here``."""
    wire = msg.headers or {}
    seq = message_seq(msg)
    stored = _time(msg)
    held = here is not None or (record is not None and record.state == "held")
    if here is not None:
        due: float | None = here
    elif held:
        assert record is not None
        due = record.until
    elif record is not None and record.state == "waiting":
        due = max(record.due, stored)
    else:
        due = max(number(wire, NOT_BEFORE) or 0.0, stored)
    return QueuedMessage(
        queue=names.queue,
        id=message_id(wire, seq),
        body=msg.data,
        headers=port_headers(wire),
        key=names.key_of(message_subject(msg)),
        state="in_flight" if held else "waiting",
        attempts=record.attempts if record is not None else (1 if here is not None else 0),
        sent=stored,
        due=due,
        died=None,
        error=record.error if record is not None else optional_text(wire, ERROR),
        cursor=str(seq),
    )


__all__ = ["QueueAdmin"]
