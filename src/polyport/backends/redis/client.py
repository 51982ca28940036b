"""The Redis driver (redis-py's asyncio client), imported only when a Redis backend is made.

Without the ``redis`` extra, :func:`connect` raises
:class:`~polyport.core.errors.MissingExtra` naming it. :func:`engine_errors`
translates what the driver raises when Redis cannot answer into
:class:`~polyport.core.errors.Unavailable`, the world's fault.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from polyport.core.errors import MissingExtra, Unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Seconds to wait for Redis to connect or answer before a call is Unavailable.
TIMEOUT = 5.0
#: What a client that gets Unavailable is told to wait before trying again.
RETRY_AFTER = 1.0
# Redis answers these (redis-py has no class for them) while it cannot serve:
# running another client's slow script, missing the replicas it was told to need.
_BUSY_REPLIES = ("BUSY", "NOREPLICAS")


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``) that never retries.

    redis-py retries a command whose connection failed; for a script that
    appends, the first attempt may have run, and a second would append the
    events twice. So a failure is reported instead, once.
    """
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "redis":
            raise MissingExtra("redis", "the Redis backend") from exc
        raise
    return Redis.from_url(
        url,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn Redis being unreachable, slow, loading or full into Unavailable."""
    from redis import exceptions as e

    try:
        yield
    except (
        e.ConnectionError,  # unreachable, and LOADING: its data after a restart
        e.TimeoutError,
        e.OutOfMemoryError,  # at maxmemory (the log wants noeviction, so it refuses)
        e.ReadOnlyError,  # a replica, after a failover
        e.TryAgainError,
        e.ClusterDownError,
    ) as exc:
        raise Unavailable(f"{what} is unavailable; try again", retry_after=RETRY_AFTER) from exc
    except e.ResponseError as exc:
        if str(exc).startswith(_BUSY_REPLIES):
            raise Unavailable(f"{what} is unavailable; try again", retry_after=RETRY_AFTER) from exc
        raise
