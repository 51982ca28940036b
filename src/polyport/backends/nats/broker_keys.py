"""Waking the messages set aside behind their key's head as soon as the head is gone.

A keyed message received while an older one of its key is still in the stream
is naked for a short delay (see :mod:`.broker`). Without more, the next
message of a key would wait out that delay after its head finished: up to a
second per message of a busy key. So the node that sets a message aside
remembers the delivery, and the node that acks or buries a key's head says so
on the core subject ``{prefix}.{queue}.wake`` (the key's subject as payload):
every node that set a message of that key aside naks its oldest one again,
without a delay, and JetStream delivers it at once.

A nak names a delivery, and JetStream takes it even once the message was
delivered again since — which would hand a message out a second time while
it is held. So a node wakes only a delivery whose own delay has not run out
(less a margin): until then JetStream cannot have delivered the message
again, except by this wake, after which the delivery is forgotten. A lost
wake costs only the delay.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from polyport.backends.nats.client import JetStreamClient, engine_errors

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

#: A delivery is woken only while this much of its delay is left.
MARGIN = 0.05
#: Deliveries remembered per key, and keys remembered, at most.
PER_KEY = 32
KEYS = 10_000


class KeyWaiters:
    """The deliveries this node set aside behind their key, by the key's subject."""

    def __init__(self, client: JetStreamClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        #: Key subject → stream sequence → (the delivery's ack subject, its delay's end).
        self._behind: dict[str, dict[int, tuple[str, float]]] = {}
        self._sub: Subscription | None = None

    async def open(self) -> None:
        with engine_errors("subscribe"):
            self._sub = await self.client.conn.subscribe(f"{self.prefix}.*.wake", cb=self._woken)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        self._behind.clear()
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def set_aside(self, subject: str, seq: int, reply: str, delay: float) -> None:
        now = time.monotonic()
        if len(self._behind) >= KEYS:
            self._behind = {
                key: waiting
                for key, waiting in self._behind.items()
                if any(until > now for _, until in waiting.values())
            }
        waiting = self._behind.setdefault(subject, {})
        waiting[seq] = (reply, now + delay)
        if len(waiting) > PER_KEY:
            del waiting[max(waiting)]

    def handed_out(self, subject: str, seq: int) -> None:
        waiting = self._behind.get(subject)
        if waiting is not None:
            waiting.pop(seq, None)
            if not waiting:
                del self._behind[subject]

    async def head_gone(self, queue_subject: str, subject: str) -> None:
        """Tell every node that a key's head left the stream (best effort)."""
        if self.client.connected:
            with contextlib.suppress(Exception):
                await self.client.conn.publish(f"{queue_subject}.wake", subject.encode())

    async def _woken(self, msg: Msg) -> None:
        subject = msg.data.decode(errors="replace")
        waiting = self._behind.get(subject)
        if not waiting:
            return
        now = time.monotonic()
        for seq in sorted(waiting):
            reply, until = waiting.pop(seq)
            if until - now > MARGIN:
                if self.client.connected:
                    with contextlib.suppress(Exception):
                        await self.client.conn.publish(reply, b"-NAK")
                break
        if not waiting:
            self._behind.pop(subject, None)


__all__ = ["KeyWaiters"]
