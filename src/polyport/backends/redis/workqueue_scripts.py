"""The Lua scripts of the Redis work queue: each change of state is one atomic script.

Every script is called with ``KEYS[1]`` the generations hash ``{prefix}:wq:gens``
(so a Redis Cluster routes it to the slot every key of the queues shares) and
``ARGV[1]`` the key base ``{prefix}``; the other keys are named from it.

Keys under ``{prefix}:wq``:

* ``:seq`` the counter that gives every enqueued item its ``seq``;
* ``:gens`` hash, queue name → its generation (absent: 0). :meth:`drop`
  starts a new one, so a dropped queue's keys are out of reach at once and
  deleted afterwards, a batch per call, from the ``:dropped`` list of their
  names;
* per queue and generation, under ``Q = :q:{length}:{name}:{generation}`` (the
  name's length in bytes before it, so no two names give one key, whatever
  characters they hold):

  * ``Q:i:{key}`` hash, one per item: ``payload``, ``status``, ``attempts``,
    ``seq``, ``created``, ``due``, and while set ``lease``, ``claimed``,
    ``finished``, ``error``, ``result``, ``owner``, ``group``. Times are kept as
    the strings the caller sent (Python's ``repr``, which reads back to the same
    float);
  * ``Q:due`` sorted set of the pending and running items a claim may take, by
    ``due``, member ``{seq as 16 digits}{key}``: those without a group, and the
    head of each ordering group. Claims and ``next_due`` read its lowest
    scores, and equal times go in seq order;
  * ``Q:g:{length}:{group}`` sorted set of a group's pending and running keys
    by ``seq`` (the group's name written as the queue's is): its first is the
    head, the one member of the group in ``Q:due``. A script that takes an item
    out of the group (ack, dead letter) puts the next head in ``Q:due``; one
    that brings it back (a redrive) puts it there if it is the head now, and
    takes out the head it displaced. Scripts that keep an item in the live
    states (claim, retry, release, extend) change its ``Q:due`` score only if
    it is there (``ZADD XX``);
  * ``Q:pending``, ``Q:running``, ``Q:done``, ``Q:dead`` sorted sets of keys by
    ``seq``: listings, newest first, and counts (``ZCARD``);
  * ``Q:finished`` sorted set of done and dead keys by finish time: purges.

Scripts check before they write: Redis does not roll a script back when a
command in it fails.

Scripts answer items as one string (redis-py parses replies in Python unless
hiredis is installed, and a dozen replies per item cost more than the claim
itself): per item, a line ``{queue number} {key length} {payload length}
{status} {attempts} {seq} {created} {due} {lease} {claimed} {finished} {error
length} {result length} {owner length} {group length}``, ``-`` for what is
unset, then the key, the payload, the error, the result, the owner and the
group.
"""

from __future__ import annotations

_PRELUDE = """
local wq = ARGV[1] .. ':wq'
local STATUSES = {'pending', 'running', 'done', 'dead'}
local FIELDS = {'payload', 'status', 'attempts', 'seq', 'created', 'due', 'lease', 'claimed',
  'finished', 'error', 'result', 'owner', 'group'}
local function queue_keys(name, gen)
  return wq .. ':q:' .. #name .. ':' .. name .. ':' .. (gen or '0')
end
local gens = {}
local function queue_of(name)
  local q = gens[name]
  if not q then
    q = queue_keys(name, redis.call('HGET', KEYS[1], name))
    gens[name] = q
  end
  return q
end
local function member(seq, key) return string.format('%016d', tonumber(seq)) .. key end
local function group_of(q, group) return q .. ':g:' .. #group .. ':' .. group end
-- An item as the caller reads it (see the module's docstring), or nil for none.
local function packed(q, key, number)
  local f = redis.call('HMGET', q .. ':i:' .. key, unpack(FIELDS))
  if not f[2] then return nil end
  local error, result, owner, group = f[10], f[11], f[12], f[13]
  return table.concat({number, #key, #f[1], f[2], f[3], f[4], f[5], f[6], f[7] or '-', f[8] or '-',
    f[9] or '-', error and #error or '-', result and #result or '-', owner and #owner or '-',
    group and #group or '-'}, ' ')
    .. '\\n' .. key .. f[1] .. (error or '') .. (result or '') .. (owner or '') .. (group or '')
end
"""

