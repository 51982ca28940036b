"""Runs receivers' handlers from the inbox: bounded, retried with backoff, dead-lettered.

The HTTP answer never waits for a handler. The worker is told when a delivery
arrives (:meth:`InboxWorker.wake`), and otherwise looks for due work every
``hooks.poll_interval`` seconds — work that another node sharing the database
accepted, retries whose time has come, leases of a node that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from polyport.core.errors import Unavailable
from polyport.core.inbox import InboxEntry, ReceiverInbox
from polyport.core.logs import Outage
from polyport.core.metrics import Metrics
from polyport.edges.hooks.config import HooksConfig
from polyport.edges.hooks.handler import EDGE, ReceiverHandler

log = logging.getLogger("polyport.hooks")

#: Seconds a claimed row's lease outlives the handler's timeout (at most; a short
#: timeout gets a margin as long as itself, at least a second): time to record
#: the outcome after the timeout fired, before another node may take the row.
LEASE_MARGIN = 30.0
#: The shortest sleep between two looks at the inbox (no spinning on a lost race).
MIN_SLEEP = 0.005


def backoff(attempts: int, config: HooksConfig) -> float:
    """Seconds before the next attempt after ``attempts`` failures: doubling, jittered, capped."""
    delay = min(config.retry_max, config.retry_base * 2.0 ** min(attempts - 1, 40))
    # Jitter (down to three quarters) spreads retries of deliveries that failed together.
    return delay * random.uniform(0.75, 1.0)


class InboxWorker:
    """Claims due deliveries and runs their handlers, at most ``concurrency`` at once."""

    def __init__(
        self,
        inbox: ReceiverInbox,
        handlers: dict[str, ReceiverHandler],
        config: HooksConfig,
        metrics: Metrics,
    ) -> None:
        self.inbox = inbox
        self.handlers = handlers
        self._outage = Outage(log, "reading the webhook inbox")
        self.names = sorted(handlers)
        self.config = config
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], InboxEntry] = {}
        self._closing = False
        self._next_purge = 0.0

    def start(self) -> None:
        self._closing = False
        self._loop_task = asyncio.create_task(self._loop(), name="polyport-hooks")

    def wake(self) -> None:
        """Something new is in the inbox."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; give running handlers ``shutdown_grace`` s, then cancel them.

        A cancelled handler's delivery goes back to pending without counting
        the attempt, so the next start runs it again at once.
        """
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        running = list(self._running)
        if running:
            log.info(
                "waiting up to %g s for %d webhook handler(s)",
                self.config.shutdown_grace,
                len(running),
            )
            await asyncio.wait(running, timeout=self.config.shutdown_grace)
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        config = self.config
        while not self._closing:
            self._wake.clear()
            now = time.time()
            try:
                await self._claim(now)
                if now >= self._next_purge:
                    self._next_purge = now + min(3600.0, config.retention / 10)
                    purged = await self.inbox.purge(self.names, now - config.retention)
                    if purged:
                        log.info("forgot %d processed webhook deliveries", purged)
                sleep = await self._sleep(now)
            except Exception as exc:
                # The database is locked or gone: say so (once), and try again later.
                self._outage.failed(exc, quiet=Unavailable)
                sleep = config.poll_interval
            else:
                self._outage.worked()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()

    async def _claim(self, now: float) -> None:
        free = self.config.concurrency - len(self._running)
        timeout = self.config.timeout
        lease = timeout + min(LEASE_MARGIN, max(1.0, timeout))
        for row in await self.inbox.claim(self.names, now, free, lease):
            task = asyncio.create_task(self._process(row), name=f"polyport-hook-{row.receiver}")
            self._running[task] = row
            task.add_done_callback(self._finished)

    async def _sleep(self, now: float) -> float:
        if len(self._running) >= self.config.concurrency:
            return self.config.poll_interval  # a finishing handler wakes the loop
        due = await self.inbox.next_due(self.names)
        if due is None:
            return self.config.poll_interval
        return min(self.config.poll_interval, max(MIN_SLEEP, due - time.time()))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    # -- one delivery -------------------------------------------------------------------------

    async def _process(self, row: InboxEntry) -> None:
        handler = self.handlers[row.receiver]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.timeout):
                await handler.run(row, deadline=time.monotonic() + self.config.timeout)
        except asyncio.CancelledError:
            if self._closing:
                # Should this be lost too, the lease runs out and the next claim runs it.
                await self.inbox.release(row, time.time())
            raise
        except Exception as exc:
            code = "DEADLINE_EXCEEDED" if isinstance(exc, TimeoutError) else "INTERNAL"
            self.metrics.observe_call(EDGE, row.receiver, code, time.perf_counter() - started)
            await self._failed(handler, row, exc)
        else:
            self.metrics.observe_call(EDGE, row.receiver, "OK", time.perf_counter() - started)
            await self.inbox.complete(row, time.time())
            self._count(row, "done")

    async def _failed(self, handler: ReceiverHandler, row: InboxEntry, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            error = f"the handler did not finish within {self.config.timeout:g} s"
        else:
            error = f"{type(exc).__name__}: {exc}"[:500]
        now = time.time()
        if row.attempts >= handler.max_attempts:
            log.error(
                "webhook %s %s failed %d time(s); kept as a dead letter: %s",
                row.receiver,
                row.id,
                row.attempts,
                error,
                exc_info=exc,
            )
            await self.inbox.bury(row, now, error)
            self._count(row, "dead")
            return
        delay = backoff(row.attempts, self.config)
        log.warning(
            "webhook %s %s failed (attempt %d of %d), retrying in %.1f s: %s",
            row.receiver,
            row.id,
            row.attempts,
            handler.max_attempts,
            delay,
            error,
            exc_info=exc,
        )
        await self.inbox.retry(row, now + delay, error)
        self._count(row, "retry")

    def _count(self, row: InboxEntry, outcome: str) -> None:
        self.metrics.inc(
            "polyport_hooks_processed_total",
            "Webhook handler runs by receiver and outcome (done, retry, dead).",
            receiver=row.receiver,
            outcome=outcome,
        )
