"""Records in Redis: the :class:`~polyport.core.records.RecordStore` port that every node
pointed at the same Redis and prefix shares.

**Keys**, all under ``{prefix}:rec`` (the hash tag ``{prefix}`` first, so a
Redis Cluster keeps them in one slot, as the scripts that use several need):

* ``:r:{key}`` hash, one per record: ``value`` and ``version``. The record
  key is the end of the name after a fixed beginning, so no two record keys
  give one name, whatever characters they hold (``:``, braces, spaces);
* ``:keys`` sorted set of every record key at score 0, so ``ZRANGEBYLEX``
  walks them in the order of their bytes: UTF-8 bytes, code point order;
* ``:seq`` the counter every write takes its version from. It is never
  deleted, so a key deleted and written again never gets a version twice.

**Atomicity: Lua.** A write or a delete is one script that checks ``expect``
and changes the hash and the key set together; a script runs alone in Redis,
so of two writers racing on one version exactly one wins. A scan is one
script too: the keys of a page and their records are read at one instant.

**Durable** means what Redis acknowledged (see
:mod:`polyport.backends.redis.eventlog` for what each persistence setting
makes of that; Redis must not evict these keys: ``maxmemory-policy
noeviction``). A write whose reply is lost raises
:class:`~polyport.core.errors.Unavailable` although Redis may have run it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyport.backends.redis.client import Script, key_base
from polyport.backends.redis.pipeline import ScriptedClient
from polyport.core.records import ABSENT, Record, check_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

_WHAT = "the record store (Redis)"

# Every script: KEYS[1] the key set ``{prefix}:rec:keys``, ARGV[1] ``{prefix}:rec``.

#: ARGV[2] key. Answers {value, version}, or nil for no record.
_GET = Script("""
local found = redis.call('HMGET', ARGV[1] .. ':r:' .. ARGV[2], 'value', 'version')
if not found[2] then return nil end
return found
""")

#: ARGV[2] key, [3] value, [4] expect ('' for none, '0' for absent, or a version).
#: Answers the new version, or nil when ``expect`` does not hold.
_PUT = Script("""
local record, expect = ARGV[1] .. ':r:' .. ARGV[2], ARGV[4]
if expect ~= '' then
  local version = redis.call('HGET', record, 'version')
  if expect == '0' then
    if version then return nil end
  elseif version ~= expect then
    return nil
  end
end
local version = redis.call('INCR', ARGV[1] .. ':seq')
redis.call('HSET', record, 'value', ARGV[3], 'version', version)
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return version
""")

#: ARGV[2] key, [3] expect ('' for none, or a version). Answers 1 if a record was deleted.
_DELETE = Script("""
local record, expect = ARGV[1] .. ':r:' .. ARGV[2], ARGV[3]
local version = redis.call('HGET', record, 'version')
if not version or (expect ~= '' and version ~= expect) then return 0 end
redis.call('DEL', record)
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
""")

#: ARGV[2] and [3] the ``ZRANGEBYLEX`` bounds, [4] the limit.
#: Answers key, value, version of each record in order, flat.
_SCAN = Script("""
local out = {}
for _, key in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])) do
  local found = redis.call('HMGET', ARGV[1] .. ':r:' .. key, 'value', 'version')
  table.insert(out, key)
  table.insert(out, found[1])
  table.insert(out, found[2])
end
return out
""")

_SCRIPTS = [_GET, _PUT, _DELETE, _SCAN]


def _bytes(text: str) -> bytes:
    # A cursor is any str: a lone surrogate (never in a key) keeps its place in the order.
    return text.encode("utf-8", "surrogatepass")


def lex_range(prefix: str, after: str | None) -> tuple[bytes, bytes]:
    """The ``ZRANGEBYLEX`` bounds of the keys that start with ``prefix``, after ``after``.

    ``(`` is exclusive, ``[`` inclusive, ``-`` and ``+`` the ends; what follows the
    first character is compared as bytes, so ``[``, ``(``, ``-`` and ``+`` in a
    key are ordinary. UTF-8 never holds the byte ``0xff``, so every key under
    ``prefix`` sorts below ``prefix`` followed by it.
    """
    if after is not None and after >= prefix:  # str order is code point order: UTF-8's
        low = b"(" + _bytes(after)
    else:
        low = b"[" + _bytes(prefix) if prefix else b"-"
    high = b"(" + _bytes(prefix) + b"\xff" if prefix else b"+"
    return low, high


class RedisRecordStore:
    """The :class:`~polyport.core.records.RecordStore` kept in Redis, shared by nodes.

    ``redis`` is a URL (the store makes its own client and closes it when its
    last user closes it) or a redis-py asyncio client (left open). Stores with
    the same ``prefix`` on the same Redis are one store; the prefix may be
    shared with the other Redis backends (their keys differ).
    """

    def __init__(
        self, redis: str | Redis = "redis://127.0.0.1:6379/0", *, prefix: str = "polyport"
    ) -> None:
        self._base = key_base(prefix) + ":rec"
        self._keys = self._base + ":keys"
        self._redis = ScriptedClient(redis, _WHAT, _SCRIPTS)
        self._client = self._redis.client
        self._calls = self._redis.calls

    async def open(self) -> None:
        """Load the scripts into Redis (which checks that it answers). Raises Unavailable."""
        await self._redis.open()

    async def close(self) -> None:
        """Close the client this store made, once every user that opened it has closed it."""
        await self._redis.close()

    async def _run(self, script: Script, *args: str | bytes | int) -> Any:
        return await self._calls(script, 1, self._keys, self._base, *args)

    async def get(self, key: str) -> Record | None:
        found = await self._run(_GET, key)
        return None if found is None else Record(key, bytes(found[0]), int(found[1]))

    async def put(self, key: str, value: bytes, *, expect: int | None = None) -> int | None:
        check_key(key)
        if expect is not None and expect < ABSENT:
            return None  # no record is ever at a negative version
        condition = "" if expect is None else str(int(expect))
        version = await self._run(_PUT, key, bytes(value), condition)
        return None if version is None else int(version)

    async def delete(self, key: str, *, expect: int | None = None) -> bool:
        if expect is not None and expect <= ABSENT:
            return False  # no record is at ABSENT
        condition = "" if expect is None else str(int(expect))
        return bool(await self._run(_DELETE, key, condition))

    async def scan(
        self, prefix: str, *, after: str | None = None, limit: int = 500
    ) -> list[Record]:
        if limit <= 0:
            return []
        low, high = lex_range(prefix, after)
        flat = await self._run(_SCAN, low, high, limit)
        return [
            Record(flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]


__all__ = ["RedisRecordStore"]
