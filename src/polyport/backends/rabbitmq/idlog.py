"""The ids a queue stored within its dedup window, kept in a RabbitMQ stream every node reads.

RabbitMQ has no deduplication of its own (without plugins), so each queue
has a stream, ``{prefix}.{queue}.ids``, that keeps a small record of every
message sent — ``{"ids": [[id, send, sent], …]}``, one record carrying what
a node's sends stored meanwhile — for the dedup window (``x-max-age``). Every
node reads the stream from the start of the window when it opens and follows
it from then on, so it knows, in memory, the first send of every id any node
stored within the window.

* **Sending**: an id this node knows (sent within the window, by any node
  whose record it has read) is not stored again — the send answers that it
  is a duplicate. Otherwise the message is stored, *then* its record
  appended: a record never names a message that was not stored.
* **Receiving**: a message carries its send's token (``x-polyport-send``);
  a message whose id's first record names another send is a second copy,
  stored by a send that raced the first on another node before either
  record was read, and is dropped without running.
* **Purging** appends a marker: every node forgets the ids recorded before it.

What this leaves: two sends of one id on two nodes within milliseconds of
each other (before either reads the other's record) both store a copy, and
a consumer that receives the second copy before reading the first record
runs both. Each node holds the window's ids in memory (about 150 bytes each).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from polyport.backends.rabbitmq.connection import AmqpConnection, amqp_errors, unavailable

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

log = logging.getLogger("polyport.backends.rabbitmq")

#: How many records RabbitMQ may send a node ahead of its acks.
PREFETCH = 2000
#: The stream's segment size: retention drops whole segments, so keep them small.
SEGMENT_BYTES = 8_000_000


#: What a node knows of an id: (when its first send was stored, that send's token,
#: whether its record was read back from the stream — a purge marker forgets only
#: those). A tuple of a float, a str and a bool, which the garbage collector stops
#: tracking: a window of many ids adds nothing to the work of each full collection.
Entry = tuple[float, str, bool]


class IdLog:
    """One queue's ids within its window, from its stream (or this node alone, without one)."""

    def __init__(
        self, connection: AmqpConnection, stream: str, window: float, *, shared: bool
    ) -> None:
        self.connection = connection
        self.stream = stream
        self.window = window
        #: False on a RabbitMQ without streams (before 3.9): ids are this node's alone.
        self.shared = shared
        self.entries: dict[str, Entry] = {}
        self._channel: AbstractChannel | None = None
        self._next: int | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._stopping = False
        #: Records waiting for the next append, each with the future its send awaits.
        self._waiting: list[tuple[list[tuple[str, str, float]], asyncio.Future[None]]] = []
        self._appending: asyncio.Task[None] | None = None

    # -- the stream -----------------------------------------------------------------------

    async def declare(self) -> None:
        if not self.shared:
            return
        import aiormq

        arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, math.ceil(self.window))}s",
            "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
        }
        channel = await self.connection.ctl()
        try:
            async with asyncio.timeout(self.connection.timeout):
                await channel.queue_declare(self.stream, durable=True, arguments=arguments)
            return
        except aiormq.ChannelPreconditionFailed:
            pass
        except (aiormq.AMQPError, TimeoutError) as exc:
            raise unavailable(f"did not declare {self.stream}") from exc
        # Declared before with another window: it keeps its own retention.
        log.warning(
            "stream %s exists with another retention than the queue's dedup window (%gs); "
            "keeping it",
            self.stream,
            self.window,
        )
        await self.connection.count(self.stream)

    async def start(self) -> None:
        """Read the stream from the window's start (or where it stopped) and catch up."""
        if not self.shared:
            return
        self._stopping = False
        channel = await self.connection.channel()
        with amqp_errors(f"did not follow {self.stream}"):
            await channel.basic_qos(prefetch_count=PREFETCH)
            offset: Any = self._next
            if offset is None:
                start = time.time() - self.window
                offset = datetime.datetime.fromtimestamp(start, datetime.UTC)
            await channel.basic_consume(
                self.stream, self._on_record, arguments={"x-stream-offset": offset}
            )
        self._channel = channel
        channel.closing.add_done_callback(self._channel_closed)
        await self.sync()

    async def stop(self) -> None:
        self._stopping = True
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self.connection.timeout)
        for waiter in self._syncs.values():
            waiter.cancel()
        self._syncs.clear()

    def _channel_closed(self, _future: asyncio.Future[Any]) -> None:
        if self._stopping or not self.connection.alive:
            return  # stopped, or the connection's restoration starts it again
        log.warning("following %s stopped; following it again", self.stream)

        async def again() -> None:
            with contextlib.suppress(Exception):
                await self.start()

        asyncio.get_running_loop().create_task(again())

    async def sync(self) -> None:
        """Return once every record appended before this call was read."""
        if not self.shared:
            return
        nonce = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._syncs[nonce] = waiter
        try:
            await self._append({"sync": nonce})
            with amqp_errors(f"did not catch up with {self.stream}"):
                async with asyncio.timeout(max(30.0, self.connection.timeout)):
                    await waiter
        finally:
            self._syncs.pop(nonce, None)

    async def _on_record(self, message: DeliveredMessage) -> None:
        offset = (message.header.properties.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            self._next = offset + 1
        try:
            record = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            self._apply(record)
        channel = self._channel
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.basic_ack(getattr(message.delivery, "delivery_tag", 0) or 0)

    def _apply(self, record: dict[str, Any]) -> None:
        if "purge" in record:
            self.entries = {k: e for k, e in self.entries.items() if not e[2]}
        elif "sync" in record:
            waiter = self._syncs.get(str(record["sync"]))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(record.get("ids"), list):
            for item in record["ids"]:
                if isinstance(item, list) and len(item) == 3:
                    self._read(str(item[0]), str(item[1]), float(item[2]))

    def _read(self, id_: str, send: str, sent: float) -> None:
        entry = self.entries.get(id_)
        if entry is None or entry[0] < sent - self.window:
            self.entries[id_] = (sent, send, True)
        elif entry[1] == send:
            self.entries[id_] = (entry[0], send, True)

    async def _append(self, record: dict[str, Any]) -> None:
        from aiormq import spec

        await self.connection.publish(
            orjson.dumps(record),
            routing_key=self.stream,
            properties=spec.Basic.Properties(
                delivery_mode=2, content_type="application/json", message_id=uuid.uuid4().hex
            ),
        )

    # -- the ids --------------------------------------------------------------------------

    def first_send(self, id_: str, now: float) -> str | None:
        """The token of the first send of ``id_`` within the window, if known."""
        entry = self.entries.get(id_)
        if entry is None or entry[0] < now - self.window:
            return None
        return entry[1]

    def reserve(self, id_: str, send: str, now: float) -> bool:
        """Claim ``id_`` for a send on this node; False if it is known already."""
        if self.first_send(id_, now) is not None:
            return False
        self.entries[id_] = (now, send, not self.shared)
        return True

    def forget(self, id_: str, send: str) -> None:
        """Undo a claim whose message may not have been stored."""
        entry = self.entries.get(id_)
        if entry is not None and entry[1] == send:
            del self.entries[id_]

    async def record(self, sends: list[tuple[str, str, float]]) -> None:
        """Append the records of stored messages: (id, send token, sent).

        Sends that record while another record is being appended wait for the
        next one, which carries them all: one stream message per round trip,
        however many sends there are.
        """
        if not self.shared or not sends:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((sends, done))
        if self._appending is None or self._appending.done():
            self._appending = asyncio.get_running_loop().create_task(self._append_waiting())
        await done

    async def _append_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            ids = [record for sends, _ in batch for record in sends]  # [id, send, sent] each
            try:
                await self._append({"ids": ids})
            except BaseException as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def purge(self) -> None:
        """Forget every id, here and (through a marker) on every node."""
        self.entries.clear()
        if self.shared:
            await self._append({"purge": time.time()})

    def expire(self, now: float) -> int:
        old = [k for k, e in self.entries.items() if e[0] < now - self.window]
        for key in old:
            del self.entries[key]
        return len(old)


__all__ = ["IdLog"]
