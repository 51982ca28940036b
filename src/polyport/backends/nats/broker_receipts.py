"""What a receipt does with each delivery a pull brings: hand it out, set it aside, or
finish what a dead holder began — as its lease record says (see :mod:`.broker`).

* A message's **first delivery** without a key or a ``Polyport-Not-Before``
  (see :func:`fast_path`) is handed out **fast**: no record is read or
  written. Its holder writes one only if it settles otherwise than by an
  ack within its lease (see :mod:`.broker_leases`), or gives it up unhandled
  (:meth:`Receipts.give_back`).
* The first delivery of a message with a ``Polyport-Not-Before`` already
  passed has no record to read either: the records of all such deliveries of
  one pull are written at once (pipelined, one round trip for them all), each
  a compare-and-set on "none yet", so a record found after all (a consumer
  made again restarts its counts, or a race) sends that delivery the long way
  below.
* Any other delivery reads its record first: ``done`` or ``dead`` — its holder
  settled it and died before JetStream heard, so the receipt finishes the job
  (ack, or bury and term); ``waiting`` before its due time, or a
  ``Polyport-Not-Before`` still to come — naked for the rest of it, uncounted;
  ``held`` by a later delivery of the same consumer — not this delivery's.
  No record at all on a later delivery of a message that takes the fast path
  means one attempt so far: its first delivery was handed out fast, and lost
  (a holder that died, or an ack lost on the way); its other deliveries would
  have written one.
* A **keyed** message is handed out only if it is its key's head (the first
  message on its subject, ``DIRECT.GET`` ``next_by_subj``); the others are
  naked for :func:`behind_delay` and remembered, to be woken when the head
  goes (:mod:`.broker_keys`).
* Handing out writes the record ``held`` with the delivery's
  ``num_delivered`` and one more attempt, at the revision read; a write that
  lost a race reads again, up to :data:`RACES` times.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from polyport.backends.nats.broker_admin import QueueAdmin
from polyport.backends.nats.broker_keys import KeyWaiters
from polyport.backends.nats.broker_leases import LeaseKeeper
from polyport.backends.nats.broker_records import LeaseRecord, LeaseRecords
from polyport.backends.nats.broker_streams import ConsumerState
from polyport.backends.nats.broker_wire import (
    ERROR,
    NOT_BEFORE,
    QueueNames,
    Received,
    message_id,
    number,
    optional_text,
    port_headers,
    received,
)
from polyport.backends.nats.client import JetStreamClient
from polyport.core.broker import Delivery
from polyport.core.errors import Unavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats.broker")

#: The first delay a message waiting behind its key is naked for; it doubles with
#: each delivery, up to :data:`BEHIND_MAX`.
BEHIND_MIN = 0.05
BEHIND_MAX = 1.0
#: Times a receipt re-reads a lease record another node wrote in between.
RACES = 4


def behind_delay(delivered: int) -> float:
    return min(BEHIND_MAX, BEHIND_MIN * 2.0 ** min(delivered - 1, 16))


def fast_path(names: QueueNames, r: Received) -> bool:
    """Whether a message's first delivery is handed out without a lease record: it has no
    key (no head to wait for, no key to hold) and no ``Polyport-Not-Before`` (delivered
    before its time, it is set aside uncounted; so a later delivery without a record
    means an attempt only for messages that have neither)."""
    return r.subject == names.subject and NOT_BEFORE not in r.wire


def _due(r: Received, now: float) -> bool:
    """Whether a message's ``Polyport-Not-Before`` (if it has a readable one) has passed."""
    not_before = number(r.wire, NOT_BEFORE)
    return not_before is None or not_before <= now


def nak(delay: float) -> bytes:
    """A nak's body: the message is delivered again after ``delay`` seconds."""
    if delay < 0.001:
        return b"-NAK"
    return b'-NAK {"delay": %d}' % int(delay * 1e9)


