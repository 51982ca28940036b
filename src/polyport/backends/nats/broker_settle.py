"""How a node settles what it received: ack, retry, release, dead letter (see :mod:`.broker`
for why each step is there).

* An **ack of a fast receipt** within its lease (:attr:`.Held.fast_until`) is
  JetStream's ack alone, its answer awaited: :meth:`Settlements.ack`.
* Any other settlement first rewrites the delivery's lease record, a
  compare-and-set at the revision its receipt wrote (a fast receipt's: on
  "none yet"), and is refused (False) when that fails: the holder was
  received over, or settled already. Then JetStream hears of it: an ack
  (answered, not awaited: the record settled it, and the answer removes the
  record), a nak (retry, release), or the dead-letter stream and a term.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyport.backends.nats.broker_keys import KeyWaiters
from polyport.backends.nats.broker_leases import Held, LeaseKeeper, held_of
from polyport.backends.nats.broker_receipts import Receipts, nak
from polyport.backends.nats.broker_records import LeaseRecords
from polyport.backends.nats.broker_wire import QueueNames, Received
from polyport.backends.nats.client import JetStreamClient
from polyport.core.broker import Delivery
from polyport.core.errors import Unavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.backends.nats.broker")


class Settlements:
    """The settlements of one broker, and its acks still waiting for their answers."""

    def __init__(
        self,
        client: JetStreamClient,
        records: LeaseRecords,
        leases: LeaseKeeper,
        receipts: Receipts,
        waiters: KeyWaiters,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.records = records
        self.leases = leases
        self.receipts = receipts
        self.waiters = waiters
        self.clock = clock
        #: Acks sent and not yet answered, and until when each is waited for (monotonic);
        #: those sent before a reconnection are not waited for (their answers are lost).
        self._acking: deque[tuple[float, asyncio.Future[None]]] = deque()
        client.on_reconnect.append(self._acking.clear)

    async def ack(self, delivery: Delivery) -> bool:
        held = held_of(delivery)
        if held.fast and not held.settled and time.monotonic() < held.fast_until:
            return await self._ack_fast(held)
        settled = await self._settle(delivery, {"state": "done"})
        if settled is None:
            return False
        await self._ack_later(settled.names, settled.received, settled.revision)
        return True

    async def retry(self, delivery: Delivery, *, delay: float, error: str) -> bool:
        delay = max(0.0, delay)
        held = await self._settle(
            delivery, {"state": "waiting", "due": self.clock() + delay, "error": error}
        )
        if held is None:
            return False
        await self.client.request(held.received.reply, nak(delay))
        return True

    async def release(self, delivery: Delivery) -> bool:
        held = held_of(delivery)
        change = {"state": "waiting", "due": 0.0, "attempts": held.record.attempts - 1}
        if await self._settle(delivery, change) is None:
            return False
        await self.client.request(held.received.reply, b"-NAK")
        return True

    async def dead_letter(self, delivery: Delivery, *, error: str) -> bool:
        held = await self._settle(delivery, {"state": "dead", "error": error, "died": self.clock()})
        if held is None:
            return False
        await self.receipts.finish(held.names, held.received, held.record)
        return True

    async def acks_answered(self) -> None:
        """Wait until JetStream answered this node's acks sent so far (each for at most the
        timeout), so that what this node reads next (stats, listings) no longer has the
        messages it acked: an ack returns once its record says done, before the answer."""
        if not self.client.connected:
            return  # their answers are lost with the connection
        now = time.monotonic()
        waiting = [future for until, future in self._acking if until > now and not future.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=max(until for until, _ in self._acking) - now)

    # -- the record first -----------------------------------------------------------------

    async def _settle(self, delivery: Delivery, change: dict[str, Any]) -> Held | None:
        """Rewrite the record of a delivery still held, at the revision its receipt wrote
        (a fast receipt's: on "none yet"); None if it is not (settled already, or received
        over since)."""
        held = held_of(delivery)
        if held.settled:
            return None
        written = await self._write(held, change)
        self.leases.let_go(held)  # either way, no longer this receipt's to settle
        return written

    async def _write(self, held: Held, change: dict[str, Any]) -> Held | None:
        record = held.record.but(**change)
        written = await self.records.write(held.names, held.received.seq, record, held.revision)
        if written is None:
            return None
        held.record, held.revision = record, written
        return held

    async def _ack_fast(self, held: Held) -> bool:
        """Ack a fast receipt within its lease: JetStream's ack, its answer awaited, and no
        record. The answer proves the ack was taken while the lease held, if it came before
        the lease could end on the server (:attr:`Held.since` plus ``AckWait``): JetStream
        delivers a message again only once its ack wait has run out. An answer later than
        that, or none, leaves it unknown whether another node received the message first,
        so the record decides, as for any late settlement: written ``done`` on "none yet"
        (True: a later receipt finds it and finishes), or found written by a later receipt
        (False)."""
        self.leases.let_go(held)
        try:
            await self.client.request(held.received.reply, b"+ACK")
        except Unavailable:
            if not self.client.connected:
                raise  # the message comes back after the ack wait, unless the ack got there
        else:
            if time.monotonic() <= held.since + held.ack_wait:
                return True
        written = await self._write(held, {"state": "done"})
        if written is None:
            return False
        await self._ack_later(written.names, written.received, written.revision)
        return True

    async def _ack_later(self, names: QueueNames, r: Received, revision: int) -> None:
        """Ack a delivery whose record says done, without waiting for JetStream's answer:
        the record is what settled it (a lost ack brings the message back to a receipt
        that finds it done and finishes it). The answer, when it comes, means the message
        left the stream: only then is its key's next woken and its record removed, so a
        receipt never finds a message still there without its record."""

        async def acked(msg: Msg) -> None:
            del msg  # any answer: JetStream took the ack
            try:
                if r.subject != names.subject:  # a key's head is gone: wake the next
                    await self.waiters.head_gone(names.subject, r.subject)
                await self.records.drop(names, revision)
            except Unavailable as exc:  # settled all the same: expire's sweep removes it later
                log.debug("the lease record of %s #%d stays: %s", names.queue, r.seq, exc)
            finally:  # what the node sends next goes after these
                if not answered.done():
                    answered.set_result(None)

        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.client.send(r.reply, b"+ACK", self.client.answer_later(acked))
        acking = self._acking
        now = time.monotonic()
        while acking and (acking[0][1].done() or acking[0][0] < now):
            acking.popleft()
        acking.append((now + self.client.timeout, answered))


__all__ = ["Settlements"]
