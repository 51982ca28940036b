"""One connection to RabbitMQ (aio-pika), its channels, and what happens when it is lost.

The broker keeps one connection per node and a few channels on it: one with
publisher confirms for everything it stores, one for the main queues'
deliveries, one for declarations and counts, and short-lived ones (a
partition held, a listing). A publish returns once RabbitMQ confirmed it —
the message is on disk (and on a quorum of replicas) — or raises
:class:`~polyport.core.errors.Unavailable`: never a silent loss.

When the connection is lost (RabbitMQ restarted, the network cut, a channel
closed by an error nobody expected), every delivery received on it is gone
with it — RabbitMQ gives those messages back to their queues at once — so
its :attr:`AmqpConnection.generation` moves on, listeners are told, and the
connection is made again in the background, waiting longer after each
failure (0.2 s up to 10 s). Until then every call raises Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiormq
from aiormq import spec

from polyport.core.errors import Unavailable

if TYPE_CHECKING:
    import aio_pika
    from aiormq.abc import AbstractChannel

log = logging.getLogger("polyport.backends.rabbitmq")

#: Seconds to wait for RabbitMQ to connect or answer before a call is Unavailable.
TIMEOUT = 5.0
#: What a client that gets Unavailable is told to wait before trying again.
RETRY_AFTER = 1.0
#: Waits between attempts to connect again, in seconds (the last one repeats).
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def unavailable(what: str) -> Unavailable:
    return Unavailable(f"RabbitMQ {what}; try again", retry_after=RETRY_AFTER)


#: What RabbitMQ being unreachable, slow, closed or refusing raises.
FAILURES = (
    aiormq.AMQPError,
    aiormq.ChannelInvalidStateError,
    TimeoutError,
    ConnectionError,
    OSError,
)


def failed(what: str, exc: BaseException) -> Unavailable:
    return unavailable(f"could not {what} ({type(exc).__name__}: {exc})"[:300])


@contextlib.contextmanager
def amqp_errors(what: str) -> Iterator[None]:
    """Turn RabbitMQ being unreachable, slow, closed or refusing into Unavailable."""
    try:
        yield
    except FAILURES as exc:
        raise failed(what, exc) from exc


def server_version(properties: dict[str, Any]) -> tuple[int, ...]:
    """RabbitMQ's version from the connection's server properties, (0,) if unknown."""
    raw = properties.get("version", b"")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


class AmqpConnection:
    """A node's connection to RabbitMQ, made again whenever it is lost."""

    def __init__(self, url: str, *, name: str, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        #: Moves on each time the connection is lost: deliveries of an older one are gone.
        self.generation = 0
        self.version: tuple[int, ...] = (0,)
        #: Called (synchronously) as soon as the connection is lost.
        self.on_lost: list[Callable[[], None]] = []
        #: Awaited after the connection is made again, before calls are let through.
        self.on_restored: list[Callable[[], Awaitable[None]]] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._pub: AbstractChannel | None = None
        self._work: AbstractChannel | None = None
        self._ctl: AbstractChannel | None = None
        self._alive = False
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, or raise Unavailable."""
        self._closing = False
        await self._connect()

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
            self._reconnecting = None
        self._alive = False
        await self._discard()

    @property
    def alive(self) -> bool:
        return self._alive

    async def _connect(self) -> None:
        import aio_pika

        with amqp_errors("is not reachable"):
            async with asyncio.timeout(self.timeout):
                connection = await aio_pika.connect(
                    self.url,
                    timeout=self.timeout,
                    client_properties={"connection_name": self.name},
                )
        try:
            transport = connection.transport
            assert transport is not None
            self.version = server_version(dict(transport.connection.server_properties))
            with amqp_errors("did not open a channel"):
                self._pub = await transport.connection.channel(publisher_confirms=True)
                self._work = await transport.connection.channel(publisher_confirms=False)
                self._ctl = await transport.connection.channel(publisher_confirms=False)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.close_callbacks.add(self._closed)
        for channel in (self._pub, self._work):
            channel.closing.add_done_callback(self._channel_closed)
        self._connection = connection
        self._alive = True

    def _closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        if self._closing or not self._alive:
            return
        log.warning("RabbitMQ connection lost (%s); connecting again", exc or "closed")
        self._lost()

    def _channel_closed(self, _future: asyncio.Future[Any]) -> None:
        # The publishing and delivery channels never fail by design: if RabbitMQ
        # closed one (an unknown delivery tag, a delivery held past consumer_timeout),
        # the state it carried is unknown, so the whole connection starts over.
        if self._closing or not self._alive:
            return
        log.warning("a RabbitMQ channel was closed by the server; connecting again")
        connection = self._connection
        self._lost()
        if connection is not None:
            asyncio.get_running_loop().create_task(connection.close())

    def _lost(self) -> None:
        self._alive = False
        self.generation += 1
        for listener in self.on_lost:
            try:
                listener()
            except Exception:
                log.exception("a RabbitMQ connection-lost listener failed")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(
                self._reconnect(), name="polyport-rabbitmq-reconnect"
            )

    async def _reconnect(self) -> None:
        attempt = 0
        await self._discard()
        while not self._closing:
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1
            try:
                await self._connect()
                for restore in self.on_restored:
                    await restore()
            except Exception as exc:
                self._alive = False
                await self._discard()
                log.warning("connecting to RabbitMQ again failed: %s", exc)
                continue
            log.info("connected to RabbitMQ again")
            return

    async def _discard(self) -> None:
        """Close the connection (if any) without telling anyone: it is lost already."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self.timeout)

    # -- channels ---------------------------------------------------------------------------

    def _live(self, channel: AbstractChannel | None) -> AbstractChannel:
        if not self._alive or channel is None or channel.is_closed:
            raise unavailable("is not connected")
        return channel

    @property
    def work(self) -> AbstractChannel:
        """The channel the main queues' deliveries come on (their acks must go on it)."""
        return self._live(self._work)

    async def channel(self, *, confirms: bool = False) -> AbstractChannel:
        """A new channel of its own (a partition held, a listing), closed by its user."""
        connection = self._connection
        if not self._alive or connection is None or connection.transport is None:
            raise unavailable("is not connected")
        with amqp_errors("did not open a channel"):
            async with asyncio.timeout(self.timeout):
                return await connection.transport.connection.channel(publisher_confirms=confirms)

    async def ctl(self) -> AbstractChannel:
        """The channel for declarations and counts, opened again after a refusal closed it."""
        if self._ctl is None or self._ctl.is_closed:
            self._ctl = await self.channel()
        return self._ctl

    # -- calls ------------------------------------------------------------------------------

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        properties: Any,
        exchange: str = "",
        unroutable: Callable[[], Exception] | None = None,
    ) -> None:
        """Store one message: returns once RabbitMQ confirmed it, else Unavailable.

        ``mandatory``: a message no queue takes (its queue was deleted) is
        returned by RabbitMQ, which is an error here, never a silent loss —
        ``unroutable()``'s, or Unavailable.
        """
        channel = self._live(self._pub)
        # Every send takes this path: aiormq's own timeout covers the whole publish, its
        # confirm included (one timer per message, not two), and the errors are caught
        # here rather than by amqp_errors (no context manager made per message).
        try:
            answer = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=self.timeout,
            )
        except FAILURES as exc:
            raise failed("did not store a message", exc) from exc
        if not isinstance(answer, spec.Basic.Ack):
            if unroutable is not None:
                raise unroutable()
            raise unavailable(f"did not store a message for {routing_key} (no queue took it)")

    async def count(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue, read with a passive declare."""
        channel = await self.ctl()
        # Shielded: a caller cancelled mid-call (a consumer stopping) must not cancel the
        # RPC itself, which makes aiormq close the shared channel to stay in step.
        declare = asyncio.ensure_future(channel.queue_declare(queue, passive=True))
        declare.add_done_callback(_retrieve)
        with amqp_errors(f"did not answer for queue {queue}"):
            try:
                async with asyncio.timeout(self.timeout):
                    ok = await asyncio.shield(declare)
            except TimeoutError:
                declare.cancel()  # a call stuck past the timeout may close the channel
                raise
        return ok.message_count or 0, ok.consumer_count or 0


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded call's outcome as seen: its caller may have stopped waiting."""
    if not task.cancelled():
        task.exception()


__all__ = ["RETRY_AFTER", "TIMEOUT", "AmqpConnection", "amqp_errors", "server_version"]
