"""Pull requests to a queue's durable consumer, each on an inbox of its own.

Pulled messages arrive with their own subject, not the inbox's, so a request
is told apart by its subscription: each request borrows an inbox (a
subscription kept for the next request when done), so several receives can be
under way at once. A message that arrives on an inbox no request waits on any
longer (its caller gave up, or was cancelled) is given back at once — naked,
by the broker's ``give_back`` (see :meth:`.Receipts.give_back`): it was never
handed out, nor counted, and goes to the next receive instead of waiting out
its ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from polyport.backends.nats.client import JetStreamClient, engine_errors, status, unavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

#: Seconds a request that asks not to wait may take to answer before the consumer is
#: thought missing (a stream purged by another node takes its consumer with it).
NO_WAIT_ANSWER = 2.0
#: Idle inboxes kept for later requests.
SPARE = 8


class ConsumerMissing(Exception):
    """The consumer did not answer, or answered that it was deleted (``deleted``)."""

    def __init__(self, description: str, *, deleted: bool = False) -> None:
        super().__init__(description)
        self.deleted = deleted


class _Inbox:
    """One subscription; while a request uses it, what arrives goes to ``arrived``."""

    def __init__(self, puller: Puller, subject: str) -> None:
        self.puller = puller
        self.subject = subject
        self.sub: Subscription | None = None
        self.arrived: asyncio.Queue[Msg] | None = None

    async def on_message(self, msg: Msg) -> None:
        if self.arrived is not None:
            self.arrived.put_nowait(msg)
        elif status(msg) is None:
            await self.puller.give_back(msg)


class Puller:
    """Pull requests of one broker, and the messages they bring."""

    def __init__(
        self, client: JetStreamClient, give_back: Callable[[Msg], Awaitable[None]] | None = None
    ) -> None:
        self.client = client
        self._give_back = give_back
        self._spare: list[_Inbox] = []
        self._all: list[_Inbox] = []

    async def close(self) -> None:
        inboxes, self._all, self._spare = self._all, [], []
        for inbox in inboxes:
            sub, inbox.sub = inbox.sub, None
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def give_back(self, msg: Msg) -> None:
        """Nak a delivery nobody will handle, so it goes to the next receive at once."""
        if not msg.reply.startswith("$JS.ACK.") or not self.client.connected:
            return
        with contextlib.suppress(Exception):
            if self._give_back is not None:
                await self._give_back(msg)
            else:
                await self.client.conn.publish(msg.reply, b"-NAK")

    async def _borrow(self) -> _Inbox:
        if self._spare:
            return self._spare.pop()
        conn = self.client.conn
        inbox = _Inbox(self, conn.new_inbox())
        with engine_errors("subscribe"):
            inbox.sub = await conn.subscribe(inbox.subject, cb=inbox.on_message)
        self._all.append(inbox)
        return inbox

    async def _return(self, inbox: _Inbox) -> None:
        if len(self._spare) < SPARE:
            self._spare.append(inbox)
            return
        self._all.remove(inbox)
        sub, inbox.sub = inbox.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def pull(self, stream: str, consumer: str, batch: int, wait: float | None) -> list[Msg]:
        """Up to ``batch`` messages: those ready now (``wait`` None), or as soon as one is,
        for at most ``wait`` seconds."""
        inbox = await self._borrow()
        arrived: asyncio.Queue[Msg] = asyncio.Queue()
        inbox.arrived = arrived
        request: dict[str, object] = {"batch": batch}
        if wait is None:
            request["no_wait"] = True
            answer_within = NO_WAIT_ANSWER
        else:
            request["expires"] = int(wait * 1e9)
            answer_within = wait + self.client.timeout
        got: list[Msg] = []
        done = False
        try:
            await self.client.send(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                orjson.dumps(request),
                inbox.subject,
            )
            async with asyncio.timeout(answer_within):
                while len(got) < batch:
                    msg = await arrived.get()
                    code = status(msg)
                    if code is None:
                        got.append(msg)
                    elif code in ("404", "408"):  # nothing (more) now, or the wait ended
                        break
                    elif code == "409":
                        description = (msg.headers or {}).get("Description", "")
                        if "deleted" in description.lower():
                            raise ConsumerMissing(description, deleted=True)
                        raise unavailable(f"refused a pull: {description or code}")
                    elif code != "100":  # 100: a heartbeat
                        raise unavailable(f"answered a pull with status {code}")
            done = True
        except TimeoutError:
            if not got:
                raise ConsumerMissing("no answer to a pull") from None
            done = True
        finally:
            inbox.arrived = None
            # What came after the end (there should be nothing), and what a caller that
            # gave up will not get, goes back at once.
            unwanted = [] if done else got
            while not arrived.empty():
                late = arrived.get_nowait()
                if status(late) is None:
                    unwanted.append(late)
            for msg in unwanted:
                await self.give_back(msg)
            await self._return(inbox)
        return got


__all__ = ["ConsumerMissing", "Puller"]