#: ARGV[2] queue, [3] key, [4] payload, [5] now, [6] due, [7] group (``""`` for none).
#: Answers 1, or 0 for a known key. An item of a group is claimable (in ``Q:due``)
#: only if the group has nothing else unfinished: its seq is the largest yet.
ENQUEUE = (
    _PRELUDE
    + """
local name, key, due, group = ARGV[2], ARGV[3], ARGV[6], ARGV[7]
local q = queue_of(name)
local item = q .. ':i:' .. key
if redis.call('EXISTS', item) == 1 then return 0 end
local seq = redis.call('INCR', wq .. ':seq')
redis.call('HSET', item, 'payload', ARGV[4], 'status', 'pending', 'attempts', 0, 'seq', seq,
  'created', ARGV[5], 'due', due)
local head = true
if group ~= '' then
  redis.call('HSET', item, 'group', group)
  local g = group_of(q, group)
  redis.call('ZADD', g, seq, key)
  head = redis.call('ZCARD', g) == 1
end
if head then redis.call('ZADD', q .. ':due', due, member(seq, key)) end
redis.call('ZADD', q .. ':pending', seq, key)
return 1
"""
)

#: ARGV[2] now, [3] the lease's end, [4] limit, [5] a random salt for the tokens,
#: [6] ``1`` if [7] is the claimer's name (the owner), ``0`` for none, then the
#: queues. Answers the claimed items, each with its queue's number.
#: Each queue gives its ``limit`` earliest candidates (its sorted set's lowest
#: scores, O(log n + limit)); the earliest ``limit`` of them all are claimed. Only
#: items a claim may take are in the set (the head of a group, not the items
#: behind it), so each candidate is claimed, and at most one of a group.
CLAIM = (
    _PRELUDE
    + """
local now, ends, limit, salt = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local owner = ARGV[6] == '1' and ARGV[7]
local candidates = {}
for i = 8, #ARGV do
  local q = queue_of(ARGV[i])
  local due = redis.call('ZRANGE', q .. ':due', '-inf', now, 'BYSCORE', 'LIMIT', 0, limit,
    'WITHSCORES')
  for j = 1, #due, 2 do
    local m = due[j]  -- {due, seq, member, queue number, queue keys}
    candidates[#candidates + 1] = {tonumber(due[j + 1]), tonumber(string.sub(m, 1, 16)), m,
      i - 7, q}
  end
end
-- Earliest due first; equal times by seq (the member's first 16 characters).
table.sort(candidates, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for n = 1, math.min(limit, #candidates) do
  local c = candidates[n]
  local seq, q, key = c[2], c[5], string.sub(c[3], 17)
  local item = q .. ':i:' .. key
  if redis.call('HGET', item, 'status') == 'pending' then
    redis.call('ZREM', q .. ':pending', key)
    redis.call('ZADD', q .. ':running', seq, key)
  end  -- else running, its lease ran out: it stays running, under a new lease
  redis.call('HINCRBY', item, 'attempts', 1)
  redis.call('HSET', item, 'status', 'running', 'lease', salt .. '.' .. n, 'claimed', now,
    'due', ends)
  if owner then redis.call('HSET', item, 'owner', owner) else redis.call('HDEL', item, 'owner') end
  redis.call('ZADD', q .. ':due', ends, c[3])
  out[n] = packed(q, key, c[4])
end
return table.concat(out)
"""
)

_HELD = """
-- The item's keys, seq and group if it is running under this token, else nil.
local function held(name, key, token)
  local q = queue_of(name)
  local item = q .. ':i:' .. key
  local found = redis.call('HMGET', item, 'status', 'lease', 'seq', 'group')
  if found[1] ~= 'running' or found[2] ~= token then return nil end
  return q, item, found[3], found[4]
end
"""

#: ARGV[2] the new end of the leases, then per item: queue, key, token. Answers
#: how many were still held under their token.
EXTEND = (
    _PRELUDE
    + _HELD
    + """
local ends, extended = ARGV[2], 0
for i = 3, #ARGV, 3 do
  local key = ARGV[i + 1]
  local q, item, seq = held(ARGV[i], key, ARGV[i + 2])
  if q then
    redis.call('HSET', item, 'due', ends)
    -- XX: an item of a group behind a redriven one is not claimable, lease or not
    redis.call('ZADD', q .. ':due', 'XX', ends, member(seq, key))
    extended = extended + 1
  end
end
return extended
"""
)

