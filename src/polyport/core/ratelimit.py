"""A token bucket per principal.

Each key (a principal's subject, or ``anon:{peer}`` for anonymous callers)
refills at ``rate`` tokens a second up to ``burst``. Buckets that are full
again are forgotten, so memory follows the number of *active* callers.
"""

from __future__ import annotations

import time

from polyport.core.config import RateLimitConfig
from polyport.core.errors import RateLimited

_SWEEP_EVERY = 4096


class RateLimiter:
    __slots__ = ("_buckets", "_calls", "burst", "enabled", "rate")

    def __init__(self, config: RateLimitConfig) -> None:
        self.enabled = config.enabled
        self.rate = config.rate
        self.burst = float(config.burst)
        self._buckets: dict[str, list[float]] = {}  # key → [tokens, last refill time]
        self._calls = 0

    def acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens for ``key`` or raise :class:`RateLimited` with ``retry_after``."""
        if not self.enabled:
            return
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        if bucket[0] < cost:
            retry_after = (cost - bucket[0]) / self.rate
            raise RateLimited(
                f"rate limit of {self.rate:g}/s exceeded; retry in {retry_after:.2f} s",
                retry_after=retry_after,
            )
        bucket[0] -= cost
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