class Receipts:
    """The receipts of one broker: what its pulls bring, admitted or set aside."""

    def __init__(
        self,
        client: JetStreamClient,
        records: LeaseRecords,
        leases: LeaseKeeper,
        waiters: KeyWaiters,
        admin: QueueAdmin,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.records = records
        self.leases = leases
        self.waiters = waiters
        self.admin = admin
        self.clock = clock

    async def admit(
        self,
        names: QueueNames,
        consumer: ConsumerState,
        msgs: list[Msg],
        lease: float,
        since: float,
    ) -> list[Delivery]:
        """The deliveries among those pulled to hand out, in their order; the others set aside.

        ``since`` is when the pull request that brought them was sent (monotonic)."""
        if not msgs:
            return []
        rs = [received(msg) for msg in msgs]
        now = self.clock()
        fast: dict[int, Delivery] = {}
        plain: list[int] = []
        others: list[int] = []
        for i, r in enumerate(rs):
            if r.delivered != 1:
                others.append(i)
            elif fast_path(names, r):
                fast[i] = self._hand_out_fast(names, r, consumer, lease, since, now)
            elif r.subject == names.subject and _due(r, now):
                plain.append(i)
            else:
                others.append(i)
        if len(fast) == len(rs):
            return list(fast.values())  # the usual case: nothing to read nor write
        jobs: list[Awaitable[Any]] = []
        if plain:  # one pipelined write for them all
            jobs.append(self._admit_plain(names, consumer, [rs[i] for i in plain], lease, since))
        jobs += [self._admit_one(names, consumer, rs[i], lease, since) for i in others]
        done: list[Any]
        if len(jobs) == 1:
            try:
                done = [await jobs[0]]
            except Exception as exc:
                done = [exc]
        else:
            done = await asyncio.gather(*jobs, return_exceptions=True)
        results: list[Delivery | BaseException | None] = [None] * len(rs)
        for i, delivery in fast.items():
            results[i] = delivery
        if plain:
            first = done.pop(0)
            for n, i in enumerate(plain):
                results[i] = first if isinstance(first, BaseException) else first[n]
        for i, result in zip(others, done, strict=True):
            results[i] = result
        out = [result for result in results if isinstance(result, Delivery)]
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure
        if failures:
            if not out:
                raise failures[0]
            # Their messages come back after the ack wait; the others are handed out.
            log.warning(
                "%d message(s) of %s not taken: %s", len(failures), names.queue, failures[0]
            )
        return out

    def _hand_out_fast(
        self,
        names: QueueNames,
        r: Received,
        consumer: ConsumerState,
        lease: float,
        since: float,
        now: float,
    ) -> Delivery:
        """A first delivery handed out without a record (see :func:`fast_path`); its
        :class:`~.broker_leases.Held` keeps the record a settlement would write."""
        record = LeaseRecord(
            "held",
            r.delivered,
            1,
            consumer.created,
            error=optional_text(r.wire, ERROR),
            until=now + max(lease, consumer.ack_wait),
        )
        return self._hand_out(names, r, record, 0, consumer, lease, None, since, fast=True)

    async def _admit_plain(
        self,
        names: QueueNames,
        consumer: ConsumerState,
        rs: list[Received],
        lease: float,
        since: float,
    ) -> list[Delivery | None]:
        """:meth:`_admit_one` for the first deliveries of messages whose not-before has
        passed: their records' writes sent together, one round trip for them all; a write
        that finds a record (written by an older consumer, or a race) goes the long way."""
        if not rs:
            return []
        now = self.clock()
        held_for = max(lease, consumer.ack_wait)
        records = [
            LeaseRecord(
                "held",
                r.delivered,
                1,
                consumer.created,
                error=optional_text(r.wire, ERROR),
                until=now + held_for,
            )
            for r in rs
        ]
        written = await self.records.write_many(
            names, [(r.seq, record, 0) for r, record in zip(rs, records, strict=True)]
        )
        out: list[Delivery | None] = []
        for r, record, revision in zip(rs, records, written, strict=True):
            if revision is None:
                out.append(await self._admit_one(names, consumer, r, lease, since, read=True))
            else:
                out.append(self._hand_out(names, r, record, revision, consumer, lease, None, since))
        return out

    async def _admit_one(
        self,
        names: QueueNames,
        consumer: ConsumerState,
        r: Received,
        lease: float,
        since: float,
        *,
        read: bool = False,
    ) -> Delivery | None:
        """Write a delivery's lease record, as the record found says (see the module's
        docstring); the delivery if it is to be handed out. A first delivery has no
        record to read, unless ``read`` (its write found one)."""
        record, revision = (
            (None, 0) if r.delivered == 1 and not read else await self.records.read(names, r.seq)
        )
        key = names.key_of(r.subject)
        head_checked = key is None
        for _ in range(RACES):
            now = self.clock()
            if record is None:
                not_before = number(r.wire, NOT_BEFORE)
                if not_before is not None and not_before > now:
                    await self._set_aside(r, not_before - now)
                    return None
            elif record.state in ("done", "dead"):
                # Its holder settled it and died before JetStream heard: finish for it.
                await self.finish(names, r, record)
                return None
            elif record.state == "waiting" and record.due > now:
                await self._set_aside(r, record.due - now)
                return None
            elif (
                record.state == "held"
                and record.consumer == consumer.created
                and record.holder >= r.delivered
            ):
                return None  # an older delivery than its holder's: not ours to settle
            if not head_checked:
                head = await self.client.direct_get(
                    names.stream, {"next_by_subj": r.subject, "seq": 0}
                )
                if head is None:
                    return None  # gone (purged) meanwhile
                if int((head.headers or {}).get("Nats-Sequence", 0)) != r.seq:
                    delay = behind_delay(r.delivered)
                    await self._set_aside(r, delay)
                    self.waiters.set_aside(r.subject, r.seq, r.reply, delay)
                    return None
                head_checked = True
            if record is not None:
                attempts, error = record.attempts + 1, record.error
            else:  # a first delivery handed out fast is the one attempt made without a record
                before = 1 if r.delivered > 1 and fast_path(names, r) else 0
                attempts, error = before + 1, optional_text(r.wire, ERROR)
            held_for = max(lease, consumer.ack_wait)
            new = LeaseRecord(
                "held", r.delivered, attempts, consumer.created, error=error, until=now + held_for
            )
            written = await self.records.write(names, r.seq, new, revision)
            if written is not None:
                if key is not None:
                    self.waiters.handed_out(r.subject, r.seq)
                return self._hand_out(names, r, new, written, consumer, lease, key, since)
            record, revision = await self.records.read(names, r.seq)
        return None  # others keep writing it: it comes back after the ack wait

    def _hand_out(
        self,
        names: QueueNames,
        r: Received,
        record: LeaseRecord,
        revision: int,
        consumer: ConsumerState,
        lease: float,
        key: str | None,
        since: float,
        *,
        fast: bool = False,
    ) -> Delivery:
        held = self.leases.hold(
            names, r, record, revision, consumer.ack_wait, lease, since, fast=fast
        )
        return Delivery(
            queue=names.queue,
            id=message_id(r.wire, r.seq),
            body=r.body,
            headers=port_headers(r.wire),
            key=key,
            attempt=record.attempts,
            sent=r.stored,
            lease_until=self.clock() + max(lease, consumer.ack_wait),
            error=record.error,
            token=held,
        )

    async def give_back(self, names: QueueNames, consumer: ConsumerState, r: Received) -> None:
        """Nak a delivery nobody will handle (its receive gave up), so the next receipt gets
        it at once. A first delivery that would have been handed out fast writes its record
        first (``waiting``, no attempt), since its next receipt would otherwise count it as
        an attempt made; if that write fails, the nak goes all the same (one attempt too many
        is counted, nothing is lost)."""
        if r.delivered == 1 and fast_path(names, r):
            error = optional_text(r.wire, ERROR)
            record = LeaseRecord("waiting", r.delivered, 0, consumer.created, error=error)
            try:
                await self.records.write(names, r.seq, record, 0)
            except Unavailable as exc:
                log.debug("giving back %s #%d without its record: %s", names.queue, r.seq, exc)
        await self.client.send(r.reply, b"-NAK", "")

    async def _set_aside(self, r: Received, delay: float) -> None:
        """Nak a delivery that is not to be handled yet (no record written: not counted)."""
        await self.client.send(r.reply, nak(delay), "")

    async def finish(self, names: QueueNames, r: Received, record: LeaseRecord) -> None:
        """Tell JetStream a settlement the record holds (done or dead), and forget it."""
        if record.state == "dead":
            await self.admin.bury(names, r, record)
            await self.client.request(r.reply, b"+TERM")
        else:
            await self.client.request(r.reply, b"+ACK")
        if r.subject != names.subject:  # a key's head is gone: wake the next
            await self.waiters.head_gone(names.subject, r.subject)
        try:
            await self.records.forget(names, r.seq, wait=False)
        except Unavailable as exc:  # settled all the same: expire's sweep removes it later
            log.debug("the lease record of %s #%d stays: %s", names.queue, r.seq, exc)


__all__ = ["BEHIND_MAX", "BEHIND_MIN", "RACES", "Receipts", "behind_delay", "fast_path", "nak"]
