"""What ``polyport bench cluster`` sends and counts: ticks, the pacer, the receipts.

Both sides of the bench use these — a polyport node's publishers and a bare
engine client's (:mod:`polyport.bench.cluster_bare`) — so both publish the
same payload at the same pace and count what arrives the same way:

* a **tick** is the JSON object ``{"run", "p", "seq", "ts", "pad"}``: ``p``
  the publisher (one per node), ``seq`` its number (0 is the primer), ``ts``
  the publisher's ``time.monotonic_ns()`` just before the publish call —
  system-wide on Linux, so a receiver in another process subtracts it;
* :func:`pace` publishes ``count`` ticks at ``rate`` per second from a given
  instant, each its own publish call, several in flight as independent
  callers' would be;
* :class:`Receipts` is one receiver's ledger: every ``(p, seq)`` it got, so
  that lost and duplicated ticks are counted, and the latency of each
  measured tick (one sent after the warm-up), cross-node apart from local.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel

from polyport.bench.pyload import percentile

#: A tick's publisher, number and publish clock, as the JSON encoders here write them.
TICK_FIELDS = re.compile(rb'"p":(\d+),"seq":(\d+),"ts":(\d+)')
#: Publish calls in flight per publisher, at most: past it the pacer waits (and says so).
IN_FLIGHT = 256
#: Seconds a publisher may run past its schedule's end; the ticks it has not sent by
#: then are not sent (and said so): a run on a slow engine stays bounded in time.
GRACE = 2.0


class Tick(BaseModel):
    """One published event: its run, publisher, number, publish clock and padding."""

    run: str
    p: int
    seq: int
    ts: int
    pad: str = ""


def padding(size: int) -> str:
    """The ``pad`` that makes a tick about ``size`` bytes of JSON."""
    bare = orjson.dumps({"run": "r" * 12, "p": 0, "seq": 100_000, "ts": time.monotonic_ns()})
    return "x" * max(0, size - len(bare) - len(b',"pad":""'))


def tick_bytes(run: str, p: int, seq: int, ts: int, pad: str) -> bytes:
    """A tick's JSON as the bare clients send it: the bytes polyport's encoder makes."""
    return orjson.dumps({"run": run, "p": p, "seq": seq, "ts": ts, "pad": pad})


class Paced(BaseModel):
    """What one publisher did: published, failed, when, how late, and its calls' latency."""

    published: int
    errors: int
    error: str | None = None  # the first failure, in one line
    #: The seqs whose publish call failed, as inclusive ranges: no receiver owes them.
    failed: list[list[int]] = []
    #: The seqs not sent at all, the schedule's end and its grace having passed.
    unsent: list[list[int]] = []
    first_ns: int
    last_ns: int
    #: How far the pacer fell behind its schedule at worst, in ms (0: it kept the pace).
    behind_ms: float
    #: Time from the publish call to its return (acknowledged), in µs.
    call_p50_us: float
    call_p99_us: float
    #: Ticks acknowledged that were sent at or after ``measure_from_ns``: the measured ones.
    measured: int = 0


