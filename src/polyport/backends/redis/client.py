"""The Redis driver (redis-py's asyncio client), imported only when a Redis backend is made.

Without the ``redis`` extra, :func:`connect` raises
:class:`~polyport.core.errors.MissingExtra` naming it. :func:`engine_errors`
translates what the driver raises when Redis cannot answer into
:class:`~polyport.core.errors.Unavailable`, the world's fault. A :class:`Script`
is one of the backends' Lua scripts, called by its SHA1; :func:`key_base` the
hash tag every key of a backend begins with.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from polyport.core.errors import ConfigError, MissingExtra, Unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: Seconds to wait for Redis to connect or answer before a call is Unavailable.
TIMEOUT = 5.0
#: What a client that gets Unavailable is told to wait before trying again.
RETRY_AFTER = 1.0
# Redis answers these (redis-py has no class for them) while it cannot serve:
# running another client's slow script, missing the replicas it was told to need.
_BUSY_REPLIES = ("BUSY", "NOREPLICAS")
#: Connections one client keeps to Redis at most; more callers wait for one.
MAX_CONNECTIONS = 64
_PREFIX = re.compile(r"^[A-Za-z0-9_\-.:~@=/]{1,200}$")


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``) that never retries.

    redis-py retries a command whose connection failed; for a script that
    appends, the first attempt may have run, and a second would append the
    events twice. So a failure is reported instead, once.

    The pool holds at most :data:`MAX_CONNECTIONS` and makes a caller beyond
    them wait for a free one (up to :data:`TIMEOUT`): redis-py's default pool
    raises at once instead, which a burst of subscribers catching up would
    have turned into ``503`` from a Redis that was fine.
    """
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "redis":
            raise MissingExtra("redis", "the Redis backend") from exc
        raise
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=TIMEOUT,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return Redis.from_pool(pool)


def key_base(prefix: str) -> str:
    """``{prefix}``: every key of a backend begins with it, a hash tag, so a Redis Cluster
    keeps them all in one slot (where one script may use them together).

    Raises ConfigError for anything but 1-200 letters, digits and ``_-.:~@=/``:
    a brace would change the tag.
    """
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"invalid Redis key prefix {prefix[:80]!r}: letters, digits and _-.:~@=/")
    return "{" + prefix + "}"


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


class Script:
    """A Lua script, called by its SHA1 (``EVALSHA``) and sent again when Redis forgot it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Redis, numkeys: int, *keys_and_args: str | bytes | int) -> Any:
        """Run the script. A Redis that restarted (or flushed its scripts) refuses the
        SHA1 without running anything, so loading the source and calling again is safe."""
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, numkeys, *keys_and_args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, numkeys, *keys_and_args)