#: ARGV[2] queue, [3] key, [4] token, [5] outcome (``ack``, ``retry``,
#: ``release``, ``dead``), [6] a time (``due`` for retry, else now), [7] the
#: result (ack, absent for none) or the error (retry, dead). Answers 1, or 0 if
#: the item is not running under that token. Every outcome forgets the lease and
#: its owner; ack forgets an earlier attempt's error too. An ack or a dead letter
#: takes the item out of its group, whose next item (if any) is then its head.
SETTLE = (
    _PRELUDE
    + _HELD
    + """
local key, outcome, time, text = ARGV[3], ARGV[5], ARGV[6], ARGV[7]
local q, item, seq, group = held(ARGV[2], key, ARGV[4])
if not q then return 0 end
redis.call('HDEL', item, 'lease', 'owner')
redis.call('ZREM', q .. ':running', key)
if outcome == 'ack' or outcome == 'dead' then
  local status = outcome == 'ack' and 'done' or 'dead'
  redis.call('HSET', item, 'status', status, 'finished', time)
  if outcome == 'dead' then
    redis.call('HSET', item, 'error', text)
  else
    redis.call('HDEL', item, 'error')
    if text then redis.call('HSET', item, 'result', text) end
  end
  redis.call('ZREM', q .. ':due', member(seq, key))
  redis.call('ZADD', q .. ':' .. status, seq, key)
  redis.call('ZADD', q .. ':finished', time, key)
  if group then
    local g = group_of(q, group)
    redis.call('ZREM', g, key)
    local head = redis.call('ZRANGE', g, 0, 0, 'WITHSCORES')
    if head[1] then  -- NX: it was the head already if the item was one running out of turn
      redis.call('ZADD', q .. ':due', 'NX', redis.call('HGET', q .. ':i:' .. head[1], 'due'),
        member(head[2], head[1]))
    end
  end
else
  redis.call('HSET', item, 'status', 'pending', 'due', time)
  if outcome == 'retry' then
    redis.call('HSET', item, 'error', text)
  elseif tonumber(redis.call('HINCRBY', item, 'attempts', -1)) < 0 then
    redis.call('HSET', item, 'attempts', 0)  -- released: the claim does not count
  end
  redis.call('ZADD', q .. ':due', 'XX', time, member(seq, key))  -- if claimable (see EXTEND)
  redis.call('ZADD', q .. ':pending', seq, key)
end
return 1
"""
)

#: ARGV[2] queue, [3] key, [4] now, [5] ``1`` to replay a done item, else ``0``.
#: Answers 1, or 0 if the item is none of dead, pending or (replayed) done. A dead
#: or done one starts a fresh round: no attempts, finish time or result; of a group,
#: it is back in it with its seq, claimable only if that makes it the head (and
#: then the head it displaced is not).
REDRIVE = (
    _PRELUDE
    + """
local key, now, replay = ARGV[3], ARGV[4], ARGV[5] == '1'
local q = queue_of(ARGV[2])
local item = q .. ':i:' .. key
local found = redis.call('HMGET', item, 'status', 'seq', 'group')
local status, seq, group = found[1], found[2], found[3]
local due = q .. ':due'
if status == 'dead' or (replay and status == 'done') then
  redis.call('HSET', item, 'status', 'pending', 'attempts', 0, 'due', now)
  redis.call('HDEL', item, 'finished', 'result')
  redis.call('ZREM', q .. ':' .. status, key)
  redis.call('ZREM', q .. ':finished', key)
  redis.call('ZADD', q .. ':pending', seq, key)
  if group then
    local g = group_of(q, group)
    redis.call('ZADD', g, seq, key)
    local first = redis.call('ZRANGE', g, 0, 1, 'WITHSCORES')
    if first[1] == key then
      redis.call('ZADD', due, now, member(seq, key))
      if first[3] then redis.call('ZREM', due, member(first[4], first[3])) end
    end
  else
    redis.call('ZADD', due, now, member(seq, key))
  end
  return 1
elseif status ~= 'pending' then
  return 0
end
redis.call('HSET', item, 'due', now)
redis.call('ZADD', due, 'XX', now, member(seq, key))  -- if claimable (see EXTEND)
return 1
"""
)

#: ARGV[2] queue, [3] key. Answers the item, or nil.
GET = (
    _PRELUDE
    + """
return packed(queue_of(ARGV[2]), ARGV[3], 1) or false
"""
)

