"""The bus on Redis pub/sub: nodes of one log wake each other on ``{prefix}:bus``.

The channel is named from the log's key prefix, so logs with different
prefixes on one Redis never hear each other (and the name carries the log's
hash tag; a Redis Cluster broadcasts classic pub/sub to every node anyway).
Pub/sub is at-most-once — a subscriber that is disconnected misses what is
published meanwhile — which is all a bus promises (see :mod:`polyport.core.bus`).

Two connections: the client's pool publishes (a connection that failed is
made again at the next send, and a publish that met a stale connection is
tried once more at once: an announcement sent twice is harmless), and one
connection, taken out of the pool for good, is subscribed. The subscriber
waits for Redis's confirmation before :meth:`RedisBus.open` returns, so every
announcement published after it is heard. A silent subscription is pinged
every ``heartbeat`` seconds: a connection
that died without a reset (a host gone, a network cut) is noticed at the next
unanswered ping, not never. Coalescing, the outage log, reconnecting with
backoff and decoding are :class:`~polyport.backends.enginebus.EngineBus`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from polyport.backends.enginebus import TIMEOUT, EngineBus
from polyport.backends.redis.client import connect, engine_errors, key_base

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub


class RedisBus(EngineBus):
    """A :class:`~polyport.core.bus.Bus` on Redis pub/sub, for the log of the same ``prefix``.

    ``redis`` is a URL (the bus makes its own client and closes it) or a
    redis-py asyncio client (left open; the bus takes one of its pool's
    connections for the subscription).
    """

    engine = "Redis"
    frame_limit = 65536

    def __init__(
        self, redis: str | Redis = "redis://127.0.0.1:6379/0", *, prefix: str = "polyport"
    ):
        self.channel = key_base(prefix) + ":bus"  # one prefix names the log and its bus
        super().__init__(f"channel {self.channel}")
        self._owned = isinstance(redis, str)
        self._client: Redis = connect(redis) if isinstance(redis, str) else redis
        self._pubsub: PubSub | None = None

    async def _connect(self) -> None:
        with engine_errors("the bus (Redis)"):
            await self._subscribe()

    async def _subscribe(self) -> None:
        pubsub = self._pubsub = self._client.pubsub()
        await pubsub.subscribe(self.channel)
        async with asyncio.timeout(TIMEOUT):
            while True:  # subscribed once Redis says so: from then on nothing is missed
                message = await pubsub.get_message(timeout=TIMEOUT)
                if message is not None and message["type"] == "subscribe":
                    return

    async def _receive(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        pinged = False
        while True:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=self.heartbeat)
            if message is None:
                if pinged:
                    raise TimeoutError(f"Redis did not answer a ping in {self.heartbeat:g} s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message["type"] == "message":
                self._heard(message["data"])

    async def _resubscribe(self) -> None:
        await self._unsubscribe()
        await self._subscribe()

    async def _unsubscribe(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _send(self, messages: list[bytes]) -> None:
        from redis.exceptions import ConnectionError

        for attempt in (1, 2):
            try:
                if len(messages) == 1:
                    await self._client.publish(self.channel, messages[0])
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for message in messages:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
                return
            except ConnectionError:
                # A pooled connection Redis closed (a restart) fails once, then is made anew.
                if attempt == 2:
                    raise

    async def _disconnect(self) -> None:
        await self._unsubscribe()
        if self._owned:
            with contextlib.suppress(Exception):
                await self._client.aclose()


__all__ = ["RedisBus"]