async def pace(
    send: Callable[[int, int], Awaitable[object]],
    *,
    first: int,
    count: int,
    rate: float,
    start_ns: int,
    in_flight: int = IN_FLIGHT,
    grace: float = GRACE,
    measure_from_ns: int = 0,
) -> Paced:
    """Call ``send(seq, ts)`` for seq ``first``… ``first + count - 1``, ``rate`` per second.

    Tick ``i`` is due ``i / rate`` seconds after ``start_ns``; each due tick
    gets a task of its own (at most ``in_flight`` at once), which reads the
    clock and calls ``send``. Event loop timers tick in milliseconds, so ticks
    leave in small bursts, each stamped with its own send time. Ticks not sent
    ``grace`` seconds after the last one was due are not sent (``unsent``).
    Ticks sent from ``measure_from_ns`` on are the measured ones (the
    receivers tell them by their ``ts``); ``measured`` counts those acknowledged.
    """
    gate = asyncio.Semaphore(in_flight)
    calls = array("q")
    errors: list[str] = []
    failed: list[int] = []
    tasks: set[asyncio.Task[None]] = set()
    first_ns = last_ns = 0
    behind = 0
    measured = 0

    async def one(seq: int) -> None:
        nonlocal first_ns, last_ns, measured
        try:
            ts = time.monotonic_ns()
            if not first_ns:
                first_ns = ts
            last_ns = max(last_ns, ts)
            try:
                await send(seq, ts)
            except Exception as exc:
                failed.append(seq)
                if not errors:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                calls.append(time.monotonic_ns() - ts)
                if ts >= measure_from_ns:
                    measured += 1
        finally:
            gate.release()

    await _sleep_until(start_ns)
    interval = 1e9 / rate
    end_ns = start_ns + int((count - 1) * interval + grace * 1e9)
    unsent: list[int] = []
    for i in range(count):
        due = start_ns + int(i * interval)
        now = time.monotonic_ns()
        if now < due:
            # Never a sleep under the timers' millisecond: that would spin the loop.
            await asyncio.sleep(max(0.001, (due - now) / 1e9))
            now = time.monotonic_ns()
        behind = max(behind, now - due)
        await gate.acquire()
        if time.monotonic_ns() > end_ns:
            gate.release()
            unsent = list(range(first + i, first + count))
            break
        task = asyncio.create_task(one(first + i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)
    ordered = sorted(ns / 1000 for ns in calls)
    return Paced(
        published=len(calls),
        errors=len(failed),
        error=errors[0] if errors else None,
        failed=ranges(failed),
        unsent=ranges(unsent),
        first_ns=first_ns,
        last_ns=last_ns,
        behind_ms=behind / 1e6,
        call_p50_us=percentile(ordered, 0.50),
        call_p99_us=percentile(ordered, 0.99),
        measured=measured,
    )


def ranges(seqs: list[int]) -> list[list[int]]:
    """``seqs`` as sorted inclusive ranges: ``[3, 1, 2, 7]`` → ``[[1, 3], [7, 7]]``."""
    out: list[list[int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


async def _sleep_until(instant_ns: int) -> None:
    now = time.monotonic_ns()
    if now < instant_ns:
        await asyncio.sleep((instant_ns - now) / 1e9)


class Receipts:
    """One receiver's ledger of the ticks of ``publishers`` publishers, seq 0 to ``last``.

    Seq 0 of each publisher is its primer (sent again until every receiver has
    one, so only its first copy counts). Ticks sent (``ts``) from
    :attr:`measured_from` on are the measured ones — those before are the
    warm-up, and none is measured until the lab says when the warm-up ends:
    their latency is kept, cross-node (a publisher other than ``home``, the
    receiver's own node) apart from local.
    """

    def __init__(self, publishers: int, last: int, home: int) -> None:
        self.publishers = publishers
        self.measured_from = 1 << 62
        self.last = last
        self.home = home
        # Per publisher and seq: 0 not yet, 1 received, 2 excused (its publish failed).
        self._seen = [bytearray(last + 1) for _ in range(publishers)]
        self.received = 0
        self.duplicates = 0
        self.excused = 0  # ticks whose publish failed, not owed
        self.unacknowledged = 0  # …of which some arrived all the same (stored, then the error)
        self.unknown = 0  # not a tick of this run's publishers and seqs
        self.missing = publishers * (last + 1)
        self.unprimed = publishers
        self.cross = array("q")
        self.local = array("q")
        self.first_ts = 0  # the earliest publish clock of a measured tick
        self.last_arrival = 0  # the latest arrival of a measured tick
        self.measured_received = 0

    @property
    def primed(self) -> bool:
        return self.unprimed == 0

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def scan(self, data: bytes, arrival: int) -> None:
        """Count every tick in ``data`` (whole JSON documents), arrived at ``arrival``."""
        for match in TICK_FIELDS.finditer(data):
            self.add(int(match[1]), int(match[2]), int(match[3]), arrival)

    def add(self, p: int, seq: int, ts: int, arrival: int) -> None:
        if p >= self.publishers or seq > self.last:
            self.unknown += 1
            return
        seen = self._seen[p]
        self.received += 1
        state = seen[seq]
        if state == 1:
            if seq:  # a primer may be sent again until every receiver has it
                self.duplicates += 1
            return
        seen[seq] = 1
        if state == 2:
            self.unacknowledged += 1
        else:
            self.missing -= 1
            if seq == 0:
                self.unprimed -= 1
        if ts < self.measured_from:
            return
        self.measured_received += 1
        (self.local if p == self.home else self.cross).append(arrival - ts)
        if not self.first_ts or ts < self.first_ts:
            self.first_ts = ts
        self.last_arrival = max(self.last_arrival, arrival)

    def excuse(self, p: int, first: int, last: int) -> None:
        """Owe nothing for seqs ``first``…``last`` of ``p``: their publish calls failed."""
        seen = self._seen[p]
        for seq in range(first, min(last, self.last) + 1):
            self.excused += 1
            if seen[seq]:
                self.unacknowledged += 1
            else:
                seen[seq] = 2
                self.missing -= 1

    def figures(self) -> dict[str, Any]:
        """The ledger as JSON: counts, the window, every measured latency in µs."""
        return {
            "home": self.home,
            "received": self.received,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "excused": self.excused,
            "unacknowledged": self.unacknowledged,
            "unknown": self.unknown,
            "measured_received": self.measured_received,
            "first_ts": self.first_ts,
            "last_arrival": self.last_arrival,
            "cross_us": [ns // 1000 for ns in self.cross],
            "local_us": [ns // 1000 for ns in self.local],
        }