#: ARGV[2] queue, [3] status (``""`` for all), [4] before (``""`` for none),
#: [5] limit. Answers items, newest first: each status's sorted set gives its
#: ``limit`` newest before the cursor, and the newest ``limit`` of them are read.
ITEMS = (
    _PRELUDE
    + """
local q, limit = queue_of(ARGV[2]), tonumber(ARGV[5])
local top = ARGV[4] == '' and '+inf' or '(' .. ARGV[4]
local statuses = ARGV[3] == '' and STATUSES or {ARGV[3]}
local found = {}
for _, status in ipairs(statuses) do
  local page = redis.call('ZRANGE', q .. ':' .. status, top, '-inf', 'BYSCORE', 'REV', 'LIMIT',
    0, limit, 'WITHSCORES')
  for j = 1, #page, 2 do found[#found + 1] = {tonumber(page[j + 1]), page[j]} end
end
table.sort(found, function(a, b) return a[1] > b[1] end)
local out = {}
for n = 1, math.min(limit, #found) do out[n] = packed(q, found[n][2], 1) end
return table.concat(out)
"""
)

#: ARGV[2] queue. Answers how many items are pending, running, done, dead.
COUNTS = (
    _PRELUDE
    + """
local q, out = queue_of(ARGV[2]), {}
for i, status in ipairs(STATUSES) do out[i] = redis.call('ZCARD', q .. ':' .. status) end
return out
"""
)

#: ARGV[2...] queues. Answers the earliest due time among them, or nil.
NEXT_DUE = (
    _PRELUDE
    + """
local best, text = nil, false
for i = 2, #ARGV do
  local first = redis.call('ZRANGE', queue_of(ARGV[i]) .. ':due', 0, 0, 'WITHSCORES')
  if first[2] and (best == nil or tonumber(first[2]) < best) then
    best, text = tonumber(first[2]), first[2]
  end
end
return text
"""
)

#: ARGV[2] queue, [3] before (a time), [4] batch. Forgets up to ``batch`` done
#: and dead items that finished before it; answers how many.
PURGE = (
    _PRELUDE
    + """
local q = queue_of(ARGV[2])
local gone = redis.call('ZRANGE', q .. ':finished', '-inf', '(' .. ARGV[3], 'BYSCORE', 'LIMIT',
  0, tonumber(ARGV[4]))
for _, key in ipairs(gone) do
  redis.call('DEL', q .. ':i:' .. key)
  redis.call('ZREM', q .. ':done', key)
  redis.call('ZREM', q .. ':dead', key)
end
if #gone > 0 then redis.call('ZREMRANGEBYRANK', q .. ':finished', 0, #gone - 1) end
return #gone
"""
)

#: ARGV[2] queue. Starts the queue's next generation, leaving the old one's keys
#: to :data:`CLEAN`; answers how many items it had.
DROP = (
    _PRELUDE
    + """
local name = ARGV[2]
local q, had = queue_of(name), 0
for _, status in ipairs(STATUSES) do had = had + redis.call('ZCARD', q .. ':' .. status) end
if had == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], name, 1)
redis.call('RPUSH', wq .. ':dropped', q)
return had
"""
)

#: ARGV[2] batch. Deletes up to ``batch`` items of the oldest dropped generation
#: (and the generation's last keys once it is empty); answers 1, or 0 when no
#: dropped generation is left.
CLEAN = (
    _PRELUDE
    + """
local dropped = wq .. ':dropped'
local q = redis.call('LINDEX', dropped, 0)
if not q then return 0 end
local left = tonumber(ARGV[2])
for _, status in ipairs(STATUSES) do
  local set = q .. ':' .. status
  local keys = redis.call('ZRANGE', set, 0, left - 1, 'WITHSCORES')
  for j = 1, #keys, 2 do
    local key = keys[j]
    local group = redis.call('HGET', q .. ':i:' .. key, 'group')
    if group then redis.call('DEL', group_of(q, group)) end
    redis.call('DEL', q .. ':i:' .. key)
    redis.call('ZREM', q .. ':due', member(keys[j + 1], key))
    redis.call('ZREM', q .. ':finished', key)
  end
  if #keys > 0 then redis.call('ZREMRANGEBYRANK', set, 0, #keys / 2 - 1) end
  left = left - #keys / 2
  if left == 0 then return 1 end
end
-- Every item is gone, and with them the sorted sets (Redis deletes an empty one).
redis.call('LREM', dropped, 1, q)
return 1
"""
)
