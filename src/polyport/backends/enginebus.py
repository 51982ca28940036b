"""What the buses over Redis, PostgreSQL and NATS share: coalescing, sending, listening.

Each engine's bus (``backends/<engine>/bus.py``) only connects and moves
bytes; this class gives every one of them the same behaviour:

* :meth:`EngineBus.announce` adds the pairs to a pending list and returns: it
  never waits and never raises. One sender task sends what is pending — every
  announcement made since its last send, so at least all of one loop
  iteration — as few messages as fit the engine's size bound (see
  :mod:`.announcements`), in one round trip. Under load a send carries what
  gathered while the previous one was in flight.
* A send that fails drops its announcements (counted in ``unsent``: the other
  nodes find the events at their next read of the log), logs once per outage
  (and once when a send succeeds again) and waits, with backoff, before the
  next. The pending list is bounded: past ``MAX_PENDING`` pairs only each
  channel's newest seq is kept, which is all a listener needs to know.
* One receiver task follows the engine's subscription and calls the
  listeners on the event loop. When the subscription breaks it logs once,
  connects and subscribes again with exponential backoff and jitter — the
  node needs no restart — and logs when it listens again. Announcements made
  while it was away are lost; the listening node's tail reads the log at an
  interval, so they only wait for that.
* A message that is not an announcement is dropped and counted in
  ``malformed`` (logged at the 1st, 10th, 100th, …), never raised.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable
from typing import ClassVar

from polyport.backends.announcements import decode, encode
from polyport.core.bus import Announcement, Listener

log = logging.getLogger("polyport.bus")

#: Pairs waiting to be sent, at most, before only each channel's newest is kept.
MAX_PENDING = 10_000
#: Seconds a send, or a connection made again, may take before it counts as failed.
TIMEOUT = 5.0
#: Seconds of silence on a subscription before the engine is asked whether it is there.
HEARTBEAT = 5.0
#: The first and the longest wait before connecting again (doubling, with jitter).
MIN_BACKOFF = 0.1
MAX_BACKOFF = 2.0
#: Seconds :meth:`EngineBus.close` gives the last announcements to leave.
CLOSE_FLUSH = 1.0


class EngineBus(abc.ABC):
    """A :class:`~polyport.core.bus.Bus` over an engine's publish/subscribe.

    A subclass names its engine and its message bound, and implements the
    five methods that touch the engine.
    """

    #: The engine, as log lines name it.
    engine: ClassVar[str]
    #: Bytes per message at most.
    frame_limit: ClassVar[int] = 65536
    #: Seconds of silence on the subscription before the engine is asked whether it is there.
    heartbeat: float = HEARTBEAT

    def __init__(self, where: str) -> None:
        #: Where announcements go on the engine (a channel or subject), for log lines.
        self.where = where
        #: Announced pairs that were never sent (the engine was away, or a pair was unusable).
        self.unsent = 0
        #: Messages received that were not announcements, dropped.
        self.malformed = 0
        self._listeners: dict[int, Listener] = {}
        self._keys = itertools.count()
        self._pending: list[tuple[str, int]] = []
        self._wanted = asyncio.Event()
        self._open = False
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._send_broken = False

    # -- what a subclass does on its engine -------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Connect for sending and subscribe, or raise (:meth:`_disconnect` cleans up)."""

    @abc.abstractmethod
    async def _receive(self) -> None:
        """Pass each message of the subscription to :meth:`_heard`, until it breaks (raise)."""

    @abc.abstractmethod
    async def _resubscribe(self) -> None:
        """Drop the broken subscription and make a new one, or raise."""

    @abc.abstractmethod
    async def _send(self, messages: list[bytes]) -> None:
        """Publish ``messages``, in order, or raise."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close every connection; never raises."""

    # -- the port ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and subscribe: announcements from now on reach this bus's listeners."""
        if self._open:
            return
        try:
            async with asyncio.timeout(TIMEOUT):
                await self._connect()
        except BaseException:
            await self._disconnect()
            raise
        self._open = True
        self._sender = asyncio.create_task(self._send_forever(), name=f"polyport-bus-send {self}")
        self._receiver = asyncio.create_task(
            self._receive_forever(), name=f"polyport-bus-receive {self}"
        )

    async def close(self) -> None:
        """Stop listening, give the last announcements a moment to leave, disconnect."""
        was_open, self._open = self._open, False
        tasks = [t for t in (self._receiver, self._sender) if t is not None]
        self._receiver = self._sender = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if was_open and self._pending and not self._send_broken:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_FLUSH):
                    await self._send_pending()
        self.unsent += len(self._pending)
        self._pending = []
        await self._disconnect()

    def announce(self, grown: Announcement) -> None:
        """Queue ``grown`` for the sender; never waits, never raises."""
        try:
            if not self._open:
                self.unsent += len(grown)
                return
            self._pending.extend(grown)
            if len(self._pending) > MAX_PENDING:
                self._squeeze()
            self._wanted.set()
        except Exception:  # a caller's bad argument still must not fail its publish
            log.exception("could not queue an announcement on %s", self)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every announcement received; returns what stops it."""
        key = next(self._keys)
        self._listeners[key] = listener

        def stop() -> None:
            self._listeners.pop(key, None)

        return stop

    def __str__(self) -> str:
        return f"{self.engine} {self.where}"

    # -- sending ----------------------------------------------------------------------

    def _squeeze(self) -> None:
        """Too much waits (the engine is slow or away): keep each channel's newest seq."""
        newest: dict[str, int] = {}
        for channel, seq in self._pending:
            if type(channel) is str and type(seq) is int and seq > newest.get(channel, -1):
                newest[channel] = seq
        if len(newest) > MAX_PENDING:
            self.unsent += len(newest)
            newest.clear()
        self._pending = list(newest.items())

    async def _send_forever(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            sent = await self._send_pending()
            if sent:
                backoff = MIN_BACKOFF
            elif sent is not None:
                # What gathers meanwhile goes at the next try, in one batch.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _send_pending(self) -> bool | None:
        """Send every pending pair: whether the engine took them (None: nothing to send)."""
        pairs, self._pending = self._pending, []
        messages, left_out = encode(pairs, self.frame_limit)
        self.unsent += left_out
        if not messages:
            return None
        try:
            async with asyncio.timeout(TIMEOUT):
                await self._send(messages)
        except Exception as exc:
            self.unsent += len(pairs) - left_out
            if not self._send_broken:
                self._send_broken = True
                log.warning(
                    "cannot announce new events on %s (%s); the other nodes will find them "
                    "at their next read of the log",
                    self,
                    _describe(exc),
                )
            return False
        if self._send_broken:
            self._send_broken = False
            log.info("announcing new events on %s again", self)
        return True

    # -- receiving --------------------------------------------------------------------

    def _heard(self, message: bytes | str) -> None:
        """One message from the engine: hand its pairs to every listener, or count it."""
        pairs = decode(message)
        if pairs is None:
            self.malformed += 1
            if _is_power_of_ten(self.malformed):
                log.warning(
                    "dropped a message on %s that is not an announcement (%d so far)",
                    self,
                    self.malformed,
                )
            return
        for listener in list(self._listeners.values()):
            try:
                listener(pairs)
            except Exception:
                log.exception("a listener of %s failed", self)

    async def _receive_forever(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = MIN_BACKOFF
        while True:
            began = loop.time()
            try:
                await self._receive()
                cause = "the subscription ended"
            except Exception as exc:
                cause = _describe(exc)
            if loop.time() - began > MAX_BACKOFF:
                backoff = MIN_BACKOFF  # it had been working: begin the backoff anew
            log.warning("lost the subscription to %s (%s); reconnecting", self, cause)
            while True:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, MAX_BACKOFF)
                try:
                    async with asyncio.timeout(TIMEOUT):
                        await self._resubscribe()
                except Exception as exc:
                    log.debug("subscribing to %s again failed: %s", self, _describe(exc))
                else:
                    break
            log.info("listening on %s again", self)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


__all__ = ["EngineBus"]
