"""Per-request timeouts: one sweep for every request in flight, not a timer each."""

from __future__ import annotations

import asyncio
from typing import Any


class Deadlines:
    """Per-request timeouts for many requests with one timer, not one timer each.

    A request registers its task and deadline; a sweep every quarter of the
    shortest timeout (at most every second, at least every 10 ms) cancels the
    tasks past theirs. ``asyncio.timeout`` would schedule and cancel a timer
    handle per request: measurable at thousands of requests per second.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._interval = 1.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._tasks[task] = loop.time() + timeout
        interval = min(1.0, max(0.01, timeout / 4))
        if self._loop is not loop:  # a node started again on another loop
            self._loop, self._timer, self._interval = loop, None, 1.0
        if self._timer is None or interval < self._interval:
            if self._timer is not None:
                self._timer.cancel()
            self._interval = interval
            self._timer = loop.call_later(interval, self._sweep)

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task in self._expired:  # a handler swallowed the cancellation: take it back
            self._expired.discard(task)
            task.uncancel()

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (then it is no longer cancelling)."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def _sweep(self) -> None:
        self._timer = None
        if not self._tasks:
            self._interval = 1.0
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in list(self._tasks.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self._interval, self._sweep)


__all__ = ["Deadlines"]
