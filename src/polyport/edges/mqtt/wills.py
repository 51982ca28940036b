"""Will messages whose publication waits (MQTT 5 Will Delay Interval).

    connection ends abnormally ─▶ delay = min(Will Delay Interval, session expiry)
        0   → the will is published at once
        > 0 → DelayedWills.schedule: published after the delay, unless
              the client comes back for its session (Clean Start 0) first → dropped
              a new connection with Clean Start 1 ends the session → published now
              the node stops                                       → published now

A will waits in this node's memory only: a client that comes back to another
node sharing the engine does not cancel it, and a node killed (not stopped)
loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("polyport.mqtt")

Publisher = Callable[[], Awaitable[None]]
Key = tuple[str, str]


class DelayedWills:
    """The wills waiting for their delay, by (credential subject, client id)."""

    def __init__(self) -> None:
        self._waiting: dict[Key, tuple[asyncio.Task[None], Publisher]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def schedule(self, key: Key, delay: float, publish: Publisher) -> None:
        """Publish the will of ``key`` after ``delay`` seconds (one will per client id)."""
        self.drop(key)
        task = asyncio.create_task(self._later(key, delay, publish), name="polyport-mqtt-will")
        self._waiting[key] = (task, publish)

    async def _later(self, key: Key, delay: float, publish: Publisher) -> None:
        await asyncio.sleep(delay)
        self._waiting.pop(key, None)
        await publish()

    def drop(self, key: Key) -> bool:
        """The client came back to its session in time: its will is not published."""
        entry = self._waiting.pop(key, None)
        if entry is None:
            return False
        entry[0].cancel()
        return True

    async def now(self, key: Key) -> None:
        """The session ended before the delay passed: publish its will at once."""
        entry = self._waiting.pop(key, None)
        if entry is not None:
            entry[0].cancel()
            await entry[1]()

    async def flush(self) -> None:
        """The node stops: every waiting will is published now rather than lost."""
        for key in list(self._waiting):
            with contextlib.suppress(Exception):
                await self.now(key)
