"""When to try a failed delivery again: a schedule with jitter, and ``Retry-After``.

The default schedule is Svix's — at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
10 h and 10 h after each failure, eight attempts over about 28 hours — and
each delay is stretched or shrunk at random by up to ``jitter`` (20 %), so
deliveries that failed together (a receiver's outage) do not all come back in
the same second. A receiver's ``Retry-After`` (seconds or an HTTP date) is a
floor: the next attempt is never earlier than it asks, up to a cap.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime


class RetryPolicy:
    """The delays of ``schedule``: entry *n* waits before attempt *n + 1* of a round."""

    def __init__(
        self, schedule: Sequence[float], *, jitter: float = 0.2, max_retry_after: float = 86400.0
    ) -> None:
        self.schedule = tuple(schedule)
        self.jitter = jitter
        self.max_retry_after = max_retry_after

    @property
    def attempts(self) -> int:
        """Attempts in one round (the first included)."""
        return len(self.schedule)

    def first_delay(self) -> float:
        return self.schedule[0]

    def next_delay(self, made: int, retry_after: float | None = None) -> float | None:
        """Seconds before the next attempt after ``made`` failed ones; None: give up."""
        if made >= len(self.schedule):
            return None
        delay = self.schedule[made]
        if delay > 0 and self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def parse_retry_after(value: bytes | None, now: float | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(min(int(text), 10**9))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
